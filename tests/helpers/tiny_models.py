"""Tiny random-weight Hugging Face causal LMs, one per supported architecture, for tests.

``tiny_model(arch)`` builds a seeded model from a small config (hidden 32-64, 2-3 layers, vocab
128), in eval mode, with eager attention unless ``attn_implementation`` says otherwise. Building
one takes a few milliseconds; nothing is downloaded.
"""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 128

# Shared small sizes; each builder overrides or adds what its architecture needs.
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)


def _llama():
    return tf.LlamaForCausalLM, tf.LlamaConfig(**_COMMON)


def _mistral():
    # A sliding window shorter than the test inputs (9 tokens), so the sliding mask matters.
    return tf.MistralForCausalLM, tf.MistralConfig(**_COMMON, sliding_window=4)


def _qwen2():
    return tf.Qwen2ForCausalLM, tf.Qwen2Config(**_COMMON)


def _qwen3():
    return tf.Qwen3ForCausalLM, tf.Qwen3Config(**_COMMON, head_dim=8)


def _phi3():
    return tf.Phi3ForCausalLM, tf.Phi3Config(**_COMMON)


def _gemma2():
    # final_logit_softcapping small enough that the cap actually bends the logits.
    return tf.Gemma2ForCausalLM, tf.Gemma2Config(
        **{**_COMMON, "num_hidden_layers": 3},
        head_dim=8,
        sliding_window=4,
        final_logit_softcapping=1.0,
        attn_logit_softcapping=5.0,
        query_pre_attn_scalar=8,
    )


def _gemma3_text_config():
    return tf.Gemma3TextConfig(
        **_COMMON,
        head_dim=8,
        sliding_window=4,
        query_pre_attn_scalar=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    )


def _gemma3():
    return tf.Gemma3ForCausalLM, _gemma3_text_config()


def _gemma3_multimodal():
    # model_type "gemma3": the image-text model; its decoder is model.language_model. Text-only
    # inputs never reach the (one-layer) vision tower.
    vision = tf.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
    )
    return tf.Gemma3ForConditionalGeneration, tf.Gemma3Config(
        text_config=_gemma3_text_config(),
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
        image_token_index=VOCAB - 1,
    )


def _gpt2():
    return tf.GPT2LMHeadModel, tf.GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=3,
        n_head=4,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def _gpt_neox(parallel: bool):
    return tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=64,
        rotary_pct=0.5,
        use_parallel_residual=parallel,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def _mixtral():
    return tf.MixtralForCausalLM, tf.MixtralConfig(
        **_COMMON, num_local_experts=4, num_experts_per_tok=2
    )


def _olmoe():
    return tf.OlmoeForCausalLM, tf.OlmoeConfig(**_COMMON, num_experts=4, num_experts_per_tok=2)


def _qwen2_moe():
    # Layer 1 is a dense MLP (mlp_only_layers), layers 0 and 2 are sparse with a shared expert.
    return tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig(
        **_COMMON,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
        decoder_sparse_step=1,
        mlp_only_layers=[1],
    )


def _qwen3_moe():
    return tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig(
        **_COMMON,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        decoder_sparse_step=1,
        mlp_only_layers=[1],
    )


_BUILDERS = {
    "llama": _llama,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "phi3": _phi3,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "gemma3_multimodal": _gemma3_multimodal,
    "gpt2": _gpt2,
    "gpt_neox": lambda: _gpt_neox(parallel=True),
    "gpt_neox_sequential": lambda: _gpt_neox(parallel=False),
    "mixtral": _mixtral,
    "olmoe": _olmoe,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
}

TINY_ARCHS: list[str] = list(_BUILDERS)


def tiny_config(arch: str):
    """The (model class, config) pair for ``arch``, one of :data:`TINY_ARCHS`."""
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny arch {arch!r}; choose from {TINY_ARCHS}")
    return _BUILDERS[arch]()


def tiny_model(
    arch: str,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "eager",
    vocab_size: int | None = None,
    max_positions: int | None = None,
) -> torch.nn.Module:
    """A seeded random-weight model of architecture ``arch`` in eval mode.

    vocab_size: override the vocabulary (e.g. ``len(tiny_tokenizer())`` for scoring tests).
    max_positions: override the position limit (default 64), for long prompts.
    """
    cls, config = tiny_config(arch)
    if vocab_size is not None:
        getattr(config, "text_config", config).vocab_size = vocab_size
    for field in ("max_position_embeddings", "n_positions") if max_positions else ():
        if hasattr(config, field):
            setattr(config, field, max_positions)
    config._attn_implementation = attn_implementation
    for sub in ("text_config", "vision_config"):
        if hasattr(config, sub):
            getattr(config, sub)._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = cls(config)
    # Random init leaves norm weights at their defaults (ones, or zeros for Gemma's 1 + w);
    # perturb every parameter a little so that norms and biases are exercised too.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.to(dtype).eval()

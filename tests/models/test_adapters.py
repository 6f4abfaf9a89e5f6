"""The sublayer forward loop against Hugging Face, for every supported architecture family.

Every architecture in ``tests/helpers/tiny_models.py`` is checked three ways:

* all players on: ``SublayerModel(ids)`` equals ``hf_model(ids).logits``;
* players off: equals an *independent* reference, the plain HF forward with forward hooks that
  zero the output of the last module of each removed residual branch (so ``h + f(...)`` becomes
  ``h + 0``; for parallel-residual NeoX, ``mlp + attn + x`` loses the zeroed term);
* naming, mask validation and unsupported architectures.

Tolerances. In fp32 we assert *bit-identical* results, stronger than the 1e-5 the spec asks for:
the loop runs exactly the same kernels on the same inputs in the same order as HF, and
``x + 0 == x`` exactly, so any difference at all means a different computation (a wrong mask, a
missed scaling, a reordered sum). The reference runs with ``use_cache=False``: with a KV cache
GPT-2 copies keys and values into a cache buffer, which changes the matmul's memory layout and
hence its rounding (about 3e-7 in fp32); the default cached call is checked with atol 1e-5.
The same argument holds in bf16, and there too the results are bit-identical (tolerance 0).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

import layerfast.models as lm
from layerfast.errors import UsageError
from tests.helpers.tiny_models import TINY_ARCHS, VOCAB, tiny_config, tiny_model

FP32_ATOL = 1e-5
# bf16 tolerance: 0. The loop and HF run the same bf16 kernels on the same inputs in the same
# order, so the logits are bit-identical (observed for every tiny architecture). Any looser
# tolerance would have to be about one bf16 rounding step of an O(1) logit (2**-7..2**-5), which
# is the size of the errors a subtly wrong computation (e.g. a norm in the wrong dtype) produces,
# so a tolerance would hide exactly the bugs this test is for.
BF16_ATOL = 0.0

# Where an architecture's blocks live and which module's output is each residual branch's last
# step (hook it to return zeros to remove the branch). Written from the HF source independently
# of the adapters. Gemma's post-norms belong to the branch; MoE blocks are the 'mlp' player.
BRANCHES = {
    "llama": ("model.layers", "self_attn", "mlp"),
    "mistral": ("model.layers", "self_attn", "mlp"),
    "qwen2": ("model.layers", "self_attn", "mlp"),
    "qwen3": ("model.layers", "self_attn", "mlp"),
    "phi3": ("model.layers", "self_attn", "mlp"),
    "gemma2": ("model.layers", "post_attention_layernorm", "post_feedforward_layernorm"),
    "gemma3": ("model.layers", "post_attention_layernorm", "post_feedforward_layernorm"),
    "gemma3_multimodal": (
        "model.language_model.layers",
        "post_attention_layernorm",
        "post_feedforward_layernorm",
    ),
    "gpt2": ("transformer.h", "attn", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp"),
    "gpt_neox_sequential": ("gpt_neox.layers", "attention", "mlp"),
    "mixtral": ("model.layers", "self_attn", "mlp"),
    "olmoe": ("model.layers", "self_attn", "mlp"),
    "qwen2_moe": ("model.layers", "self_attn", "mlp"),
    "qwen3_moe": ("model.layers", "self_attn", "mlp"),
}
assert set(BRANCHES) == set(TINY_ARCHS)

IMPLS = ["eager", "sdpa"]
# (arch, attention implementation) pairs; Gemma 2 has no SDPA path in transformers (soft-capping).
ARCH_IMPLS = [
    (arch, impl)
    for arch in TINY_ARCHS
    for impl in IMPLS
    if impl == "eager" or tiny_config(arch)[0]._supports_sdpa
]
_MODELS: dict = {}


def get_model(arch: str, dtype=torch.float32, impl: str = "eager"):
    """(hf_model, SublayerModel), built once per session; tests must not modify them."""
    key = (arch, dtype, impl)
    if key not in _MODELS:
        hf = tiny_model(arch, dtype=dtype, attn_implementation=impl)
        _MODELS[key] = (hf, lm.load(hf))
    return _MODELS[key]


def batch(seed: int = 0):
    """input_ids [3, 9] with right padding: row 1 has 3 padding tokens, row 2 has 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 8:] = 0
    ids[mask == 0] = 0  # the pad token
    return ids, mask


def hf_logits(arch, hf, ids, mask, off=(), use_cache=False):
    """Plain HF logits with the branches named in ``off`` (e.g. 'attn0', 'mlp2') zeroed by hooks."""
    path, attn_name, mlp_name = BRANCHES[arch]
    layers = hf.get_submodule(path)

    def zero(module, args, output):
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]),) + output[1:]
        return torch.zeros_like(output)

    handles = []
    for player in off:
        kind, block = player.rstrip("0123456789"), int(player.lstrip("atnmlp"))
        module = layers[block].get_submodule(attn_name if kind == "attn" else mlp_name)
        handles.append(module.register_forward_hook(zero))
    try:
        with torch.no_grad():
            return hf(ids, attention_mask=mask, use_cache=use_cache).logits
    finally:
        for h in handles:
            h.remove()


def run(sm, ids, mask, keep=None):
    with torch.no_grad():
        return sm(ids, keep=keep, attention_mask=mask)


def real(logits, mask):
    """Logits at the real (non-padding) positions only: [n_real, V]."""
    return logits[mask.bool()]


def keep_without(players, off):
    return [p not in off for p in players]


def off_sets(n_blocks: int) -> dict[str, tuple[str, ...]]:
    last = n_blocks - 1
    rng = np.random.default_rng(1)
    players = [f"{k}{i}" for i in range(n_blocks) for k in ("attn", "mlp")]
    random_off = tuple(sorted(rng.choice(players, size=3, replace=False)))
    return {
        "attn0": ("attn0",),
        "mlp_mid": (f"mlp{n_blocks // 2}",),
        "last": (f"mlp{last}",),
        "attn_last": (f"attn{last}",),
        "random3": random_off,
        "block0": ("attn0", "mlp0"),
        "all": tuple(players),
    }


OFF_NAMES = list(off_sets(3))
OFF_CASES = [(arch, impl, which) for arch, impl in ARCH_IMPLS for which in OFF_NAMES]
_FULL: dict = {}


def full_logits(arch, impl, sm, ids, mask):
    """Our all-on logits for (arch, impl, batch), computed once."""
    key = (arch, impl, ids.numpy().tobytes())
    if key not in _FULL:
        _FULL[key] = run(sm, ids, mask)
    return _FULL[key]


# --- all players on -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch,impl", ARCH_IMPLS)
def test_all_on_matches_hf_exactly(arch, impl):
    hf, sm = get_model(arch, impl=impl)
    ids, mask = batch()
    ours = run(sm, ids, mask)
    assert ours.shape == (3, 9, hf.config.get_text_config().vocab_size)
    ref = hf_logits(arch, hf, ids, mask)
    # Bit-identical (see the module docstring); a fortiori within FP32_ATOL.
    assert torch.equal(real(ours, mask), real(ref, mask)), (
        f"max diff {(real(ours, mask) - real(ref, mask)).abs().max().item():.3g}"
    )
    # The default HF call (KV cache on) differs only by rounding.
    default = hf_logits(arch, hf, ids, mask, use_cache=None)
    torch.testing.assert_close(real(ours, mask), real(default, mask), atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("arch,impl", ARCH_IMPLS)
def test_left_padding_matches_hf(arch, impl):
    """Left padding too (positions as HF computes them: from 0 at the first, padded, token)."""
    hf, sm = get_model(arch, impl=impl)
    ids, mask = batch()
    ids, mask = ids.flip(1), mask.flip(1)
    for off in ((), ("mlp0", "attn2")):
        ours = run(sm, ids, mask, keep_without(sm.players, off))
        assert torch.equal(real(ours, mask), real(hf_logits(arch, hf, ids, mask, off=off), mask))


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_hidden_states_match_hf_last_hidden_state(arch):
    hf, sm = get_model(arch)
    ids, mask = batch(1)
    with torch.no_grad():
        ours = sm.hidden_states(ids, attention_mask=mask)
        ref = hf(
            ids, attention_mask=mask, use_cache=False, output_hidden_states=True
        ).hidden_states[-1]
    assert torch.equal(real(ours, mask), real(ref, mask))


# --- players off against an independent hook-based reference -----------------------------------
@pytest.mark.parametrize("arch,impl,which", OFF_CASES)
def test_players_off_match_zeroed_branch_reference(arch, which, impl):
    hf, sm = get_model(arch, impl=impl)
    off = off_sets(sm.n_blocks)[which]
    ids, mask = batch(2)
    ours = real(run(sm, ids, mask, keep_without(sm.players, off)), mask)
    ref = real(hf_logits(arch, hf, ids, mask, off=off), mask)
    assert (ours - ref).abs().max().item() <= FP32_ATOL
    assert torch.equal(ours, ref), "expected bit-identical results (same kernels, x + 0 == x)"
    # The removal must actually change something (guards against a hook or mask that is ignored).
    full = real(full_logits(arch, impl, sm, ids, mask), mask)
    assert (ours - full).abs().max().item() > 1e-4


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_state_is_not_mutated_so_prefixes_can_be_shared(arch):
    """Resuming two different suffixes from one saved state gives the two full forwards."""
    _, sm = get_model(arch)
    ids, mask = batch(3)
    with torch.no_grad():
        inputs = sm.prepare(ids, mask)
        state = sm.initial_state(inputs)
        for j in range(3):  # attn0, mlp0, attn1 (a NeoX parallel state mid-block)
            state = sm.step(j, state, inputs, True)
        results = []
        for suffix in ([True, False, True], [False, True, False]):
            s = state
            for j, on in enumerate(suffix, start=3):
                s = sm.step(j, s, inputs, on)
            for j in range(6, sm.n_players):
                s = sm.step(j, s, inputs, True)
            results.append(sm.logits(sm.final_hidden(s)))
    for suffix, got in zip(([True, False, True], [False, True, False]), results, strict=True):
        keep = [True] * 3 + suffix + [True] * (sm.n_players - 6)
        assert torch.equal(got, run(sm, ids, mask, keep))


def test_prepare_keeps_instance_level_forward_hooks():
    """prepare() swaps layer.forward for a recorder; an accelerate hook already there survives."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    calls = []

    class Count(ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            calls.append(1)
            return args, kwargs

    hf = tiny_model("llama")
    for layer in hf.model.layers:
        add_hook_to_module(layer, Count())
    sm = lm.load(hf)
    ids, mask = batch()
    before = hf_logits("llama", hf, ids, mask)
    assert len(calls) == 3
    assert torch.equal(run(sm, ids, mask), before)
    assert torch.equal(hf_logits("llama", hf, ids, mask), before)
    assert len(calls) == 6  # the hooks still run after our forward


# --- the features the tiny configs are meant to exercise ----------------------------------------
@pytest.mark.parametrize("arch", ["mistral", "gemma2", "gemma3"])
def test_sliding_window_matters_for_the_test_inputs(arch):
    """Without the sliding window the logits change, so the exact-match tests see the mask."""
    hf, sm = get_model(arch)
    ids, mask = batch()
    windowed = hf_logits(arch, hf, ids, mask)
    window, hf.config.sliding_window = hf.config.sliding_window, 64
    try:
        unwindowed = hf_logits(arch, hf, ids, mask)
    finally:
        hf.config.sliding_window = window
    assert not torch.allclose(windowed[0, 5:], unwindowed[0, 5:], atol=1e-4)
    assert torch.equal(windowed[0, :4], unwindowed[0, :4])


def test_gemma2_final_logit_softcapping_is_applied():
    hf, sm = get_model("gemma2")
    ids, mask = batch()
    ours = run(sm, ids, mask)
    cap = hf.config.final_logit_softcapping
    assert ours.abs().max().item() <= cap
    raw = sm.adapter.lm_head()(sm.hidden_states(ids, attention_mask=mask))
    assert raw.abs().max().item() > cap  # the cap actually bends these logits


def test_neox_parallel_residual_flag_follows_config():
    assert get_model("gpt_neox")[1].adapter.parallel_residual is True
    assert get_model("gpt_neox_sequential")[1].adapter.parallel_residual is False


def test_moe_blocks_are_the_mlp_players():
    for arch in ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe"):
        _, sm = get_model(arch)
        moe = [sm.adapter.uses_moe(layer) for layer in sm.blocks]
        assert any(moe), arch
    # Qwen-MoE's layer 1 is dense (mlp_only_layers=[1]); it is still the player 'mlp1'.
    for arch in ("qwen2_moe", "qwen3_moe"):
        _, sm = get_model(arch)
        assert [sm.adapter.uses_moe(layer) for layer in sm.blocks] == [True, False, True]
        assert sm.players[3] == "mlp1"


# --- bf16 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_bf16(arch):
    hf, sm = get_model(arch, dtype=torch.bfloat16)
    assert sm.dtype == torch.bfloat16
    ids, mask = batch()
    for off in ((), ("attn0",), ("mlp1", "attn2")):
        ours = real(run(sm, ids, mask, keep_without(sm.players, off)), mask)
        ref = real(hf_logits(arch, hf, ids, mask, off=off), mask)
        assert ours.dtype == torch.bfloat16
        diff = (ours.float() - ref.float()).abs().max().item()
        assert diff <= BF16_ATOL, (off, diff)


# --- naming, validation, unsupported architectures ----------------------------------------------
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_players(arch):
    hf, sm = get_model(arch)
    n = tiny_config(arch)[1].get_text_config().num_hidden_layers
    assert sm.n_blocks == n
    assert sm.players == [f"{k}{i}" for i in range(n) for k in ("attn", "mlp")]
    assert sm.n_players == len(sm.players) == 2 * n
    assert sm.hf_model is hf


def test_keep_mask_forms_agree():
    _, sm = get_model("llama")
    ids, mask = batch()
    keep = [True, False, True, True, False, True]
    expected = run(sm, ids, mask, keep)
    for form in (
        np.array(keep),
        torch.tensor(keep),
        [int(k) for k in keep],
        np.array(keep, dtype=np.int64),
    ):
        assert torch.equal(run(sm, ids, mask, form), expected)
    assert torch.equal(run(sm, ids, mask, [True] * 6), run(sm, ids, mask, None))


@pytest.mark.parametrize("bad", [[True] * 5, [True] * 7, [], [[True] * 6]])
def test_keep_mask_of_wrong_length_raises(bad):
    _, sm = get_model("llama")
    ids, mask = batch()
    with pytest.raises(ValueError, match="length 6"):
        run(sm, ids, mask, bad)


def test_keep_mask_with_non_boolean_values_raises():
    _, sm = get_model("llama")
    ids, mask = batch()
    with pytest.raises(ValueError, match="bool"):
        run(sm, ids, mask, [1, 2, 1, 1, 1, 1])


def test_input_ids_must_be_2d():
    _, sm = get_model("llama")
    with pytest.raises(ValueError, match=r"\[batch, tokens\]"):
        sm(torch.arange(5))


def _assert_names_supported(message: str):
    for model_type in (
        "llama",
        "mistral",
        "qwen2",
        "gemma2",
        "gpt2",
        "gpt_neox",
        "mixtral",
        "olmoe",
    ):
        assert model_type in message


def test_unsupported_hf_architecture_raises():
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        is_decoder=True,
    )
    with pytest.raises(UsageError, match="unsupported architecture 'bert'") as info:
        lm.load(BertLMHeadModel(config))
    _assert_names_supported(str(info.value))


def test_unknown_model_type_raises():
    fake = nn.Linear(2, 2)
    fake.config = types.SimpleNamespace(model_type="unknown_arch")
    with pytest.raises(UsageError, match="unknown_arch") as info:
        lm.load(fake)
    _assert_names_supported(str(info.value))
    assert set(lm.supported_model_types()) >= {"llama", "gemma3_text", "qwen2_moe", "phi3"}


# --- where architecture knowledge lives: the adapters' declarations -----------------------------
@pytest.mark.parametrize("model_type,cls", sorted(lm.registered_adapters().items()))
def test_every_adapter_declares_its_branches_and_output_projections(model_type, cls):
    assert model_type in cls.model_types
    assert len(cls.branch_names) == 2 and all(isinstance(n, str) and n for n in cls.branch_names)
    assert tuple(cls.output_projection_names) == lm.PLAYER_KINDS
    for kind, names in cls.output_projection_names.items():
        assert names and all(isinstance(n, str) and n for n in names), kind
    assert cls.layer_count_fields


def test_every_registered_architecture_has_a_tiny_model():
    tiny_types = {tiny_config(arch)[1].model_type for arch in TINY_ARCHS}
    assert tiny_types == set(lm.supported_model_types())


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_branch_modules_and_output_projections_resolve(arch):
    """Every block's two branch modules are children of the block, each with an output projection
    inside (equivalence with removing the player: tests/models/test_pruning.py)."""
    _, sm = get_model(arch)
    for layer in sm.blocks:
        attn, mlp = sm.adapter.branch_modules(layer)
        children = [m for _, m in layer.named_children()]
        assert any(attn is c for c in children) and any(mlp is c for c in children)
        assert attn is not mlp
        for kind, module in zip(lm.PLAYER_KINDS, (attn, mlp), strict=True):
            projections = sm.adapter.output_projections(layer, kind)
            owned = {id(p) for p in module.parameters()}
            assert projections and all(id(p) in owned for _, p in projections), kind
    with pytest.raises(UsageError, match="'moe'"):
        sm.adapter.output_projections(sm.blocks[0], "moe")

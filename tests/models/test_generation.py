"""Greedy decoding under a coalition (:mod:`layerfast.models.generation`).

* The full model decodes token for token as ``transformers``' ``generate(do_sample=False)``: on
  the tiny random model of every architecture (sdpa, and eager for a few), and (slow) on the
  packaged SmolLM2-135M and Gemma-3-270M.
* Left-padded batches decode as one prompt at a time (up to counted near-ties).
* Any coalition decodes as a naive reference that recomputes the whole sequence without a cache
  at every step, and as HF ``generate`` with forward hooks zeroing the removed branches.
* A removed attention sublayer leaves no KV entry.
* Stop strings, EOS, ``max_new_tokens=1``, ``prefix`` (slow: SmolLM2), and bad input.

Where two decodings may legitimately differ (another order of the same arithmetic), the
difference is allowed only at or after a greedy step counted as a near-tie; it is printed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.models.generation import (
    KVStore,
    eos_ids,
    generate_ids,
    left_pad,
    new_hidden,
    positions,
)
from tests.helpers.tiny_models import TINY_ARCHS, tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

N_NEW = 10  # new tokens per prompt on the tiny models
LENGTHS = (1, 7, 13)  # odd prompt lengths; 7 and 13 exceed the tiny sliding window (4)
SLIDING = ("mistral", "gemma2", "gemma3", "gemma3_multimodal")
EAGER_ONLY = ("gemma2",)  # transformers has no sdpa attention for Gemma2


# --- helpers -------------------------------------------------------------------------------------
def tiny(arch: str, attn: str = "sdpa", seed: int = 0):
    """A tiny random ``arch`` as a SublayerModel over the tiny tokenizer; its EOS is an id that
    the prompts never hold (so decoding runs to the limit unless the model picks it)."""
    tok = tiny_tokenizer()
    attn = "eager" if arch in EAGER_ONLY else attn
    hf = tiny_model(arch, seed=seed, attn_implementation=attn, vocab_size=len(tok))
    hf.generation_config.eos_token_id = len(tok) - 1
    return lf.load(hf, tokenizer=tok)


def random_prompts(model, lengths=LENGTHS, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    top = len(model.tokenizer) - 1  # never the EOS chosen by tiny()
    return [torch.randint(3, top, (n,), generator=g).tolist() for n in lengths]


def hf_greedy(hf_model, prompt: list[int], n: int) -> list[int]:
    """``generate(do_sample=False)`` at batch 1: the new tokens."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=n,
            top_p=None,
            top_k=None,
            temperature=None,
        )
    return out[0, len(prompt) :].tolist()


def naive_greedy(model, prompt: list[int], keep, n: int) -> list[int]:
    """The whole sequence through ``model(input_ids, keep=...)`` at every step, no cache:
    argmax of the last position's logits, appended, until ``n`` tokens or an EOS."""
    eos = eos_ids(model)
    seq, out = list(prompt), []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([seq]), keep=keep)  # [1, T, V]
            token = int(logits[0, -1].float().argmax())
            out.append(token)
            seq.append(token)
            if token in eos:
                break
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def assert_same_up_to_near_ties(model, prompt, keep, ours, other, what: str) -> None:
    """``ours`` (from generate_ids at batch 1) equals ``other``, or they part at a step k where
    a near-tie was counted among the first k + 1 greedy steps of decoding ``prompt``."""
    k = first_difference(ours, other)
    if k is None:
        return
    ties = generate_ids(model, [prompt], keep, max_new_tokens=k + 1, batch_size=1).near_ties[0]
    print(f"{what}: differ from step {k} ({ours} vs {other}); near-ties up to it: {ties}")
    assert ties > 0, f"{what}: outputs differ at step {k} with no near-tie: {ours} vs {other}"


class ZeroBranches:
    """Forward hooks on the attention and MLP modules of every block: a removed player's module
    output is replaced by zeros (the first element where the module returns a tuple, as
    attention modules and some MoE blocks do). Gemma's post-branch RMS norms map 0 to 0, so the
    branch adds nothing to the residual stream there either."""

    def __init__(self, model, keep):
        self.handles = []
        for block, layer in enumerate(model.blocks):
            for player, module in zip(
                model.players_of(block), model.adapter.branch_modules(layer), strict=True
            ):
                if not keep[player]:
                    self.handles.append(module.register_forward_hook(self._zero))

    @staticmethod
    def _zero(module, args, output):
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]), *output[1:])
        return torch.zeros_like(output)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def mask_without(model, *names: str) -> np.ndarray:
    keep = np.ones(model.n_players, dtype=bool)
    for name in names:
        keep[model.players.index(name)] = False
    return keep


# --- the full model against transformers' generate ----------------------------------------------
FULL_CASES = [(arch, "eager" if arch in EAGER_ONLY else "sdpa") for arch in TINY_ARCHS] + [
    ("llama", "eager"),
    ("gemma3", "eager"),
    ("mistral", "eager"),
]


@pytest.mark.parametrize("arch,attn", FULL_CASES, ids=[f"{a}-{i}" for a, i in FULL_CASES])
def test_full_model_equals_hf_generate(arch, attn):
    model = tiny(arch, attn)
    if arch in SLIDING:
        window = model.config.get_text_config().sliding_window
        assert window is not None and max(LENGTHS) > window  # the window drops keys
    prompts = random_prompts(model)
    gen = generate_ids(model, prompts, None, max_new_tokens=N_NEW, batch_size=1)
    assert gen.passes == sum(len(t) for t in gen.tokens)  # one prompt pass, then one per step
    for prompt, ours in zip(prompts, gen.tokens):
        assert 1 <= len(ours) <= N_NEW
        ref = hf_greedy(model.hf_model, prompt, N_NEW)
        assert_same_up_to_near_ties(model, prompt, None, ours, ref, f"{arch}/{attn} full")


# --- batches with left padding -------------------------------------------------------------------
BATCH_ARCHS = ["llama", "mistral", "gemma2", "gpt_neox", "mixtral"]


@pytest.mark.parametrize("arch", BATCH_ARCHS)
def test_left_padded_batches_equal_batch_one(arch):
    model = tiny(arch, "sdpa", seed=1)
    lengths = (1, 7, 13, 4, 10, 2, 9)
    prompts = random_prompts(model, lengths, seed=3)
    limits = [N_NEW, 3, N_NEW, 6, 1, N_NEW, 5]  # rows leave their batch at different steps
    keep = mask_without(model, "mlp1")
    for mask in (None, keep):
        batched = generate_ids(model, prompts, mask, limits, batch_size=4)
        single = generate_ids(model, prompts, mask, limits, batch_size=1)
        assert batched.passes < single.passes  # the prompts did share passes
        assert batched.decoded == single.decoded or batched.tokens != single.tokens
        for i, prompt in enumerate(prompts):
            a, b = single.tokens[i], batched.tokens[i]
            assert len(b) <= limits[i]
            if single.near_ties[i] == 0 and batched.near_ties[i] == 0:
                assert a == b, f"{arch} prompt {i}: {a} vs {b} (no near-ties)"
            else:
                assert_same_up_to_near_ties(model, prompt, mask, a, b, f"{arch} batch row {i}")


def test_sublayer_model_generate_pads_its_rows():
    model = tiny("llama")
    prompts = random_prompts(model, (3, 7, 5))
    ids, attn = left_pad(prompts, 0)
    out = model.generate(ids, max_new_tokens=4, attention_mask=attn, batch_size=2)
    gen = generate_ids(model, prompts, None, max_new_tokens=4, batch_size=1)
    assert out.dtype == torch.long and out.shape == (3, max(len(t) for t in gen.tokens))
    for row, tokens in zip(out.tolist(), gen.tokens):
        assert row[: len(tokens)] == tokens
        assert all(t == 0 for t in row[len(tokens) :])


def test_positions_count_real_tokens():
    _, attn = left_pad([[5, 6, 7], [8]], 0)
    assert attn.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(attn).tolist() == [[0, 1, 2], [1, 1, 0]]


# --- any coalition: the naive reference and HF generate with zeroed branches --------------------
COALITION_ARCHS = ["llama", "gpt_neox", "gemma2", "gemma3", "mixtral", "qwen2_moe", "gpt2"]
COALITIONS = {
    "no-attn1": ("attn1",),
    "no-mlp0": ("mlp0",),
    "mix": ("attn0", "mlp1", "attn2"),
    "no-attention": ("attn0", "attn1", "attn2"),
}


@pytest.mark.parametrize("arch", COALITION_ARCHS)
def test_coalitions_equal_naive_reference_and_hooked_hf_generate(arch):
    model = tiny(arch, "sdpa", seed=2)
    prompts = random_prompts(model, (7, 13), seed=5)
    n = 8
    for label, removed in COALITIONS.items():
        keep = mask_without(model, *removed)
        gen = generate_ids(model, prompts, keep, max_new_tokens=n, batch_size=1)
        for prompt, ours in zip(prompts, gen.tokens):
            naive = naive_greedy(model, prompt, keep, n)
            assert_same_up_to_near_ties(model, prompt, keep, ours, naive, f"{arch} {label} naive")
            with ZeroBranches(model, keep):
                hooked = hf_greedy(model.hf_model, prompt, n)
            assert_same_up_to_near_ties(model, prompt, keep, ours, hooked, f"{arch} {label} HF")


def test_coalitions_change_the_output():
    """The comparisons above are not vacuous: removing sublayers changes what is generated."""
    model = tiny("llama", "sdpa", seed=2)
    prompts = random_prompts(model, (7, 13), seed=5)
    outs = {
        label: generate_ids(model, prompts, mask_without(model, *removed), 8).tokens
        for label, removed in {"full": (), **COALITIONS}.items()
    }
    assert len({str(v) for v in outs.values()}) > 2, outs


# --- the KV cache --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gemma2", "mixtral", "gpt2"])
def test_removed_attention_leaves_no_kv_entry(arch):
    model = tiny(arch, "sdpa")
    prompts = random_prompts(model, (5, 9))
    ids, attn = left_pad(prompts, 0)
    removals = [(), ("attn1",), ("attn0", "attn2"), ("mlp0", "attn2"), ("attn0", "attn1", "attn2")]
    for removed in removals:
        keep = mask_without(model, *removed)
        kept_blocks = {b for b in range(model.n_blocks) if keep[model.players_of(b)[0]]}
        store = KVStore()
        h = new_hidden(model, ids, attn, 0, keep.tolist(), store)
        assert h.shape == (2, model.config.get_text_config().hidden_size)
        assert set(store.layers) == kept_blocks, (removed, sorted(store.layers))
        for k, v in store.layers.values():
            assert k.shape[0] == 2 and k.shape[-2] == ids.shape[1] and v.shape[-2] == ids.shape[1]
        # One decoding step: the same layers, one position more, and the hidden state of the
        # whole sequence recomputed without a cache.
        token = torch.tensor([[11], [12]])
        ids2 = torch.cat([ids, token], dim=1)
        attn2 = torch.cat([attn, torch.ones_like(token)], dim=1)
        h2 = new_hidden(model, ids2, attn2, ids.shape[1], keep.tolist(), store)
        assert set(store.layers) == kept_blocks
        assert all(k.shape[-2] == ids2.shape[1] for k, _ in store.layers.values())
        fresh = new_hidden(model, ids2, attn2, 0, keep.tolist(), KVStore())
        torch.testing.assert_close(h2, fresh, rtol=1e-4, atol=1e-5)


# --- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_bad_max_new_tokens(bad):
    model = tiny("llama")
    with pytest.raises(UsageError, match="max_new_tokens"):
        generate_ids(model, [[5, 6]], None, max_new_tokens=bad)
    with pytest.raises(UsageError, match="max_new_tokens"):
        model.generate(torch.tensor([[5, 6]]), max_new_tokens=bad)


def test_bad_max_new_tokens_per_prompt():
    model = tiny("llama")
    with pytest.raises(UsageError, match="max_new_tokens"):
        generate_ids(model, [[5, 6], [7]], None, max_new_tokens=[3, 0])


def test_empty_prompt():
    model = tiny("llama")
    with pytest.raises(UsageError, match="no tokens"):
        generate_ids(model, [[5, 6], []], None, max_new_tokens=2)
    with pytest.raises(UsageError, match="no tokens"):
        model.generate(
            torch.tensor([[5, 6], [0, 0]]), attention_mask=torch.tensor([[1, 1], [0, 0]])
        )


@pytest.mark.parametrize("width", [5, 7, 0])
def test_keep_mask_of_wrong_length(width):
    model = tiny("llama")
    with pytest.raises(UsageError) as info:
        generate_ids(model, [[5, 6]], np.ones(width, dtype=bool), max_new_tokens=2)
    message = str(info.value)
    assert str(model.n_players) in message and "keep" in message, message
    with pytest.raises(UsageError):
        model.generate(torch.tensor([[5, 6]]), keep=np.ones(width, dtype=bool), max_new_tokens=2)


def test_other_bad_input():
    model = tiny("llama")
    with pytest.raises(UsageError, match="batch_size"):
        generate_ids(model, [[5, 6]], None, max_new_tokens=2, batch_size=0)
    with pytest.raises(UsageError, match="prefix"):
        generate_ids(model, [[5, 6]], None, max_new_tokens=2, prefix=[[1], [2]])
    with pytest.raises(UsageError, match="stop"):
        generate_ids(model, [[5, 6], [7]], None, max_new_tokens=2, stop=[["a"], ["b"], ["c"]])
    with pytest.raises(UsageError, match="input_ids"):
        model.generate(torch.tensor([5, 6]))


# --- EOS, limits and prefixes on a tiny model ----------------------------------------------------
def test_eos_stops_and_is_kept():
    model = tiny("llama")
    prompt = random_prompts(model, (7,))[0]
    free = generate_ids(model, [prompt], None, max_new_tokens=N_NEW).tokens[0]
    model.hf_model.generation_config.eos_token_id = [free[2], len(model.tokenizer) - 1]
    try:
        stopped = generate_ids(model, [prompt], None, max_new_tokens=N_NEW).tokens[0]
    finally:
        model.hf_model.generation_config.eos_token_id = len(model.tokenizer) - 1
    k = free.index(free[2])
    assert stopped == free[: k + 1]


def test_tiny_prefix_continues_as_without_it():
    model = tiny("gemma2")
    prompts = random_prompts(model, (7, 13))
    keep = mask_without(model, "attn1")
    full = generate_ids(model, prompts, keep, max_new_tokens=N_NEW)
    again = generate_ids(model, prompts, keep, N_NEW, prefix=[t[:3] for t in full.tokens])
    assert again.tokens == full.tokens
    assert again.decoded == full.decoded - 6  # the prefixes were not decoded


# --- drafts: other outputs propose tokens, the greedy output stays ------------------------------
def altered(tokens: list[int], vocab: int) -> list[int]:
    """``tokens`` with a few of them changed: a draft that is rejected there."""
    out = list(tokens)
    for j in range(1, len(out), 3):
        out[j] = 3 + (out[j] + 1) % (vocab - 4)
    return out


DRAFT_CASES = [
    ("llama", 1),
    ("llama", 4),
    ("gpt_neox", 4),
    ("mixtral", 4),
    ("gpt2", 4),
    ("gemma3", 4),  # sliding window 4: drafting is off for these prompts
    ("gemma3_multimodal", 4),  # the same window, in config.text_config
]


@pytest.mark.parametrize(
    "arch,batch_size", DRAFT_CASES, ids=[f"{a}-batch{b}" for a, b in DRAFT_CASES]
)
def test_drafts_change_nothing_but_the_passes(arch, batch_size):
    model = tiny(arch, "sdpa", seed=4)
    vocab = len(model.tokenizer)
    prompts = random_prompts(model, (1, 7, 13, 3, 9), seed=6)
    keep = mask_without(model, "attn1")
    n = 12
    plain = generate_ids(model, prompts, keep, n, batch_size=batch_size)
    other = generate_ids(model, prompts, None, n, batch_size=batch_size).tokens
    cases = {
        "exact": [[t] for t in plain.tokens],
        "altered": [[altered(t, vocab)] for t in plain.tokens],
        "other, altered, exact": [[o, altered(t, vocab), t] for o, t in zip(other, plain.tokens)],
    }
    for label, drafts in cases.items():
        gen = generate_ids(model, prompts, keep, n, batch_size=batch_size, drafts=drafts)
        for i, prompt in enumerate(prompts):
            assert_same_up_to_near_ties(
                model, prompt, keep, plain.tokens[i], gen.tokens[i], f"{arch} drafts {label}"
            )
        if label == "exact" and arch not in SLIDING:
            assert gen.passes < plain.passes  # the drafts were used
    # with a prefix, as the generative game resumes a coalition
    prefix = [t[:2] for t in plain.tokens]
    drafts = [[altered(t, vocab), o] for t, o in zip(plain.tokens, other)]
    gen = generate_ids(model, prompts, keep, n, batch_size=batch_size, prefix=prefix, drafts=drafts)
    for i, prompt in enumerate(prompts):
        assert_same_up_to_near_ties(
            model, prompt, keep, plain.tokens[i], gen.tokens[i], f"{arch} prefix+drafts"
        )


# --- slow: the packaged models -------------------------------------------------------------------
SMOL_PROMPTS = [
    "Q: What is the capital of France?\nA:",
    "The quick brown fox",
    "def fibonacci(n):",
]


@pytest.fixture(scope="module")
def smollm():
    return lf.load("smollm2-135m")


@pytest.fixture(scope="module")
def gemma():
    return lf.load("gemma3-270m")


def encode(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_smollm_full_model_equals_hf_generate(smollm):
    prompts = [encode(smollm, t) for t in SMOL_PROMPTS]
    gen = generate_ids(smollm, prompts, None, max_new_tokens=12, batch_size=1)
    for prompt, ours in zip(prompts, gen.tokens):
        ref = hf_greedy(smollm.hf_model, prompt, 12)
        assert_same_up_to_near_ties(smollm, prompt, None, ours, ref, "smollm2 full")
    # batched with left padding: as at batch 1
    batched = generate_ids(smollm, prompts, None, max_new_tokens=12, batch_size=4)
    for i, prompt in enumerate(prompts):
        assert_same_up_to_near_ties(
            smollm, prompt, None, gen.tokens[i], batched.tokens[i], "smollm2 batch"
        )


@pytest.mark.slow
def test_gemma_full_model_equals_hf_generate(gemma):
    texts = ["Q: What is the capital of Italy?\nA:", "Once upon a time"]
    prompts = [[gemma.tokenizer.bos_token_id] + encode(gemma, t) for t in texts]
    gen = generate_ids(gemma, prompts, None, max_new_tokens=12, batch_size=1)
    for prompt, ours in zip(prompts, gen.tokens):
        ref = hf_greedy(gemma.hf_model, prompt, 12)
        assert_same_up_to_near_ties(gemma, prompt, None, ours, ref, "gemma3-270m full")


@pytest.mark.slow
def test_smollm_stop_string_max_one_and_prefix(smollm):
    tok = smollm.tokenizer
    prompt = encode(smollm, "Q: What is the capital of France?\nA:")
    free = generate_ids(smollm, [prompt], None, max_new_tokens=24).tokens[0]
    stopped = generate_ids(smollm, [prompt], None, max_new_tokens=24, stop=["\n"]).tokens[0]
    pieces = [tok.decode([t]) for t in stopped]
    print("stopped at:", pieces)
    assert "\n" in pieces[-1] and not any("\n" in p for p in pieces[:-1])
    assert len(stopped) < 24 and stopped == free[: len(stopped)]
    # the same through SublayerModel.generate
    out = smollm.generate(torch.tensor([prompt]), max_new_tokens=24, stop=["\n"])
    assert out[0].tolist() == stopped
    # one token
    one = generate_ids(smollm, [prompt], None, max_new_tokens=1, stop=["\n"])
    assert one.tokens == [free[:1]] and one.decoded == 1 and one.passes == 1
    # a prefix continues exactly as without it
    n = 10
    full = generate_ids(smollm, [prompt], None, max_new_tokens=n).tokens[0]
    resumed = generate_ids(smollm, [prompt], None, max_new_tokens=n, prefix=[full[:3]])
    assert resumed.tokens[0] == full and resumed.decoded == n - 3


@pytest.mark.slow
def test_smollm_coalitions_equal_naive_reference_and_hooked_hf_generate(smollm):
    prompt = encode(smollm, "Athens is to Greece as Baghdad is to")
    n = 8
    for removed in [("attn3",), ("mlp5", "attn7"), ("mlp0",)]:
        keep = mask_without(smollm, *removed)
        (ours,) = generate_ids(smollm, [prompt], keep, max_new_tokens=n).tokens
        naive = naive_greedy(smollm, prompt, keep, n)
        assert_same_up_to_near_ties(smollm, prompt, keep, ours, naive, f"smollm2 {removed} naive")
        with ZeroBranches(smollm, keep):
            hooked = hf_greedy(smollm.hf_model, prompt, n)
        assert_same_up_to_near_ties(smollm, prompt, keep, ours, hooked, f"smollm2 {removed} HF")

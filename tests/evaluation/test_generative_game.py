"""The generative Game (``lf.Game`` on a generative task): reference verification, executors,
the cache, utilities and errors.

Reference verification (one teacher-forced pass per coalition; the full model's output where the
coalition agrees with it, decoding on from the first difference elsewhere) must give what plain
decoding under each coalition gives. Checked on every coalition of a window-3 proximity sweep of
tiny random models, and (slow) on SmolLM2-135M with ``analogies-gen``. Outputs may differ only
where near-ties were counted; any such difference is printed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.coalitions import coalition_keys
from layerfast.errors import UsageError
from layerfast.estimators.proximity import proximity_masks
from layerfast.evaluation.generative_game import GenerativeGame
from layerfast.models.generation import generate_ids
from layerfast.tasks import GenItem, GenTask
from layerfast.tasks.gen_scoring import exact_match
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

MAX_NEW = 6


# --- helpers -------------------------------------------------------------------------------------
def tiny(arch: str = "llama", seed: int = 0):
    tok = tiny_tokenizer()
    attn = "eager" if arch == "gemma2" else "sdpa"  # no sdpa for Gemma2 in transformers
    return lf.load(
        tiny_model(arch, seed=seed, attn_implementation=attn, vocab_size=len(tok)), tokenizer=tok
    )


def random_contexts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts decoded from random token ids of the tiny tokenizer (3 to 15 of them)."""
    tok = tiny_tokenizer()
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 16, (1,), generator=g))
        ids = torch.randint(3, len(tok), (k,), generator=g).tolist()
        out.append(tok.decode(ids))
    return out


def random_task(n: int = 8, seed: int = 0, targets=None, name: str = "rand-gen") -> GenTask:
    contexts = random_contexts(n, seed)
    targets = targets or [("zzz",)] * n
    items = [GenItem(c, tuple(t), f"r{i}") for i, (c, t) in enumerate(zip(contexts, targets))]
    return GenTask(name, items, until=(), max_new_tokens=MAX_NEW)


def game_of(model, task, **kw) -> GenerativeGame:
    kw.setdefault("progress", False)
    game = lf.Game(model, task, **kw)
    assert isinstance(game, GenerativeGame)
    return game


def sweep(n_players: int) -> np.ndarray:
    """Row 0 the full coalition, then the full set less every window of 1..3 players."""
    masks, _ = proximity_masks(n_players, 3)
    return masks


def plain(game: GenerativeGame, mask) -> tuple[list[list[int]], list[int]]:
    """Plain decoding of the game's prompts under ``mask``: (tokens, near-ties) per prompt."""
    p = game.prompts
    gen = generate_ids(
        game.model, [q.input_ids for q in p], mask, [q.max_new_tokens for q in p],
        [q.until for q in p], game.gen_batch_size,
    )  # fmt: skip
    return gen.tokens, gen.near_ties


def compare_with_plain(game: GenerativeGame, masks: np.ndarray) -> None:
    """``game.outputs(masks)`` equal plain decoding under each mask, except where near-ties were
    counted (printed)."""
    outputs = game.outputs(masks)
    differences = []
    for mask, out in zip(masks, outputs):
        tokens, ties = plain(game, mask)
        for i, (a, b) in enumerate(zip(out, tokens)):
            if a != b:
                differences.append((coalition_keys(mask[None])[0], i, a, b, ties[i]))
    for key, i, a, b, ties in differences:
        print(f"coalition {key} prompt {i}: game {a} vs plain {b} (plain near-ties {ties})")
    unexplained = [d for d in differences if d[-1] == 0 or game.near_ties == 0]
    assert not unexplained, (
        f"{len(unexplained)} (coalition, prompt) outputs differ from plain decoding without a "
        f"near-tie, e.g. {unexplained[0]}"
    )


# --- reference verification equals plain decoding ------------------------------------------------
SWEEP_CASES = [
    ("llama", 3),
    ("llama", 8),
    ("gemma2", 8),
    ("mixtral", 8),
    ("gpt_neox", 8),
    ("gemma3_multimodal", 8),
]


@pytest.mark.parametrize(
    "arch,gen_batch_size", SWEEP_CASES, ids=[f"{a}-batch{b}" for a, b in SWEEP_CASES]
)
def test_verification_equals_plain_decoding_on_a_window3_sweep(arch, gen_batch_size):
    model = tiny(arch, seed=1)
    game = game_of(model, random_task(8, seed=2), gen_batch_size=gen_batch_size)
    masks = sweep(model.n_players)
    assert len(masks) == 16 and masks[0].all()
    compare_with_plain(game, masks)
    reference = game.outputs(masks[:1])[0]
    # Both paths ran: some (coalition, prompt) outputs were the reference, verified without
    # decoding; others left it and were decoded on from the first difference.
    left = sum(o != r for out in game.outputs(masks[1:]) for o, r in zip(out, reference))
    print(f"{arch}: verified {game.verified}, decoded {game.decoded_tokens}, left {left}")
    assert left > 0
    if arch != "gemma2":  # its final soft-cap of 1.0 makes every coalition leave the reference
        assert game.verified > 0
    assert game.n_forward == len(masks)
    full_decoded = sum(len(t) for t in reference)
    assert game.decoded_tokens < full_decoded * len(masks)  # verification saved decoding


def test_verification_with_stop_strings_and_eos():
    """A task whose stop strings are pieces the full model generates second: decoding stops
    early (at the stop, or at the tiny model's EOS, id 2), and verification still agrees."""
    model = tiny("qwen2", seed=3)
    probe = game_of(model, random_task(8, seed=4))
    full = probe.outputs(probe.full_mask()[None])[0]
    tok = model.tokenizer
    pieces = sorted({tok.decode(t[1:2]) for t in full if len(t) > 1} - {""})
    until = tuple(pieces[:2])
    assert until
    task = GenTask("stops", random_task(8, seed=4).items, until=until, max_new_tokens=MAX_NEW)
    game = game_of(model, task)
    masks = sweep(model.n_players)
    compare_with_plain(game, masks)
    lengths = [len(t) for t in game.outputs(masks[:1])[0]]
    assert min(lengths) < MAX_NEW  # some prompt did stop at a string


def test_executors_give_identical_outputs():
    model = tiny("llama", seed=1)
    task = random_task(8, seed=2)
    masks = sweep(model.n_players)
    naive = game_of(model, task, executor="naive")
    prefix = game_of(model, task, executor="prefix")
    assert naive.outputs(masks) == prefix.outputs(masks)
    np.testing.assert_array_equal(naive(masks), prefix(masks))


# --- the cache -----------------------------------------------------------------------------------
def test_cache_serves_a_second_game(tmp_path):
    model = tiny("llama", seed=1)
    task = random_task(8, seed=2)
    masks = sweep(model.n_players)
    path = tmp_path / "c.sqlite"
    first = game_of(model, task, cache=path)
    values = first(masks)
    outputs = first.outputs(masks)
    assert first.n_forward == len(masks) and first.decoded_tokens > 0
    second = game_of(model, task, cache=path)
    np.testing.assert_array_equal(second(masks), values)
    assert second.outputs(masks) == outputs
    assert second.decoded_tokens == 0 and second.n_forward == 0
    # another utility on the same outputs decodes nothing
    f1 = second.with_utility("f1")
    assert f1.utility == "f1"
    f1_values = f1(masks)
    assert f1_values.shape == (len(masks),)
    assert f1.decoded_tokens == 0 and f1.n_forward == 0
    assert second.decoded_tokens == 0 and second.n_forward == 0
    decoded = first.decoded_tokens
    first.with_utility("f1")(masks)
    assert first.decoded_tokens == decoded


def spy_on_decoding(monkeypatch) -> list[str]:
    """The coalition keys that ``generate_ids`` decodes for, in the generative game module."""
    import layerfast.evaluation.generative_game as module

    seen = []
    original = module.generate_ids

    def generate_ids(model, prompts, keep=None, *args, **kwargs):
        seen.append(coalition_keys(np.asarray(model.keep_mask(keep))[None])[0])
        return original(model, prompts, keep, *args, **kwargs)

    monkeypatch.setattr(module, "generate_ids", generate_ids)
    return seen


def test_resume_decodes_only_the_rest(tmp_path, monkeypatch):
    model = tiny("llama", seed=1)
    task = random_task(8, seed=2)
    masks = sweep(model.n_players)
    half, rest = masks[:8], masks[8:]
    whole = game_of(model, task)
    expected, outputs = whole(masks), whole.outputs(masks)
    path = tmp_path / "c.sqlite"
    game_of(model, task, cache=path)(half)
    seen = spy_on_decoding(monkeypatch)
    resumed = game_of(model, task, cache=path)
    np.testing.assert_array_equal(resumed(masks), expected)
    assert resumed.outputs(masks) == outputs
    assert resumed.n_forward == len(rest)
    assert seen and set(seen) <= set(coalition_keys(rest)), seen  # not the reference, not half
    assert resumed.decoded_tokens > 0
    # and once everything is cached, a third game decodes nothing
    seen.clear()
    third = game_of(model, task, cache=path)
    np.testing.assert_array_equal(third(masks), expected)
    assert seen == [] and third.n_forward == 0 and third.decoded_tokens == 0


def test_resume_after_a_kill_mid_sweep(tmp_path, monkeypatch):
    model = tiny("llama", seed=1)
    task = random_task(8, seed=2)
    masks = sweep(model.n_players)
    path = tmp_path / "c.sqlite"
    killed = game_of(model, task, cache=path)
    original = killed._complete
    done = []

    def complete(key, *args):
        if len(done) == 5:
            raise KeyboardInterrupt("simulated kill")
        original(key, *args)
        done.append(key)

    killed._complete = complete
    with pytest.raises(KeyboardInterrupt):
        killed(masks)
    assert killed.n_forward == 1 + 5  # the reference, then 5 coalitions
    whole = game_of(model, task)
    expected, outputs = whole(masks), whole.outputs(masks)
    seen = spy_on_decoding(monkeypatch)
    resumed = game_of(model, task, cache=path)
    np.testing.assert_array_equal(resumed(masks), expected)
    assert resumed.outputs(masks) == outputs
    assert resumed.n_forward == len(masks) - 6
    finished = set(done) | {coalition_keys(masks[:1])[0]}
    assert seen and not set(seen) & finished, seen


# --- utilities -----------------------------------------------------------------------------------
def test_utilities_are_item_means_and_exact_match_reads_the_texts():
    model = tiny("llama", seed=1)
    probe = game_of(model, random_task(8, seed=2))
    full_texts = probe.texts(probe.full_mask())
    # half the items take the full model's own text as their target
    targets = [
        (text.strip() or "zzz",) if i % 2 == 0 else ("zzz", "yyy")
        for i, text in enumerate(full_texts)
    ]
    task = random_task(8, seed=2, targets=targets, name="rand-gen-targets")
    masks = sweep(model.n_players)
    for utility in ("exact_match", "f1"):
        game = game_of(model, task, utility=utility)
        values = game(masks)
        items = game.item_values(masks)
        assert items.shape == (len(masks), len(task))
        np.testing.assert_allclose(values, items.mean(axis=1), rtol=0, atol=1e-15)
        np.testing.assert_array_equal(game.per_item(masks[3]), items[3])
    game = game_of(model, task, utility="exact_match")
    full = game.full_mask()
    texts = game.texts(full)
    tok = model.tokenizer
    assert texts == [tok.decode(t, skip_special_tokens=True) for t in game.outputs(full[None])[0]]
    direct = [
        exact_match(text, item.targets, remove_articles=True)
        for text, item in zip(texts, task.items)
    ]
    assert float(game(full[None])[0]) == pytest.approx(np.mean(direct))
    # the items whose target is the full model's own (non-blank) text are matched
    assert all(direct[i] == 1.0 for i, t in enumerate(full_texts) if i % 2 == 0 and t.strip())
    assert np.mean(direct) > 0
    assert game.chance == 0.0


# --- errors --------------------------------------------------------------------------------------
def test_likelihood_utility_is_refused():
    model = tiny("llama")
    with pytest.raises(UsageError) as info:
        lf.Game(model, random_task(4), utility="acc", progress=False)
    message = str(info.value)
    assert "acc" in message and "exact_match" in message and "f1" in message, message


def test_workers_are_refused():
    model = tiny("llama")
    with pytest.raises(UsageError, match="workers"):
        lf.Game(model, random_task(4), workers=2, progress=False)


def test_bad_masks_and_executor():
    model = tiny("llama")
    game = game_of(model, random_task(4))
    with pytest.raises(UsageError):
        game(np.ones((2, model.n_players + 1), dtype=bool))
    with pytest.raises(UsageError):
        lf.Game(model, random_task(4), executor="fast", progress=False)


# --- slow: SmolLM2 on analogies-gen --------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm():
    return lf.load("smollm2-135m")


@pytest.mark.slow
def test_smollm_verification_equals_plain_decoding(smollm):
    task = lf.tasks.load("analogies-gen", limit=6)
    game = game_of(smollm, task)
    players = smollm.players
    removed = [(), ("mlp0",), ("attn5",), ("attn3", "mlp3", "attn4"), ("mlp29",), ("attn29",)]
    masks = np.ones((len(removed), smollm.n_players), dtype=bool)
    for row, names in enumerate(removed):
        for name in names:
            masks[row, players.index(name)] = False
    compare_with_plain(game, masks)
    print(
        f"smollm2 analogies-gen: verified {game.verified}, decoded {game.decoded_tokens}, "
        f"near-ties {game.near_ties}, exact_match {game(masks).round(3).tolist()}"
    )
    assert game.verified > 0

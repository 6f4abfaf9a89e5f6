"""EAVSS: the group split, the scores on synthetic statistics against their formulas, bootstrap
intervals, per-item statistics against the reference, contrastive fine-tuning (only the chosen
blocks move; the loss falls; save/load round trip) and the controlled comparison on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.activations.collect import block_streams
from layerfast.activations.reference import block_stats_ref
from layerfast.errors import UsageError
from layerfast.hallucination.contrastive import FinetuneConfig, finetune, trainable_parameters
from layerfast.hallucination.eavss import (
    ItemStats,
    answer_requests,
    bootstrap,
    eavss,
    group_scores,
    item_stats,
    split_by_outcome,
)
from layerfast.hallucination.experiment import compare, split_task
from layerfast.models.inputs import pad_right


def synthetic(n_items: int, n_blocks: int, seed: int, av_shift=None, as_shift=None) -> ItemStats:
    """Random per-item statistics; av_shift/as_shift [n_blocks] are added to items of group H
    (the odd-numbered items)."""
    rng = np.random.default_rng(seed)
    av = rng.gamma(4.0, 1.0, size=(n_items, n_blocks))
    entries = np.full((n_items, n_blocks), 1000.0)
    small = rng.binomial(1000, 0.01, size=(n_items, n_blocks)).astype(float)
    h = np.arange(n_items) % 2 == 1
    if av_shift is not None:
        av[h] += av_shift
    if as_shift is not None:
        small[h] = rng.binomial(1000, 0.01 + np.asarray(as_shift), size=(h.sum(), n_blocks))
    return ItemStats(av, small, entries, np.zeros_like(av))


def groups(n_items):
    idx = np.arange(n_items)
    return idx[idx % 2 == 1], idx[idx % 2 == 0]  # H, C


def test_split_by_outcome():
    c, h = split_by_outcome(np.array([1, 0, 0, 1, 1]))
    assert c.tolist() == [0, 3, 4] and h.tolist() == [1, 2]
    with pytest.raises(UsageError, match="0/1"):
        split_by_outcome(np.array([1, 2]))


def test_scores_follow_their_formulas():
    st = synthetic(40, 5, seed=1)
    h, c = groups(40)
    sc = group_scores(st, h, c)
    av_h, av_c = st.av[h].mean(0), st.av[c].mean(0)
    as_h = st.small[h].sum(0) / st.entries[h].sum(0)
    as_c = st.small[c].sum(0) / st.entries[c].sum(0)
    np.testing.assert_allclose(sc["hsav"], (av_h - av_c) / (av_h + av_c), rtol=1e-12)
    np.testing.assert_allclose(sc["hss"], (as_h - as_c) / (as_h + as_c), rtol=1e-12)
    avss_h, avss_c = av_h / as_h, av_c / as_c
    np.testing.assert_allclose(sc["eavss"], (avss_h - avss_c) / (avss_h + avss_c), rtol=1e-12)
    # EAVSS combines the two contrasts: tanh(atanh(HSAV) - atanh(HSS))
    np.testing.assert_allclose(
        sc["eavss"], np.tanh(np.arctanh(sc["hsav"]) - np.arctanh(sc["hss"])), rtol=1e-9, atol=1e-12
    )


def test_as_zero_gives_nan_not_infinity():
    st = synthetic(10, 3, seed=2)
    st.small[:, 1] = 0
    h, c = groups(10)
    sc = group_scores(st, h, c)
    assert np.isnan(sc["eavss"][1]) and np.isnan(sc["hss"][1])
    assert np.isfinite(sc["eavss"][[0, 2]]).all() and np.isfinite(sc["hsav"]).all()


def test_bootstrap_separates_signal_from_noise():
    shift = np.array([0.0, 3.0, 0.0, 0.0])  # only block 1 differs between the groups
    st = synthetic(200, 4, seed=3, av_shift=shift)
    h, c = groups(200)
    point = group_scores(st, h, c)
    iv = bootstrap(st, h, c, n_boot=400, seed=0)
    lo, hi = iv["hsav"]
    assert lo[1] > 0, "a real difference must exclude 0"
    assert (lo <= point["hsav"]).all() and (point["hsav"] <= hi).all()
    small = synthetic(40, 4, seed=3, av_shift=shift)
    lo_s, hi_s = bootstrap(small, *groups(40), n_boot=400, seed=0)["hsav"]
    assert np.mean(hi_s - lo_s) > np.mean(hi - lo), "fewer items must give wider intervals"


def test_bootstrap_coverage_under_the_null():
    """With no difference between the groups, 95% intervals contain 0 about 95% of the time."""
    covered = []
    for seed in range(20):
        st = synthetic(60, 6, seed=100 + seed)
        lo, hi = bootstrap(st, *groups(60), n_boot=200, seed=seed)["eavss"]
        covered.extend((lo <= 0) & (0 <= hi))
    assert np.mean(covered) >= 0.85


def test_item_stats_match_reference_per_item(tiny_llama, tiny_task):
    reqs = tiny_task.requests(tiny_llama.tokenizer)
    picked = answer_requests(reqs, np.array([0] * len(tiny_task)))
    got = item_stats(tiny_llama, picked, eps=0.05, backend="torch", batch_size=5, progress=False)
    for i in (0, 3, 11):
        r = picked[i]
        ids, mask = pad_right([list(r.input_ids)])
        ans = torch.zeros_like(mask)
        ans[0, len(r.input_ids) - len(r.targets) :] = 1
        with torch.no_grad():
            streams = [
                (b, x.clone(), y.clone()) for b, x, y in block_streams(tiny_llama, ids, mask)
            ]
        for block, x_in, x_out in streams:
            for scope, m in (("sequence", mask), ("answer", ans)):
                acc = block_stats_ref(x_in, x_out, m, eps=0.05)
                # item_stats runs items 5 to a padded batch, the reference one item alone: the two
                # fp32 forwards round differently (measured 1.2e-8 relative with transformers
                # 5.25; 1e-9 held with 5.24), so the bound is fp32's, not float64's
                assert got[scope].av[i, block] == pytest.approx(acc["av_sum"], rel=1e-6, abs=1e-12)
                assert got[scope].small[i, block] == acc["small"]
                assert got[scope].entries[i, block] == acc["n_entries"]


def test_eavss_end_to_end(tiny_llama, tiny_task):
    res = eavss(tiny_llama, tiny_task, eps=0.05, n_boot=50, progress=False)
    assert res.dtype == "bfloat16"  # the default stats_dtype, as lf.stats
    game = lf.Game(tiny_llama, tiny_task, utility="acc_norm", progress=False)
    np.testing.assert_array_equal(res.correct, game.per_item(game.full_mask()))
    for scope in ("answer", "sequence"):
        for key in ("hsav", "hss", "eavss"):
            assert res.scopes[scope][key].shape == (tiny_llama.n_blocks,)
            lo, hi = res.intervals[scope][key]
            assert lo.shape == hi.shape == (tiny_llama.n_blocks,)
    top, bottom = res.top(1), res.top(1, lowest=True)
    e = res.scopes["answer"]["eavss"]
    assert e[top[0]] == np.nanmax(e) and e[bottom[0]] == np.nanmin(e)
    json.dumps(res.to_dict())
    with pytest.raises(UsageError, match="scope"):
        res.top(1, scope="answers")
    with pytest.raises(UsageError, match=f"k must be in \\[1, {tiny_llama.n_blocks}\\], got 0"):
        res.top(0)
    with pytest.raises(UsageError, match="utility"):
        eavss(tiny_llama, tiny_task, utility="margin")
    with pytest.raises(UsageError, match="unknown dtype"):
        eavss(tiny_llama, tiny_task, stats_dtype="bf17")
    own = eavss(tiny_llama, tiny_task, eps=0.05, n_boot=5, progress=False, stats_dtype="model")
    assert own.dtype == "float32"


def test_split_task_is_disjoint_and_seeded(tiny_task):
    a = split_task(tiny_task, seed=3)
    b = split_task(tiny_task, seed=3)
    ids = [[it.id for it in t.items] for t in a]
    assert ids == [[it.id for it in t.items] for t in b]
    assert sum(map(len, ids)) == len(tiny_task) and len(set(sum(ids, []))) == len(tiny_task)
    assert ids != [[it.id for it in t.items] for t in split_task(tiny_task, seed=4)]
    with pytest.raises(UsageError, match="fractions"):
        split_task(tiny_task, (0.5, 0.5))


def test_finetune_moves_only_the_chosen_blocks(tiny_llama, tiny_task, tmp_path):
    before = {k: v.clone() for k, v in tiny_llama.hf_model.state_dict().items()}
    tuned, log = finetune(
        tiny_llama, tiny_task, [1], FinetuneConfig(steps=25, lr=3e-3, batch_size=6)
    )
    for k, v in tiny_llama.hf_model.state_dict().items():
        assert torch.equal(v, before[k]), f"the original model changed at {k}"
    moved = {k for k, v in tuned.hf_model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("model.layers.1.") for k in moved), sorted(moved)
    first, last = np.mean([x["loss"] for x in log[:5]]), np.mean([x["loss"] for x in log[-5:]])
    assert last < first, (first, last)
    # an ordinary transformers model: save, reload, same logits
    tuned.hf_model.save_pretrained(tmp_path / "tuned")
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path / "tuned").eval()
    ids = torch.tensor([tiny_llama.tokenizer.encode("the cat sat on the mat")])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, tuned.hf_model(ids).logits)
    assert again.config.layerfast_finetuned["blocks"] == [1]


def test_trainable_parameters_checks_blocks(tiny_llama):
    with pytest.raises(UsageError, match=r"blocks must be .* got \[7\]"):
        trainable_parameters(lf.load(tiny_llama.hf_model, tokenizer=tiny_llama.tokenizer), [7])


@pytest.mark.parametrize(
    "bad", [dict(steps=-1), dict(batch_size=0), dict(lr=0.0), dict(temperature=-0.1)]
)
def test_finetune_config_rejects_bad_values(bad):
    with pytest.raises(UsageError, match="invalid fine-tuning config"):
        FinetuneConfig(**bad)


def test_compare_runs_every_condition(tiny_llama, tiny_task):
    out = compare(
        tiny_llama,
        tiny_task,
        k=1,
        config=FinetuneConfig(steps=2, batch_size=2),
        n_random=2,
        progress=False,
        log=lambda *a: None,
    )
    names = [r["condition"] for r in out["rows"]]
    assert names == ["before", "eavss-top", "eavss-bottom", "random-0", "random-1", "all"]
    before = out["rows"][0]
    assert before["test_acc_delta"] == 0 and before["val_acc_delta"] == 0
    assert out["rows"][-1]["blocks"] == list(range(tiny_llama.n_blocks))
    assert sum(out["splits"].values()) == len(tiny_task)
    canary = lf.Task("bb", tiny_task.items, notes={"canary": "never train on this"})
    with pytest.raises(UsageError, match="canary"):
        compare(tiny_llama, canary, k=1, progress=False, log=lambda *a: None)

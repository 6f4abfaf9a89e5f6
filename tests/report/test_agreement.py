"""report.agreement: rank agreement of two views' ablation drops (closed-form cases, the item
bootstrap and its NaN handling), the likelihood twin of a generative task, the report section,
the generative-vs-likelihood agreement on a tiny model, and (slow) ``layerfast report`` on
SmolLM2 with ``analogies-gen``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

import layerfast as lf
from layerfast import cli
from layerfast.errors import UsageError
from layerfast.estimators.ablation import ablate
from layerfast.estimators.bootstrap import resample_indices
from layerfast.report import agreement as ag
from layerfast.report.document import Document, render_markdown
from layerfast.report.files import write_json
from layerfast.report.html import render_html
from layerfast.tasks import GenItem, GenTask, Item, Task
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer


def drops(n_items=60, n_players=8, seed=0, spread=1.0):
    """Per-item drops [n_items, n_players] whose player means differ (by ``spread``)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_items, n_players)) + spread * np.arange(n_players)


def strict(path: Path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


# --- closed-form cases ---------------------------------------------------------------------------
def test_identical_views_agree_exactly_with_a_point_interval():
    x = drops()
    agr = ag.rank_agreement(x, x.copy(), n_boot=300)
    assert agr.spearman == 1.0 and agr.low == 1.0 and agr.high == 1.0
    assert agr.skipped == 0 and agr.note == "" and agr.n_items == 60 and agr.n_boot == 300
    assert np.all(agr.rank_shift == 0) and agr.most_different == []
    assert agr.first_rank.tolist() == list(range(8, 0, -1))  # rank 1 = the largest mean drop
    np.testing.assert_allclose(agr.first_drop, x.mean(axis=0))


def test_reversed_views_disagree_exactly():
    x = drops()
    agr = ag.rank_agreement(x, -x, n_boot=300, players=[f"p{i}" for i in range(8)])
    assert agr.spearman == -1.0 and agr.low == -1.0 and agr.high == -1.0
    assert agr.rank_shift.tolist() == [7, 5, 3, 1, -1, -3, -5, -7]
    assert [p for p, _, _ in agr.most_different] == ["p0", "p7", "p1", "p6", "p2"]
    assert agr.most_different[0] == ("p0", 8.0, 1.0)


def test_independent_views_have_an_interval_around_zero():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 10)), rng.normal(size=(200, 10))
    agr = ag.rank_agreement(a, b, n_boot=500, seed=3)
    assert agr.low < 0 < agr.high and agr.high - agr.low > 0.5
    assert agr.low <= agr.spearman <= agr.high and agr.skipped == 0


def test_point_value_is_scipys_spearman_of_the_mean_drops():
    a, b = drops(seed=2, spread=0.1), drops(seed=3, spread=0.1)
    agr = ag.rank_agreement(a, b, n_boot=0)
    assert agr.spearman == pytest.approx(spearmanr(a.mean(0), b.mean(0))[0])
    assert math.isnan(agr.low) and math.isnan(agr.high) and "n_boot=0" in agr.note


def test_bootstrap_replicates_are_scipys_spearman_on_each_resample():
    a, b = drops(20, 6, seed=4, spread=0.2), drops(20, 6, seed=5, spread=0.2)
    reps = ag._bootstrap(a, b, 50, 7)
    idx = resample_indices(20, 50, np.random.default_rng(7))
    want = [spearmanr(a[i].mean(0), b[i].mean(0))[0] for i in idx]
    np.testing.assert_allclose(reps, want, atol=1e-12)


def test_ties_of_01_drops_stay_exact_on_every_resample():
    """Two players with the same 0/1 drops tie on every resample (average ranks), in both
    views; the third player is ranked alike: rho is 1 on every resample."""
    rng = np.random.default_rng(0)
    col = (rng.random(30) < 0.3).astype(float)
    a = np.stack([col, col, np.ones(30)], axis=1)
    b = np.stack([col, col, 0.5 + col], axis=1)
    agr = ag.rank_agreement(a, b, n_boot=200)
    assert agr.spearman == 1.0 and agr.low == 1.0 and agr.high == 1.0


# --- NaN handling --------------------------------------------------------------------------------
def test_constant_view_gives_nan_with_the_reason():
    agr = ag.rank_agreement(drops(), np.zeros((60, 8)), n_boot=100, labels=("lik", "gen"))
    assert math.isnan(agr.spearman) and math.isnan(agr.low) and math.isnan(agr.high)
    assert agr.skipped == 100
    assert "the gen view's mean drops are all equal" in agr.note
    assert "no interval: 100 of 100 item resamples skipped" in agr.note
    both = ag.rank_agreement(np.ones((5, 3)), np.zeros((5, 3)), n_boot=10)
    assert "the first and second views' mean drops are all equal" in both.note


def test_resamples_with_a_constant_view_are_skipped_and_counted():
    """One item carries the only drop of the first view: resamples without it are skipped."""
    a = np.zeros((5, 4))
    a[0, 1] = 1.0
    b = drops(5, 4, seed=6)
    agr = ag.rank_agreement(a, b, n_boot=400, seed=0)
    assert math.isfinite(agr.spearman) and math.isfinite(agr.low) and math.isfinite(agr.high)
    assert 50 < agr.skipped < 250  # (4/5)^5 ~ 1/3 of the resamples lack item 0
    assert f"{agr.skipped} of 400 item resamples skipped" in agr.note


def test_bad_inputs_are_usage_errors():
    x = drops(10, 4)
    with pytest.raises(UsageError, match="one shape"):
        ag.rank_agreement(x, x[:, :3])
    with pytest.raises(UsageError, match="2 players"):
        ag.rank_agreement(x[:, :1], x[:, :1])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UsageError, match="finite"):
        ag.rank_agreement(bad, x)
    with pytest.raises(UsageError, match="n_boot"):
        ag.rank_agreement(x, x, n_boot=-1)
    with pytest.raises(UsageError, match="level"):
        ag.rank_agreement(x, x, level=1.0)
    with pytest.raises(UsageError, match="3 player names"):
        ag.rank_agreement(x, x, players=["a", "b", "c"])


# --- the likelihood twin -------------------------------------------------------------------------
def gen_task(name="mine", notes=None, ids=("a", "b")):
    items = [GenItem(f"context {i}", ("x",), i) for i in ids]
    return GenTask(name, items, notes=notes or {})


def test_likelihood_twin():
    assert ag.likelihood_twin("analogies-gen") == "analogies"
    assert ag.likelihood_twin("capitals-gen") == "capitals"
    assert ag.likelihood_twin("capitals") is None and ag.likelihood_twin("bigbench-gen:x") is None
    assert ag.likelihood_twin(gen_task("analogies-gen")) == "analogies"  # the name table
    assert ag.likelihood_twin(gen_task(notes={"likelihood_form": "capitals"})) == "capitals"
    assert ag.likelihood_twin(gen_task()) is None
    assert ag.likelihood_twin(Task("analogies-gen", [Item("c", ("x", "y"), 0, "a")])) is None


@pytest.mark.slow
def test_builtin_twins_hold_the_same_items():
    for name, twin in (("analogies-gen", "analogies"), ("capitals-gen", "capitals")):
        task = lf.tasks.load(name, limit=5, seed=3)
        assert task.notes["likelihood_form"] == twin == ag.likelihood_twin(task)
        other = ag.twin_task(task, 5, 3)
        assert other.name == twin and [it.id for it in other.items] == [it.id for it in task.items]
        # the same questions (capitals-gen puts two worked questions in front of each)
        assert all(g.context.endswith(m.context) for g, m in zip(task.items, other.items))


def test_twin_task_aligns_by_id_when_the_subsets_differ(tmp_path):
    path = tmp_path / "mc.jsonl"
    rows = [{"context": f"context {i}", "choices": ["x", "y"], "gold": 0, "id": i} for i in "abcd"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = gen_task(notes={"likelihood_form": str(path)}, ids=("c", "a", "z"))
    twin = ag.twin_task(task, None, 0)
    assert [it.id for it in twin.items] == ["c", "a"] and twin.notes["aligned_to"] == "mine"
    first, second = ag.aligned_indices(task, twin)
    assert first.tolist() == [0, 1] and second.tolist() == [0, 1]
    assert ag.twin_task(gen_task(notes={"likelihood_form": str(path)}, ids=("z",)), None) is None
    assert ag.twin_task(gen_task(), None) is None


# --- the report section and the record -----------------------------------------------------------
def test_section_json_and_line(tmp_path):
    x = drops(30, 6)
    y = x[:, [1, 0, 2, 3, 5, 4]]
    agr = ag.rank_agreement(x, y, n_boot=100, players=list("abcdef"), labels=("lik", "gen"))
    blocks = ag.agreement_blocks(agr, ("lik: `acc_norm` on `t`",))
    md = render_markdown(Document(blocks))
    assert md.startswith("## Likelihood vs generation\n") and "- lik: `acc_norm` on `t`" in md
    assert "Spearman of the ablation drops (lik vs gen): 0.886 (95% interval" in md
    assert "| player | rank (lik) | rank (gen) | shift | drop (lik) | drop (gen) |" in md
    assert "| a | 6 | 5 | +1 |" in md and "| c |" not in md
    assert "<h2>Likelihood vs generation</h2>" in render_html(Document(blocks), tmp_path)
    assert ag.agreement_line(agr).startswith("lik vs gen ranks: Spearman 0.886")
    same = render_markdown(Document(ag.agreement_blocks(ag.rank_agreement(x, x, n_boot=10))))
    assert "Every player has the same rank in both views." in same
    nan = ag.rank_agreement(x, np.zeros_like(x), n_boot=10)
    record = strict(write_json(tmp_path / "agreement.json", nan.to_dict()))
    assert record["spearman"] is None and record["interval"]["low"] is None
    assert "mean drops are all equal" in record["note"] and len(record["rank_shift"]) == 6


# --- the two views of one game -------------------------------------------------------------------
def test_likelihood_agreement_on_a_tiny_model(tmp_path):
    """A generative task whose targets are the full model's own answers (so the ablations
    change something), its likelihood form a JSONL file; the model is the game's, not reloaded."""
    tok = tiny_tokenizer()
    model = lf.load(tiny_model("llama", seed=0, vocab_size=len(tok)), tokenizer=tok)
    contexts = ["the cat sat on the", "the dog sat on the", "Athens is to Greece as", "the fox"]
    items = [GenItem(c, ("zzz",), f"i{k}") for k, c in enumerate(contexts)]
    first = lf.Game(model, GenTask("probe", items, until=(), max_new_tokens=2), progress=False)
    answers = [t.strip() or "zzz" for t in first.texts(first.full_mask())]
    path = tmp_path / "twin.jsonl"
    rows = [
        {"context": c, "choices": [a, "zzz qq"], "gold": 0, "id": f"i{k}"}
        for k, (c, a) in enumerate(zip(contexts, answers))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = [GenItem(c, (a,), f"i{k}") for k, (c, a) in enumerate(zip(contexts, answers))]
    notes = {"likelihood_form": str(path)}
    task = GenTask("own-gen", items, notes=notes, until=(), max_new_tokens=2)
    game = lf.Game(model, task, progress=False)
    abl = ablate(game, item_bootstrap=0)
    agr, views, record = ag.likelihood_agreement(game, None, 0, n_boot=50, progress=False)
    assert agr.players == game.players and agr.n_items == 4 and agr.labels[1] == "generation"
    np.testing.assert_allclose(agr.second_drop, abl.drops)
    assert record["generation"] == {"task": "own-gen", "utility": "exact_match", "full": 1.0}
    assert record["likelihood"]["task"] == "twin" and record["likelihood"]["utility"] == "acc_norm"
    assert views[0].startswith("likelihood: `acc_norm` on `twin`")
    # the random model's acc_norm does not move: no rank correlation, and the note says why
    assert math.isnan(agr.spearman) and "likelihood view's mean drops are all equal" in agr.note
    # a smooth likelihood utility moves with every ablation: finite, with its interval
    smooth, _, record = ag.likelihood_agreement(game, None, 0, 50, utility="logprob")
    assert record["likelihood"]["utility"] == "logprob" and -1 <= smooth.spearman <= 1
    assert smooth.low <= smooth.high and np.isfinite([smooth.low, smooth.high]).all()
    assert ag.likelihood_agreement(lf.Game(model, gen_task(), progress=False), None) is None


# --- the command line (slow: SmolLM2) ------------------------------------------------------------
@pytest.mark.slow
def test_report_adds_likelihood_vs_generation(capsys, tmp_path):
    out = tmp_path / "report"
    players = ["attn20", "mlp20", "attn21", "mlp21"]
    argv = ["report", "--task", "analogies-gen", "--limit", "4", "--players", ",".join(players)]
    rc = cli.main([*argv, "--out", str(out), "--no-progress"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    record = strict(out / "agreement.json")
    assert record["players"] == players and record["n_items"] == 4
    assert record["likelihood"]["task"] == "analogies" and record["generation"]["utility"] == (
        "exact_match"
    )
    for key in ("spearman",):
        assert record[key] is not None and -1 <= record[key] <= 1 or record["note"]
    for bound in ("low", "high"):
        value = record["interval"][bound]
        assert value is not None and -1 <= value <= 1 or "no interval" in record["note"]
    md = (out / "report.md").read_text()
    assert "## Likelihood vs generation" in md and "Spearman of the ablation drops" in md
    assert "Likelihood vs generation" in (out / "report.html").read_text()
    assert "likelihood vs generation ranks: Spearman" in stdout

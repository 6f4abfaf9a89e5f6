"""``layerfast report --models A,B --tasks T1,T2``: every pair in its own folder with its own
cache, one combined report (grid, cornerstones, rank agreement), re-runs cost nothing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from layerfast.cli.multi_report import slug
from layerfast.players import block_players
from layerfast.report.grid import grid_figure, shares, top_caption
from layerfast.report.multi import spearman_interval
from tests.cli.test_cli import record_games, run, save_tiny_model, write_task_file


def test_shares_and_caption():
    s = shares([2.0, -1.0, 1.0, 0.0])
    assert np.allclose(s, [0.5, -0.25, 0.25, 0.0]) and math.isclose(np.abs(s).sum(), 1.0)
    assert np.array_equal(shares([0, 0]), [0.0, 0.0])
    assert top_caption(["attn0", "mlp0", "attn1", "mlp1"], s, k=2) == "attn0 .50, attn1 .25"


def test_spearman_interval_contains_rho_and_narrows():
    lo, hi = spearman_interval(0.6, 60)
    assert lo < 0.6 < hi and -1 < lo and hi < 1
    lo2, hi2 = spearman_interval(0.6, 600)
    assert hi2 - lo2 < hi - lo
    assert all(math.isnan(x) for x in spearman_interval(0.5, 3))


def test_grid_figure_has_a_panel_per_pair_with_integer_ticks():
    players = [f"{k}{i}" for i in range(5) for k in ("attn", "mlp")]
    rng = np.random.default_rng(0)
    results = {
        (m, t): (players, rng.normal(size=10)) for m in "ab" for t in "xyz" if (m, t) != ("b", "z")
    }
    fig = grid_figure(["a", "b"], ["x", "y", "z"], results)
    fig.canvas.draw()
    axes = fig.axes
    assert len(axes) == 6
    for ax in axes[:5]:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all("." not in lab for lab in labels), labels
        assert ax.get_title().startswith("top: ")
    assert any(t.get_text() == "not run" for t in axes[5].texts)


@pytest.mark.parametrize(
    "players,want",
    [
        ([f"block{b}" for b in range(5)], [0, 1, 2, 3, 4]),  # --unit block
        (block_players(5), [0, 1, 2, 3, 4]),
        (["attn3", "mlp5", "attn7"], [3, 5, 7]),
    ],
)
def test_grid_puts_each_bar_on_its_block(players, want):
    """Bar x centres are the players' blocks (integers): no "two players per block" positions."""
    values = np.linspace(-0.5, 1.0, len(players))
    fig = grid_figure(["a"], ["x", "y"], {("a", t): (players, values) for t in ("x", "y")})
    fig.canvas.draw()
    for ax in fig.axes:
        assert np.allclose([p.get_x() + p.get_width() / 2 for p in ax.patches], want)
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels and {int(t) for t in labels} <= set(want), labels


def test_two_models_two_tasks(tmp_path, capsys, monkeypatch, model_factory, tiny_tokenizer_fixture):
    model_a = save_tiny_model(tmp_path / "tiny-a", model_factory, tiny_tokenizer_fixture)
    model_b = save_tiny_model(tmp_path / "tiny-b", model_factory, tiny_tokenizer_fixture)
    task_1 = write_task_file(tmp_path / "one.jsonl")
    task_2 = tmp_path / "two.jsonl"
    task_2.write_text("\n".join(task_1.read_text().splitlines()[::-1]) + "\n")
    out = tmp_path / "out"
    argv = ["report", "--models", f"{model_a},{model_b}", "--tasks", f"{task_1},{task_2}"]
    argv += ["--out", out, "--no-progress", "--window", "2"]
    games = record_games(monkeypatch)
    rc, printed, err = run(capsys, *argv)
    assert rc == 0, err
    for m in ("tiny-a", "tiny-b"):
        for t in ("one.jsonl", "two.jsonl"):
            pair = out / m / t
            assert (pair / "report.md").is_file() and (pair / "utilities.sqlite").is_file()
            assert (pair / "ablation.svg").is_file()
    md = (out / "report.md").read_text()
    assert "![Shapley shares per model and task](grid.svg)" in md
    assert (
        md.count("| tiny-a | one.jsonl | 6 |") == 1 and md.count("| tiny-b | two.jsonl | 6 |") == 1
    )
    assert "| tiny-a | one.jsonl | two.jsonl |" in md  # rank agreement row
    assert "![ablation of tiny-b on two.jsonl](tiny-b/two.jsonl/ablation.svg)" in md
    for name in ("grid.png", "grid.svg", "report.html", "report.json"):
        assert (out / name).is_file()
    record = json.loads((out / "report.json").read_text())
    assert len(record["pairs"]) == 4
    assert sum(g.n_forward for g in games) > 0
    # a re-run reuses every pair's cache: no coalition is computed again
    games.clear()
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    assert len(games) == 4 and sum(g.n_forward for g in games) == 0


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--models", "a,,b"], ["--models", "comma-separated"]),
        (["--tasks", "capitals,capitals"], ["--tasks", "capitals twice"]),
        (["--tasks", "nope.jsonl"], ["--tasks", "nope.jsonl"]),
        (["--models", "x", "--cache", "c.sqlite"], ["--cache"]),
    ],
)
def test_bad_lists_fail_before_loading(extra, words, tmp_path, capsys, monkeypatch):
    import layerfast

    monkeypatch.setattr(layerfast.models, "load", lambda *a, **k: pytest.fail("loaded"))
    rc, _, err = run(capsys, "report", "--out", tmp_path / "o", *extra)
    assert rc == 2 and err.count("\n") == 1, err
    for w in words:
        assert w in err


def test_slug():
    assert (
        slug("/a/b/tiny-llama/") == "tiny-llama" and slug("lm_eval:arc easy") == "lm_eval_arc_easy"
    )


def test_cornerstone_support_says_none_or_why():
    from types import SimpleNamespace

    from layerfast.estimators.ablation import NOT_ENOUGH_ITEMS
    from layerfast.report.multi import cornerstone_support

    none = SimpleNamespace(cornerstones=[], status="ok", cornerstone_note="the rule")
    assert cornerstone_support(none) == "none"
    few = SimpleNamespace(cornerstones=[], status=NOT_ENOUGH_ITEMS, cornerstone_note="why")
    assert cornerstone_support(few) == "why"
    some = SimpleNamespace(
        cornerstones=["mlp0"],
        players=["attn0", "mlp0"],
        values=np.array([0.5, 0.2]),
        p_drop=np.array([0.5, 0.001]),
    )
    assert cornerstone_support(some) == "mlp0 (v 0.200, p_drop 1.0e-03)"

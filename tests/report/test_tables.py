"""report.tables: the text the CLI prints and the Markdown it writes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from layerfast.estimators.ablation import AblationResult
from layerfast.report import tables

PLAYERS = ["attn0", "mlp0", "attn1", "mlp1"]


def ablation():
    return AblationResult(
        players=PLAYERS,
        full=0.8,
        values=np.array([0.7, 0.25, 0.8, 0.5]),
        chance=0.25,
        margin=0.1,
        utility="acc",
    )


def test_ablation_table_marks_cornerstones_and_top():
    text = tables.ablation_table(ablation())
    lines = text.splitlines()
    assert len(lines) == 2 + 4 and "v(N\\{l})" in lines[0]
    assert lines[3].split()[0] == "mlp0" and lines[3].endswith("<- cornerstone")
    top = tables.ablation_table(ablation(), top=2).splitlines()[2:]
    assert [line.split()[0] for line in top] == ["mlp0", "mlp1"]  # largest drops first


def test_markdown_summary_and_top_players():
    res = SimpleNamespace(
        players=PLAYERS,
        values=np.array([0.1, 0.5, 0.0, 0.2]),
        stderr=np.zeros(4),
        method="proximity",
        info={"window": 2},
        n_evaluations=8,
        efficiency_gap=0.0,
    )
    meta = {
        "model": "m",
        "task": "t",
        "n_items": 6,
        "dtype": "float32",
        "environment": {"machine": "x86_64, 1 threads", "date": "today"},
    }
    md = tables.markdown_summary(meta, ablation(), res, 12.0)
    assert md.startswith("# layerfast report: m on t")
    assert "cornerstones (removal drops the utility to chance): mlp0" in md
    assert "proximity (window 2), 8 coalitions" in md and "![shapley](shapley.png)" in md
    assert tables.top_players(res, 2) == "top Shapley players: mlp0 0.5000, mlp1 0.2000"


def test_finetune_table():
    row = {
        "condition": "eavss-top",
        "blocks": [2, 0],
        "test_acc_before": 0.5,
        "test_acc_after": 0.75,
        "test_acc_delta": 0.25,
        "test_acc_delta_se": 0.1,
        "test_logprob_before": -2.0,
        "test_logprob_after": -1.5,
        "val_acc_after": 0.6,
    }
    lines = tables.finetune_table([row, {**row, "condition": "all"}], "acc").splitlines()
    assert lines[0].startswith("| condition | blocks | test acc before -> after")
    assert lines[2] == (
        "| eavss-top | 2 0 | 0.500 -> 0.750 (+0.250 ± 0.100) | -2.000 -> -1.500 | 0.600 |"
    )
    assert lines[3].startswith("| all | all |")


def test_stats_summary_notes_undefined_avss():
    st = {
        "backend": "torch",
        "dtype": "float32",
        "n_texts": 4,
        "n_tokens": np.array([40.0]),
        "wall_s": 0.25,
        "as_zero": [1],
    }
    text = tables.stats_summary(st, 1e-5)
    assert text.startswith("statistics: torch backend, float32, 4 texts, 40 tokens, 0.2 s")
    assert "AS = 0 in blocks [1]" in text
    assert "\n" not in tables.stats_summary({**st, "as_zero": []}, 1e-5)


def test_smooth_utility_summary_has_no_chance_level_and_names_the_threads():
    """A smooth utility (margin, logprob) has chance None: every line handles it (report used to
    crash on ``{chance:.3f}`` after writing its files); report.md names the CPU threads used."""
    abl = AblationResult(PLAYERS, -1.5, np.array([-2.0, -9.0, -1.4, -3.0]), None, None, "margin")
    res = SimpleNamespace(
        players=PLAYERS,
        values=np.zeros(4),
        stderr=np.zeros(4),
        method="proximity",
        info={"window": 3},
        n_evaluations=8,
        efficiency_gap=0.0,
    )
    meta = {
        "model": "m",
        "task": "t",
        "n_items": 6,
        "dtype": "float32",
        "threads": 2,
        "environment": {"machine": "x86_64, 2 cores", "date": "today"},
    }
    md = tables.markdown_summary(meta, abl, res, 3.0)
    assert "chance = n/a" in md and "on 2 CPU threads" in md
    assert tables.chance_text(None) == "n/a" and tables.chance_text(0.25) == "0.250"
    assert "mlp0" in tables.ablation_table(abl, res) and abl.cornerstones == []


def test_efficiency_gap_text_for_an_estimator_without_one():
    """report.md said "efficiency gap nan" for proximity, which defines no gap: it says so; a
    missing v(empty) of an efficient method is named as such; a finite gap is a number."""

    def res(method, gap):
        return SimpleNamespace(
            players=PLAYERS,
            values=np.zeros(4),
            stderr=np.zeros(4),
            method=method,
            info={"window": 3},
            n_evaluations=8,
            efficiency_gap=gap,
        )

    meta = {
        "model": "m",
        "task": "t",
        "n_items": 6,
        "dtype": "float32",
        "environment": {"machine": "x86_64", "date": "today"},
    }
    for gap in (float("nan"), None):
        text = tables.efficiency_gap_text(res("proximity", gap))
        assert text == "not defined for this estimator"
        md = tables.markdown_summary(meta, ablation(), res("proximity", gap), 1.0)
        assert "efficiency gap not defined for this estimator" in md and "nan" not in md.lower()
        assert "not evaluated" in tables.efficiency_gap_text(res("permutation", gap))
    assert tables.efficiency_gap_text(res("exact", -0.00012)) == "-0.0001"
    assert tables.efficiency_gap_text(res("proximity", 0.25)) == "0.2500"

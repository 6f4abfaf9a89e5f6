"""report.plots: every figure is a PNG file; plot_convergence lives here, not in estimators."""

from __future__ import annotations

import subprocess
import sys

import matplotlib.colors
import numpy as np
import pytest

from layerfast.players import block_players, sublayer_players
from layerfast.report import plots

PNG = b"\x89PNG\r\n\x1a\n"


def standard_players(n_blocks):
    return [f"{k}{i}" for i in range(n_blocks) for k in ("attn", "mlp")]


def per_block_figures(n_blocks, seed):
    """Every per-block figure the module makes, on fresh random values (n_blocks blocks)."""
    rng = np.random.default_rng(seed)
    players = standard_players(n_blocks)
    v = rng.uniform(0.0, 1.0, 2 * n_blocks)
    b = rng.uniform(-1.0, 1.0, n_blocks)
    return {
        "ablation": plots.ablation_figure(players, v, 0.9, 0.25, utility="acc"),
        "shapley": plots.shapley_figure(players, v, rng.uniform(0, 0.1, 2 * n_blocks)),
        "blocks": plots.blocks_figure(b, "NAVSS", highlight=[0], interval=(b - 0.1, b + 0.1)),
    }


def test_block_and_sublayer_plots(tmp_path):
    players = ["attn0", "mlp0", "attn1", "mlp1"]
    values = np.array([0.1, np.nan, 0.3, 0.2])
    paths = [
        plots.plot_ablation(players, values, 0.8, 0.25, tmp_path / "a.png", utility="acc"),
        plots.plot_shapley(players, values, np.full(4, np.nan), tmp_path / "s.png"),
        plots.plot_blocks(
            np.array([1.0, np.nan]),
            tmp_path / "b.png",
            ylabel="NAVSS",
            highlight=[1],
            interval=(np.zeros(2), np.full(2, 2.0)),
        ),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG


def test_plot_convergence(tmp_path):
    records = [
        {
            "n_evaluations": n,
            "values": np.arange(3.0) * n,
            "stderr": np.full(3, 0.1),
            "players": ["p0", "p1", "p2"],
            "method": "permutation",
        }
        for n in (10, 20)
    ]
    path = plots.plot_convergence(records, tmp_path / "c.png", players=["p2", 0])
    assert open(path, "rb").read(8) == PNG


def test_estimators_do_not_import_plotting():
    code = (
        "import sys, layerfast.estimators, layerfast.estimators.convergence; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'matplotlib' "
        "or m.startswith('layerfast.report')]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("n_blocks", [1, 2, 5, 13, 30, 97])
def test_block_ticks_are_integers(n_blocks):
    """Block axes label whole blocks: 0, 1, 2 (or every k-th), never 0.0, 2.5, ... (the AVSS
    plot's default locator did); every label is a block that exists."""
    for name, fig in per_block_figures(n_blocks, seed=n_blocks).items():
        fig.canvas.draw()
        labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert labels, name
        assert all(text.isdigit() for text in labels), (name, labels)
        assert {int(t) for t in labels} <= set(range(n_blocks)), (name, labels)
        assert "0" in labels and len(labels) <= plots.MAX_TICKS, (name, labels)


@pytest.mark.parametrize("n_blocks", [1, 3, 30])
def test_legend_hides_no_bar_or_line(n_blocks):
    """The legend sits outside the axes: its box overlaps no bar and no horizontal line (the
    full-model and chance lines), whatever the values (high bars at the left used to be
    covered by a legend at loc="best")."""
    rng = np.random.default_rng(n_blocks + 100)
    players = standard_players(n_blocks)
    high = np.concatenate([np.full(min(6, 2 * n_blocks), 0.95), rng.uniform(0, 1, 2 * n_blocks)])
    figs = [
        plots.ablation_figure(players, high[: 2 * n_blocks], 0.9, 0.25, utility="acc"),
        plots.ablation_figure(players, high[: 2 * n_blocks], 0.9, None),
        plots.shapley_figure(players, high[: 2 * n_blocks], np.full(2 * n_blocks, 0.05)),
    ]
    for fig in figs:
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        assert ax.patches and not legend.overlaps(ax.get_window_extent())
        for artist in [*ax.patches, *ax.lines]:
            assert not legend.overlaps(artist.get_window_extent()), artist


def test_figures_save_as_svg_too(tmp_path):
    players = standard_players(2)
    path = plots.plot_ablation(players, np.ones(4), 1.0, 0.5, tmp_path / "a.svg")
    assert b"<svg" in path.read_bytes()[:1000]


def bar_centres(ax) -> list[float]:
    """The x centre of every bar of ``ax`` (its Rectangle patches), in drawing order."""
    return [p.get_x() + p.get_width() / 2 for p in ax.patches]


def player_figures(players):
    """The ablation and Shapley figures of ``players`` on fixed values."""
    n = len(players)
    values = np.linspace(0.2, 0.8, n)
    return [
        plots.ablation_figure(players, values, 0.9, 0.25, utility="acc"),
        plots.shapley_figure(players, values, np.full(n, 0.01)),
    ]


@pytest.mark.parametrize("as_objects", [True, False])
def test_block_players_sit_on_their_blocks(as_objects):
    """``--unit block``: block b's bar is centred at x = b, labelled b, in the block colour."""
    players = block_players(6) if as_objects else [f"block{b}" for b in range(6)]
    for fig in player_figures(players):
        fig.canvas.draw()
        ax = fig.axes[0]
        assert np.allclose(bar_centres(ax), range(6))
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(b) for b in range(6)]
        assert np.allclose(ax.get_xticks(), range(6))
        assert {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches} == {
            matplotlib.colors.to_hex(plots.BLOCK_COLOR)
        }
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[0] == plots.KIND_LABELS["block"] and "attention" not in legend


def test_a_subset_of_sublayers_lands_on_its_blocks():
    for fig in player_figures(["attn3", "mlp5", "attn7"]):
        fig.canvas.draw()
        ax = fig.axes[0]
        assert np.allclose(bar_centres(ax), [3, 5, 7])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "5", "7"]
        colors = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches]
        red, blue = (matplotlib.colors.to_hex(c) for c in (plots.ATTN_COLOR, plots.MLP_COLOR))
        assert colors == [red, blue, red]


def test_attention_and_mlp_share_their_block():
    """Both sublayers of block b: attention just left of b, MLP just right, within the block;
    Player objects and plain names place the same."""
    for players in (sublayer_players(4), standard_players(4)):
        for fig in player_figures(players):
            x = np.array(bar_centres(fig.axes[0]))
            assert np.allclose(x[0::2], np.arange(4) - plots.SUBLAYER_OFFSET)
            assert np.allclose(x[1::2], np.arange(4) + plots.SUBLAYER_OFFSET)
            widths = [p.get_width() for p in fig.axes[0].patches]
            assert max(widths) < 2 * plots.SUBLAYER_OFFSET  # the two bars do not overlap


def test_names_without_blocks_fall_back_to_list_positions():
    """A closed-form game's p0, p1, ...: bars at 0, 1, ..., labelled by name, no kind legend."""
    for fig in player_figures(["p0", "p1", "p2"]):
        fig.canvas.draw()
        ax = fig.axes[0]
        assert np.allclose(bar_centres(ax), [0, 1, 2])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["p0", "p1", "p2"]
        legend = ax.get_legend()
        texts = [] if legend is None else [t.get_text() for t in legend.get_texts()]
        assert "attention" not in texts and "MLP" not in texts

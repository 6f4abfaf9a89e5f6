"""experiments/cost_aware_sampling.py: its compute count and every scheme's KernelSHAP fit, on
small synthetic ground-truth files (the script is a recorded experiment, not a package module)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import layerfast as lf
from layerfast.estimators.exact import int_to_masks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location(
        "cost_aware_sampling", ROOT / "experiments" / "cost_aware_sampling.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Lookup:
    def __init__(self, table, n):
        self.table, self.n_players, self.bits = table, n, 1 << np.arange(n)

    def __call__(self, masks):
        return self.table[np.asarray(masks, dtype=np.int64) @ self.bits]


def _write(tmp_path, table: np.ndarray, n: int, first_block: int) -> Path:
    exact = lf.shapley(_Lookup(table, n), method="exact")
    path = tmp_path / "ground_truth.json"
    record = {
        "command": "test",
        "players": [f"block{first_block + i}" for i in range(n)],
        "exact": {"values": exact.values.tolist()},
        "table": table.tolist(),
    }
    path.write_text(json.dumps(record))
    return path


def test_cost_counts_the_trie(exp, tmp_path):
    """All 2^n coalitions cost the kept prefix once plus two sublayers per kept trie node
    (2^n - 1 of them); one coalition costs the prefix plus its own kept blocks' sublayers."""
    n, first = 5, 3
    t = exp.Table(_write(tmp_path, np.zeros(1 << n), n, first))
    all_masks = int_to_masks(np.arange(1 << n), n)
    assert t.cost(all_masks) == 2 * first + 2 * ((1 << n) - 1)
    one = np.array([[True, False, True, False, False]])
    assert t.cost(one) == 2 * first + 4
    assert t.cost(np.concatenate([one, one])) == t.cost(one)  # distinct coalitions only


@pytest.mark.parametrize(
    "scheme",
    ["kernel (i.i.d. pairs)", "first-removal strata", "border", "cluster"],
)
def test_schemes_recover_an_additive_game(exp, tmp_path, scheme):
    """On an additive game every coalition design gives the exact values (the regression has
    no residual) with a zero standard error, at any cap that admits a few units."""
    n = 7
    rng = np.random.default_rng(3)
    w = rng.normal(size=n)
    table = int_to_masks(np.arange(1 << n), n).astype(np.float64) @ w + 0.5
    t = exp.Table(_write(tmp_path, table, n, 2))
    run = {
        "kernel (i.i.d. pairs)": exp.run_kernel,
        "first-removal strata": exp.run_strata,
        "border": exp.run_border,
        "cluster": lambda t, cap, r: exp.run_cluster(t, cap, r, 4, 2),
    }[scheme]
    values, stderr = run(t, 200, np.random.default_rng(0))
    np.testing.assert_allclose(values, w, atol=1e-9)
    np.testing.assert_allclose(stderr, 0.0, atol=1e-9)


@pytest.mark.parametrize("scheme", ["kernel", "strata", "cluster"])
def test_schemes_converge_on_an_interacting_game(exp, tmp_path, scheme):
    """On a game with interactions of every order (paired KernelSHAP is exact up to order 2)
    the error shrinks as the compute cap grows, and at half the exact pass's compute it is
    small against the values."""
    n = 8
    rng = np.random.default_rng(5)
    masks = int_to_masks(np.arange(1 << n), n).astype(np.float64)
    table = 3.0 * np.tanh(masks @ rng.normal(size=n) / 2)
    t = exp.Table(_write(tmp_path, table, n, 1))
    run = {
        "kernel": exp.run_kernel,
        "strata": exp.run_strata,
        "cluster": lambda t, cap, r: exp.run_cluster(t, cap, r, 5, 2),
    }[scheme]
    full = t.cost(masks.astype(bool))

    def rmse(cap: int) -> float:
        errs = [run(t, cap, np.random.default_rng(s))[0] - t.truth for s in range(8)]
        return float(np.sqrt(np.mean(np.square(errs))))

    small, large = rmse(full // 4), rmse(full // 2)
    assert large < 0.6 * small
    assert large < 0.1 * np.sqrt(np.mean(t.truth**2))

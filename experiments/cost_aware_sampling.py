"""Cost-aware coalition sampling for KernelSHAP, tried on the ground-truth game at equal compute.

The prefix executor runs a set of coalitions in trie order: a coalition costs the kept
sublayers after the prefix it shares with the one before. Two sampling schemes try to use that,
both keeping the Shapley kernel's distribution for every single coalition (so the KernelSHAP
regression of ``layerfast.estimators.kernel`` applies unchanged, no importance weights):

* ``cluster h=H J=J``: one early pattern (the first H players, drawn from the kernel's marginal)
  shared by J coalitions whose late players are drawn given it, and the J complements sharing
  the complement pattern; the early players' kept sublayers run once per cluster. Unit = cluster.
* ``first-removal strata``: each pair (T, complement) oriented so that T keeps player 0, then
  stratified by f, the first player T removes (T keeps players 0..f-1, which it shares with the
  full model's path); pairs per stratum proportional to W_f / sqrt(c_f) (cost-weighted Neyman
  allocation with equal within-stratum spread; c_f = n - f, the pair's kept players outside the
  shared prefix), A and b the W_f-weighted stratum means, stderr from the stratified sandwich.

Every scheme adds units until the next one would pass the compute cap; compute = kept sublayer
runs of all distinct coalitions in one trie (``partition.prefix_steps``), the always-kept
blocks' sublayers counted once. RMSE against the exact values and the coverage of +-1.96 stderr,
over seeds. The game's 4,096 utilities come from ``benchmarks/ground_truth/ground_truth.json``
(``benchmarks/bench_ground_truth.py``), so this costs no forward pass.

    python experiments/cost_aware_sampling.py --seeds 30 --out benchmarks/ground_truth
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from layerfast.estimators.exact import int_to_masks
from layerfast.estimators.kernel import kernel_size_probs, sample_kernel_coalitions
from layerfast.evaluation.prefix_executor import prefix_steps, trie_order

ROOT = Path(__file__).resolve().parents[1]
# Repeated coalitions are free, so a cap near the whole space's compute may never bind: stop
# drawing units after this many.
MAX_DRAWS = 5000


class Table:
    """The ground-truth game: utilities, exact values and the trie cost of a coalition set."""

    def __init__(self, path: Path):
        d = json.loads(path.read_text())
        self.table = np.asarray(d["table"], dtype=np.float64)  # [2^n], bit i = player i
        self.truth = np.asarray(d["exact"]["values"], dtype=np.float64)  # [n]
        self.n = len(self.truth)
        first = int(d["players"][0].removeprefix("block"))
        self.prefix = 2 * first  # always-kept sublayers before the first block player
        self.bits = 1 << np.arange(self.n)
        self.command = d["command"]

    def v(self, masks: np.ndarray) -> np.ndarray:
        return self.table[masks.astype(np.int64) @ self.bits]

    def cost(self, masks: np.ndarray) -> int:
        """Kept sublayer runs for the distinct coalitions of bool [m, n], one trie."""
        m = np.unique(masks, axis=0)
        model = np.concatenate(
            [np.ones((len(m), self.prefix), bool), np.repeat(m, 2, axis=1)], axis=1
        )  # [m, prefix + 2n]: each block player is its two sublayers
        return int(prefix_steps(model[trie_order(model)]).sum())


def kernel_fit(
    t: Table,
    z: np.ndarray,
    stratum: np.ndarray,
    weights: np.ndarray,
    cluster: np.ndarray | None = None,
    sampled: np.ndarray | None = None,
):
    """KernelSHAP on pairs (z, ~z), bool [P, n], with stratum int [P] and weights float
    [n_strata] (1 stratum: plain means). The stderr's i.i.d. units are the pairs, or the
    clusters of ``cluster`` int [P] (equal-sized, one stratum); a stratum that ``sampled`` bool
    [n_strata] marks False was enumerated and adds no error. stderr is NaN where a sampled
    stratum has fewer than two units. Returns (values [n], stderr [n])."""
    n = t.n
    full, empty = t.table[-1], t.table[0]
    Z = np.stack([z, ~z], axis=1).astype(np.float64)  # [P, 2, n]
    Y = np.stack([t.v(z), t.v(~z)], axis=1) - empty  # [P, 2]
    S = len(weights)
    A = np.zeros((n, n))
    b = np.zeros(n)
    for s in range(S):
        sel = stratum == s
        if sel.any():
            A += weights[s] * np.einsum("jpa,jpb->ab", Z[sel], Z[sel]) / (2 * sel.sum())
            b += weights[s] * np.einsum("jpa,jp->a", Z[sel], Y[sel]) / (2 * sel.sum())
    K = np.zeros((n + 1, n + 1))
    K[:n, :n], K[:n, n], K[n, :n] = A, 1.0, 1.0
    Kinv = np.linalg.pinv(K)
    beta = (Kinv @ np.r_[b, full - empty])[:n]
    psi = (np.einsum("jpa,jp->ja", Z, Y - Z @ beta) / 2) @ Kinv[:n, :n].T  # [P, n]
    if cluster is not None:  # a cluster's pairs are one unit: their mean influence
        per = np.zeros((cluster.max() + 1, n))
        np.add.at(per, cluster, psi)
        psi, stratum = per / np.bincount(cluster)[:, None], np.zeros(len(per), int)
    var = np.zeros(n)
    for s in range(S):
        ps = psi[stratum == s]
        if sampled is not None and not sampled[s]:
            continue
        if len(ps) < 2:
            return beta, np.full(n, np.nan)
        var += weights[s] ** 2 * ps.var(axis=0, ddof=1) / len(ps)
    return beta, np.sqrt(var)


def run_kernel(t: Table, cap: int, rng) -> tuple[np.ndarray, np.ndarray]:
    z = np.zeros((0, t.n), bool)
    for _ in range(MAX_DRAWS):
        new = sample_kernel_coalitions(t.n, 1, rng)
        cand = np.concatenate([z, new])
        if not _fits(t, cand, cap):
            break
        z = cand
    return kernel_fit(t, z, np.zeros(len(z), int), np.ones(1))


def _fits(t: Table, z: np.ndarray, cap: int) -> bool:
    """Whether pairs (z, ~z), bool [P, n], with v(N) and v(empty) cost at most ``cap``."""
    ends = np.stack([np.ones(t.n, bool), np.zeros(t.n, bool)])
    return t.cost(np.concatenate([z, ~z, ends])) <= cap


def cluster_sampler(t: Table, h: int, J: int) -> Callable:
    """One cluster: J kernel coalitions sharing a kernel-drawn pattern of the first h players."""
    n, p, C = t.n, kernel_size_probs(t.n), math.comb

    def size_p(s: int) -> float:  # probability of one given coalition of size s
        return p[s - 1] / C(n, s) if 1 <= s <= n - 1 else 0.0

    pe = np.array(
        [C(h, e) * sum(C(n - h, r) * size_p(e + r) for r in range(n - h + 1)) for e in range(h + 1)]
    )

    def draw(rng) -> np.ndarray:
        e = rng.choice(h + 1, p=pe / pe.sum())
        early = np.zeros(h, bool)
        early[rng.choice(h, e, replace=False)] = True
        pr = np.array([C(n - h, r) * size_p(e + r) for r in range(n - h + 1)])
        late = np.zeros((J, n - h), bool)
        for j, r in enumerate(rng.choice(n - h + 1, size=J, p=pr / pr.sum())):
            late[j, rng.choice(n - h, r, replace=False)] = True
        return np.concatenate([np.tile(early, (J, 1)), late], axis=1)  # [J, n]

    return draw


def run_cluster(t: Table, cap: int, rng, h: int, J: int):
    draw = cluster_sampler(t, h, J)
    z, unit = np.zeros((0, t.n), bool), np.zeros(0, int)
    for _ in range(MAX_DRAWS):
        new = draw(rng)
        cand = np.concatenate([z, new])
        if not _fits(t, cand, cap):
            break
        z, unit = cand, np.r_[unit, np.full(J, unit.max() + 1 if len(unit) else 0)]
    if len(z) == 0:
        return np.full(t.n, np.nan), np.full(t.n, np.nan)
    return kernel_fit(t, z, np.zeros(len(z), int), np.ones(1), cluster=unit)


def strata_sampler(t: Table):
    """Stratum weights W_f (f = 1..n-1, index f-1), the cost-weighted allocation and a sampler
    of T (keeps 0..f-1, removes f) given f, T's size drawn from the kernel given f."""
    n, p, C = t.n, kernel_size_probs(t.n), math.comb
    # pair probability of one oriented T of size s: p(s)/C(n,s) + p(n-s)/C(n,n-s)
    pt = {s: p[s - 1] / C(n, s) + p[n - s - 1] / C(n, n - s) for s in range(1, n)}
    rest = {f: [C(n - f - 1, r) * pt.get(f + r, 0.0) for r in range(n - f)] for f in range(1, n)}
    W = np.array([sum(rest[f]) for f in range(1, n)])
    W /= W.sum()
    alloc = W / np.sqrt(n - np.arange(1, n))  # c_f = n - f
    alloc /= alloc.sum()

    def draw(f: int, rng) -> np.ndarray:
        pr = np.asarray(rest[f])
        r = rng.choice(len(pr), p=pr / pr.sum())
        T = np.zeros(n, bool)
        T[:f] = True
        if r:
            T[f + 1 + rng.choice(n - f - 1, r, replace=False)] = True
        return T

    return W, alloc, draw


def run_strata(t: Table, cap: int, rng):
    W, alloc, draw = strata_sampler(t)
    S = len(W)
    counts = np.zeros(S, int)
    z, stratum = np.zeros((0, t.n), bool), np.zeros(0, int)
    order = [s for s in range(S) for _ in range(2)]  # two pairs per stratum first
    for _ in range(MAX_DRAWS):
        if order:
            s = order.pop(0)
        else:  # the stratum furthest below its allocated share
            s = int(np.argmax(alloc * (counts.sum() + 1) - counts))
        new = draw(s + 1, rng)[None]
        cand = np.concatenate([z, new])
        if not _fits(t, cand, cap):
            break
        z, stratum = cand, np.r_[stratum, s]
        counts[s] += 1
    if (counts < 2).any():
        return np.full(t.n, np.nan), np.full(t.n, np.nan)
    return kernel_fit(t, z, stratum, W)


def run_border(t: Table, cap: int, rng):
    """Not cost-aware, for comparison: the n pairs of sizes 1 and n-1 enumerated (their share
    of the kernel, a stratum without sampling error), the interior sizes sampled."""
    n, p = t.n, kernel_size_probs(t.n)
    border = np.eye(n, dtype=bool)  # [n, n]: z = {i}, complement N - {i}
    interior = p[1 : n - 2] / p[1 : n - 2].sum()
    W = np.array([p[0] + p[n - 2], 1.0 - p[0] - p[n - 2]])
    z = border
    for _ in range(MAX_DRAWS):
        s = rng.choice(np.arange(2, n - 1), p=interior)
        new = np.zeros((1, n), bool)
        new[0, rng.choice(n, s, replace=False)] = True
        cand = np.concatenate([z, new])
        if not _fits(t, cand, cap):
            break
        z = cand
    stratum = np.r_[np.zeros(n, int), np.ones(len(z) - n, int)]
    return kernel_fit(t, z, stratum, W, sampled=np.array([False, True]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--truth", default=str(ROOT / "benchmarks/ground_truth/ground_truth.json"))
    p.add_argument("--caps", default="400,800,1600,3200", help="compute caps (sublayer runs)")
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. + seeds - 1")
    p.add_argument("--schemes", default="", help="comma-separated scheme names (default: all)")
    p.add_argument("--out", default=None, help="folder for cost_aware.csv")
    args = p.parse_args()
    t = Table(Path(args.truth))
    exact_cost = t.cost(int_to_masks(np.arange(1 << t.n), t.n))
    schemes = {
        "kernel (i.i.d. pairs)": run_kernel,
        "first-removal strata": run_strata,
        "kernel + sizes 1 and n-1 exact": run_border,
    }
    for h, J in ((6, 2), (6, 4), (8, 2), (8, 4), (10, 2), (10, 4), (10, 8), (11, 2)):
        schemes[f"cluster h={h} J={J}"] = lambda t, c, r, h=h, J=J: run_cluster(t, c, r, h, J)
    if args.schemes:
        keep = [s.strip() for s in args.schemes.split(",")]
        unknown = [s for s in keep if s not in schemes]
        if unknown:
            p.error(f"unknown --schemes {unknown}; choose from {list(schemes)}")
        schemes = {k: schemes[k] for k in ["kernel (i.i.d. pairs)", *keep]}
    rows = []
    t0 = time.perf_counter()
    print(f"exact pass: {exact_cost} sublayer runs; ground truth from: {t.command}")
    print(
        f"{'cap':>6} {'/exact':>7} {'scheme':<24} {'RMSE med':>9} {'mean':>8} {'vs kernel':>9} "
        f"{'cover':>6}"
    )
    for cap in (int(c) for c in args.caps.split(",")):
        base = None
        for name, fn in schemes.items():
            out = [
                fn(t, cap, np.random.default_rng(seed))
                for seed in range(args.first_seed, args.first_seed + args.seeds)
            ]
            rmse = np.array([np.sqrt(np.mean((b - t.truth) ** 2)) for b, _ in out])
            cover = np.array([np.mean(np.abs(b - t.truth) <= 1.96 * s) for b, s in out])
            med = float(np.nanmedian(rmse))
            base = med if base is None else base
            rows.append(
                {
                    "cap": cap,
                    "cap_vs_exact": cap / exact_cost,
                    "scheme": name,
                    "rmse_median": med,
                    "rmse_mean": float(np.nanmean(rmse)),
                    "rmse_vs_kernel": med / base,
                    "coverage": float(np.nanmean(cover)),
                    "seeds": args.seeds,
                    "first_seed": args.first_seed,
                }
            )
            r = rows[-1]
            print(
                f"{cap:6d} {r['cap_vs_exact']:7.3f} {name:<24} {med:9.4f} {r['rmse_mean']:8.4f} "
                f"{r['rmse_vs_kernel']:9.2f} {r['coverage']:6.2f}",
                flush=True,
            )
    print(f"wall {time.perf_counter() - t0:.0f} s")
    if args.out:
        tag = f"_seed{args.first_seed}" if args.first_seed else ""
        path = Path(args.out) / f"cost_aware{tag}.csv"
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"results: {path}")


if __name__ == "__main__":
    main()

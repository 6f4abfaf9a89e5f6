"""KernelSHAP with paired sampling, the efficiency constraint and a sandwich standard error.

KernelSHAP (Lundberg & Lee 2017; Covert & Lee 2021) writes the Shapley values as the solution
of a weighted least-squares problem

    beta = argmin E_{z ~ p} [ (v(z) - v(0) - z^T beta)^2 ]   s.t.  1^T beta = v(N) - v(0),

with z a coalition of size s in 1..n-1 drawn with probability p(s) proportional to
(n-1) / (s (n-s)) and uniformly within the size (the Shapley kernel). With
A = E[z z^T] and b = E[z (v(z) - v(0))] the solution is the KKT system

    [A 1; 1^T 0] [beta; nu] = [b; v(N) - v(0)].

We estimate A and b by sample means over *paired* samples (z and its complement 1 - z form
one i.i.d. unit; Covert & Lee 2021 show pairing greatly reduces variance), and solve the
constrained system, so sum(values) = v(N) - v(0) holds exactly (efficiency gap ~ 0).

Standard error (delta method, as in Covert & Lee 2021's asymptotic analysis): beta is a smooth
function of the unit means (A_hat, b_hat); linearising,
d beta = M (d b - d A beta) with M the top-left n x n block of the inverse KKT matrix, so unit j
contributes the influence psi_j = M (b_j - A_j beta) = M (z r(z) + z' r(z')) / 2 with residuals
r(z) = v(z) - v(0) - z^T beta. stderr_i = sample std over units of psi_ij / sqrt(#units) (NaN
with one pair, which a budget >= ``min_budget_for_stderr(n)`` = max(n + 2, 6) rules out).
This is the usual sandwich (heteroscedasticity-robust) covariance of a least-squares fit; the
estimator itself has an O(1/#units) bias from the ratio A_hat^{-1} b_hat that is negligible
against the stderr once there are more units than players.

Budget: v(N) and v(0) first, then chunks of pairs; the chunk is cut to the pairs whose new
distinct coalitions fit in the budget. Repeated coalitions (frequent for small n, where sizes
1 and n-1 dominate the kernel) are free and still count as samples; sampling stops when no
more pair fits or after ``max_pairs`` pairs (default: budget).

Options:
    chunk: pairs per batched call (default: about 256 coalitions per call).
    max_pairs: cap on the number of pairs (default None = budget).
"""

from __future__ import annotations

import numpy as np

from .budget import BudgetedGame, BudgetTooSmall
from .estimator import Estimator
from .options import check_int_option
from .result import ShapleyResult


def kernel_size_probs(n: int) -> np.ndarray:
    """p(s) for s = 1..n-1 proportional to (n-1)/(s(n-s)) (the Shapley kernel by size)."""
    s = np.arange(1, n)
    w = (n - 1) / (s * (n - s))
    return w / w.sum()


def sample_kernel_coalitions(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k coalitions from the Shapley kernel distribution: bool [k, n]."""
    sizes = rng.choice(np.arange(1, n), size=k, p=kernel_size_probs(n))
    ranks = np.argsort(rng.random((k, n)), axis=1).argsort(axis=1)
    return ranks < sizes[:, None]


class KernelEstimator(Estimator):
    __doc__ = __doc__
    name = "kernel"
    OPTIONS = {"chunk": None, "max_pairs": None}
    compute_capped = True

    def _check_options(self) -> None:
        check_int_option("chunk", self.options["chunk"], 1, allow_none=True)
        check_int_option("max_pairs", self.options["max_pairs"], 1, allow_none=True)

    def min_budget(self, n: int) -> int:
        # v(N), v(empty) and enough pairs to pin down n - 1 free parameters
        return 2 if n == 1 else n + 2

    def min_budget_for_stderr(self, n: int) -> int | None:
        # v(N), v(empty) and two pairs of 2 coalitions each (n + 2 >= 6 from n = 4 on)
        if self.options["max_pairs"] == 1:
            return None
        return self.min_budget(n) if n <= 2 else max(self.min_budget(n), 6)

    def default_budget(self, n: int) -> int:
        return max(self.min_budget(n), 50 * n)

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        n = game.n_players
        ends = np.zeros((2, n), dtype=bool)
        ends[0] = True
        full, empty = game(ends)
        c = full - empty
        if n == 1:
            return ShapleyResult(
                values=[c],
                stderr=[0.0],
                n_evaluations=game.n_evaluations,
                method=self.name,
                players=game.players,
                full=full,
                empty=empty,
                info={"n_pairs": 0},
            )
        chunk = self.options["chunk"] or 128
        max_pairs = self.options["max_pairs"] or budget
        Z: list[np.ndarray] = []
        Y: list[np.ndarray] = []
        n_pairs = 0
        while n_pairs < max_pairs:
            k = min(chunk, max_pairs - n_pairs)
            z = sample_kernel_coalitions(n, k, rng)
            pairs = [np.stack([z[j], ~z[j]]) for j in range(k)]
            fit = game.fit_prefix(pairs)
            if fit == 0:
                break
            zz = np.concatenate([z[:fit], ~z[:fit]], axis=0)
            y = game(zz) - empty
            Z.append(zz.reshape(2, fit, n).transpose(1, 0, 2))  # [fit, 2, n]
            Y.append(y.reshape(2, fit).T)  # [fit, 2]
            n_pairs += fit
            if fit < k:
                break
        if n_pairs == 0:
            raise BudgetTooSmall(f"budget={budget} leaves no room for a single sampled pair")
        Zs = np.concatenate(Z, axis=0).astype(np.float64)  # [J, 2, n]
        Ys = np.concatenate(Y, axis=0)  # [J, 2]
        J = Zs.shape[0]
        A = np.einsum("jpa,jpb->ab", Zs, Zs) / (2 * J)
        b = np.einsum("jpa,jp->a", Zs, Ys) / (2 * J)
        K = np.zeros((n + 1, n + 1))
        K[:n, :n] = A
        K[:n, n] = 1.0
        K[n, :n] = 1.0
        Kinv = np.linalg.pinv(K)
        sol = Kinv @ np.r_[b, c]
        beta = sol[:n]
        M = Kinv[:n, :n]
        resid = Ys - Zs @ beta  # [J, 2]
        g = np.einsum("jpa,jp->ja", Zs, resid) / 2.0  # b_j - A_j beta
        psi = g @ M.T
        if J >= 2:
            stderr = psi.std(axis=0, ddof=1) / np.sqrt(J)
        else:
            stderr = np.full(n, np.nan)
        info = {
            "n_pairs": J,
            "paired": True,
            "variant": "KernelSHAP (sampled A, efficiency constraint), delta-method stderr",
            "rank_A": int(np.linalg.matrix_rank(A)),
        }
        return self._result(game, beta, stderr, full, empty, info)

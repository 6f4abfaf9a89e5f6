"""The weighted least-squares fit of ``kernel_ht``: a k-additive model of the game on
Horvitz-Thompson-weighted pairs, its Shapley values and their sandwich covariance.

The exact Shapley values are the fit, over *all* coalitions z (1 <= |z| <= n-1) with the
Shapley-kernel weights mu(|z|), of v(z) - v(0) ~ sum_i beta_i z_i subject to
sum_i beta_i = v(N) - v(0). Fitting a k-additive model instead, sum over subsets T with
|T| <= k of theta_T prod_{i in T} z_i (constraint: sum_T theta_T = v(N) - v(0)), and taking its
Shapley values phi_i = sum_{T containing i} theta_T / |T| gives the *same* values: its
residuals are kernel-orthogonal to the linear features up to the constraint's multiplier, so
their Shapley values are zero. On a sample the residuals are smaller, so the error is too. With
paired samples the order-2 fit equals the linear one (pairing already cancels the pairwise
terms), so the useful orders are 1 and 3.

Sample: pairs (z, ~z) from the strata of :mod:`.strata`; pair j of stratum h has weight
W_j = mu(s_h) N_h / m_h (1 for an enumerated stratum), so the weighted normal equations estimate
the population's without bias, and the fit is their ratio.

Covariance (delta method): theta_hat - theta ~ M sum_j W_j X_j^T r_j with M the top-left block
of the inverse of the constrained system and r_j the pair's residuals; per sampled stratum the
terms y_j = N_h mu X_j^T r_j are a simple random sample without replacement, so
Var = sum_h (1 - m_h/N_h) S_h^2 / m_h (S_h^2 the sample covariance of y in stratum h; enumerated
strata add nothing). The residuals are leverage-corrected: r_j (I - H_j)^{-1/2} (HC2) for the
linear fit, r_j (I - H_j)^{-1} (HC3) for k > 1, where the number of parameters is close to the
number of pairs and the plain residuals understate the error (H_j: the pair's 2 x 2 block of the
hat matrix).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

__all__ = ["n_params", "fit_pairs"]


def n_params(n: int, order: int) -> int:
    """Parameters of a k-additive model of n players: sum_{k'=1..order} C(n, k')."""
    from math import comb

    return sum(comb(n, k) for k in range(1, order + 1))


def _subsets(n: int, order: int) -> list[tuple[int, ...]]:
    return [c for k in range(1, order + 1) for c in combinations(range(n), k)]


def _features(Z: np.ndarray, subsets: list[tuple[int, ...]]) -> np.ndarray:
    """Products over each subset of the keep-masks: bool [m, n] -> float64 [m, p]."""
    n = Z.shape[1]
    Zf = Z.astype(np.float64)
    if all(len(c) == 1 for c in subsets):
        return Zf
    X = np.empty((Z.shape[0], len(subsets)))
    X[:, :n] = Zf
    col = n
    for k in range(2, max(len(c) for c in subsets) + 1):
        idx = np.array([c for c in subsets if len(c) == k])  # [p_k, k]
        X[:, col : col + len(idx)] = Zf[:, idx].prod(axis=2)
        col += len(idx)
    return X


def _to_shapley(n: int, subsets: list[tuple[int, ...]]) -> np.ndarray:
    """G [n, p]: phi = G theta (a subset's coefficient split equally among its members)."""
    G = np.zeros((n, len(subsets)))
    for k, c in enumerate(subsets):
        G[list(c), k] = 1.0 / len(c)
    return G


def _inv_2x2(B: np.ndarray, root: bool) -> np.ndarray:
    """B^{-1/2} (``root``) or B^{-1} for symmetric positive 2 x 2 blocks [J, 2, 2] (eigenvalues
    floored at 1e-6)."""
    ev, vec = np.linalg.eigh(B)
    ev = np.clip(ev, 1e-6, None)
    return np.einsum("jab,jb,jcb->jac", vec, 1.0 / (np.sqrt(ev) if root else ev), vec)


def fit_pairs(
    Z: np.ndarray,
    Y: np.ndarray,
    stratum: np.ndarray,
    weight: np.ndarray,
    sampled: dict[int, tuple[int, int]],
    total: float,
    order: int = 1,
    ridge: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Shapley values of the k-additive fit to paired samples, with their covariance.

    Args:
        Z: representatives of the pairs, bool [J, n] (the pair is Z[j] and ~Z[j]).
        Y: v(z) - v(0) and v(~z) - v(0), float64 [J, 2].
        stratum: stratum index of each pair, int [J].
        weight: W_j = mu(s) N_h / m_h, float64 [J].
        sampled: stratum index -> (N_h, m_h) for the *sampled* strata (enumerated ones absent).
        total: v(N) - v(0) (the efficiency constraint).
        order: k of the k-additive model (1 = KernelSHAP's linear model).
        ridge: penalty on the coefficients of order >= 2, relative to the mean diagonal of
            the weighted normal matrix (0: none). The linear coefficients are not penalised, so
            the fit's Shapley values stay those of the game in expectation for any penalty.

    Returns:
        values [n], covariance [n, n] (NaN where a sampled stratum has one pair), stderr [n],
        info (parameters, the leverage correction, the largest pair leverage).
    """
    J, n = Z.shape
    subsets = _subsets(n, order)
    p = len(subsets)
    X = _features(np.concatenate([Z, ~Z]), subsets).reshape(2, J, p).transpose(1, 0, 2)
    A = np.einsum("j,jqa,jqb->ab", weight, X, X)  # [p, p]
    b = np.einsum("j,jqa,jq->a", weight, X, Y)  # [p]
    K = np.zeros((p + 1, p + 1))
    K[:p, :p] = A
    if ridge > 0 and p > n:
        K[np.arange(n, p), np.arange(n, p)] += ridge * float(np.trace(A)) / p
    K[:p, p] = 1.0
    K[p, :p] = 1.0
    Kinv = np.linalg.pinv(K)
    theta = (Kinv @ np.r_[b, total])[:p]
    M = Kinv[:p, :p]
    G = _to_shapley(n, subsets)
    values = G @ theta
    R = Y - X @ theta  # [J, 2] residuals of z and ~z
    keep = np.isin(stratum, list(sampled))  # enumerated strata add no variance
    Xs, Rs, Ws, hs = X[keep], R[keep], weight[keep], stratum[keep]
    H = Ws[:, None, None] * np.einsum("jqa,jra->jqr", Xs @ M, Xs)  # [J', 2, 2] hat blocks
    # residuals r_j (I - H_j)^{-1/2} (HC2, the linear fit) or (I - H_j)^{-1} (HC3)
    lev = np.eye(2)[None] - (H + H.transpose(0, 2, 1)) / 2
    Radj = np.einsum("jab,jb->ja", _inv_2x2(lev, root=order == 1), Rs)
    hc = "HC2" if order == 1 else "HC3"
    U = np.einsum("jqa,jq->ja", Xs, Radj)  # X_j^T r_j, [J', p]
    cov_theta = np.zeros((p, p))
    for h, (N_h, m_h) in sampled.items():
        sel = hs == h
        if m_h < 2:
            cov_theta[:] = np.nan
            break
        y = U[sel] * (Ws[sel] * m_h)[:, None]  # N_h mu X^T r
        cov_theta += (1.0 - m_h / N_h) * np.cov(y, rowvar=False, ddof=1).reshape(p, p) / m_h
    GM = G @ M
    cov = GM @ cov_theta @ GM.T
    stderr = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    info = {"order": order, "ridge": ridge, "n_params": p, "leverage_correction": hc}
    if len(H):
        info["max_pair_leverage"] = float(np.trace(H, axis1=1, axis2=2).max())
    return values, cov, stderr, info

"""EAVSS: blocks whose activation statistics differ between the items a model answers wrongly
("hallucinated", group H) and those it answers correctly (group C). Definitions: docs/eavss.md.

Per item i and block b, over one of two scopes of positions (``answer``: the positions whose
next-token distribution scores the model's chosen answer; ``sequence``: every real token of
context + chosen answer):

* av[i, b]: the unbiased variance across the d units of the item's token-mean vector (AV of one
  sample); small[i, b], entries[i, b]: entries with |a| < eps and all entries (AS's parts).

Per group G: AV^G_b = mean over its items of av[i, b]; AS^G_b = sum small / sum entries;
AVSS^G_b = AV^G_b / AS^G_b (NaN where AS^G_b = 0). Per block:

* HSAV_b = (AV^H - AV^C) / (AV^H + AV^C), HSS_b = (AS^H - AS^C) / (AS^H + AS^C);
* EAVSS_b = (AVSS^H - AVSS^C) / (AVSS^H + AVSS^C) = tanh(atanh(HSAV_b) - atanh(HSS_b)):
  positive where wrong answers come with relatively more variance and less sparsity.

Each score has a percentile bootstrap interval over items (resampled within each group).

Generative tasks (``task.generative``): items are split by the full model's greedily generated
answer (right when the 0/1 utility, ``exact_match`` by default, scores it 1) and each item's
sequence is its prompt followed by the tokens the model generated: :mod:`.generative`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..activations.collect import STATS_DTYPE, avss_ratio, block_streams, parse_stats_dtype
from ..activations.collect import stats_model as model_for_stats
from ..activations.dispatch import block_stats, resolve
from ..errors import UsageError
from ..models import SublayerModel
from ..models.inputs import pad_right
from ..progress import progress as progress_bar
from ..tasks.requests import Request

SCOPES = ("answer", "sequence")
SCORES = ("hsav", "hss", "eavss")


@dataclass
class ItemStats:
    """Per item and block statistics of one scope, each float64 [n_items, n_blocks]."""

    av: np.ndarray
    small: np.ndarray
    entries: np.ndarray
    nonfinite: np.ndarray


def answer_requests(requests: Sequence[Request], predictions: np.ndarray) -> list[Request]:
    """Each item's request for the choice the model picked (item order)."""
    by_key = {(r.group, r.unit): r for r in requests}
    return [by_key[(i, int(p))] for i, p in enumerate(predictions)]


def split_by_outcome(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of group C, indices of group H) from per-item correctness [n_items] (1 = right)."""
    correct = np.asarray(correct)
    if correct.ndim != 1 or not np.isin(correct, (0, 1)).all():
        raise UsageError(
            f"correct must be a 1-D array of 0/1 per item, got shape "
            f"{correct.shape} with values {np.unique(correct)[:5].tolist()}"
        )
    return np.flatnonzero(correct == 1), np.flatnonzero(correct == 0)


@torch.inference_mode()
def item_stats(
    model: SublayerModel,
    requests: Sequence[Request],
    eps: float = 1e-5,
    relative: bool = False,
    backend: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, ItemStats]:
    """Per-item, per-block statistics of each request's sequence, for both scopes, in one forward
    pass per batch (the statistics kernels of ``lf.stats``, one call per item and scope)."""
    backend = resolve(backend, model.device, model.dtype)
    n, n_blocks = len(requests), model.n_blocks
    out = {s: ItemStats(*(np.zeros((n, n_blocks)) for _ in range(4))) for s in SCOPES}
    starts = range(0, n, batch_size)
    starts = progress_bar(
        starts, desc="EAVSS statistics", unit="batch", enabled=progress and len(starts) > 1
    )
    for start in starts:
        chunk = requests[start : start + batch_size]
        ids, seq_mask = pad_right([list(r.input_ids) for r in chunk])  # [B, T] each
        ans_mask = torch.zeros_like(seq_mask)
        for row, r in enumerate(chunk):  # the answer is scored at the last len(targets) positions
            length = len(r.input_ids)
            ans_mask[row, length - len(r.targets) : length] = 1
        masks = {"answer": ans_mask.to(model.device), "sequence": seq_mask.to(model.device)}
        for block, x_in, x_out in block_streams(model, ids, seq_mask):
            for row in range(len(chunk)):
                for scope, mask in masks.items():
                    acc = block_stats(
                        x_in[row : row + 1],
                        x_out[row : row + 1],
                        mask[row : row + 1],
                        eps,
                        relative,
                        backend,
                    )
                    st, i = out[scope], start + row
                    st.av[i, block] = acc["av_sum"]
                    st.small[i, block] = acc["small"]
                    st.entries[i, block] = acc["n_entries"]
                    st.nonfinite[i, block] = acc["nonfinite"]
    return out


def _contrast(h: np.ndarray, c: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h + c != 0, (h - c) / np.where(h + c != 0, h + c, 1.0), np.nan)


def group_scores(st: ItemStats, h_idx: np.ndarray, c_idx: np.ndarray) -> dict[str, np.ndarray]:
    """AV, AS, AVSS of both groups and HSAV, HSS, EAVSS per block (float64 [n_blocks] each)."""
    out = {}
    for name, idx in (("h", h_idx), ("c", c_idx)):
        av = st.av[idx].mean(0)
        entries = st.entries[idx].sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            as_ = np.where(entries > 0, st.small[idx].sum(0) / np.maximum(entries, 1), np.nan)
            out[f"av_{name}"], out[f"as_{name}"] = av, as_
        out[f"avss_{name}"] = avss_ratio(av, as_)
    out["hsav"] = _contrast(out["av_h"], out["av_c"])
    out["hss"] = _contrast(out["as_h"], out["as_c"])
    out["eavss"] = _contrast(out["avss_h"], out["avss_c"])
    return out


def bootstrap(
    st: ItemStats,
    h_idx: np.ndarray,
    c_idx: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Percentile intervals (lo, hi) per block for HSAV, HSS and EAVSS: items resampled with
    replacement within each group. NaN where fewer than half the resamples define the score."""
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in SCORES}
    for _ in range(n_boot):
        h = rng.choice(h_idx, size=len(h_idx), replace=True)
        c = rng.choice(c_idx, size=len(c_idx), replace=True)
        sc = group_scores(st, h, c)
        for k in SCORES:
            draws[k].append(sc[k])
    alpha = (1 - level) / 2
    out = {}
    for k in SCORES:
        d = np.array(draws[k])  # [n_boot, n_blocks]
        d = np.where(np.isfinite(d), d, np.nan)
        defined = np.isfinite(d).mean(0) >= 0.5
        lo, hi = np.full(d.shape[1], np.nan), np.full(d.shape[1], np.nan)
        if defined.any():
            lo[defined], hi[defined] = np.nanquantile(d[:, defined], [alpha, 1 - alpha], axis=0)
        out[k] = (lo, hi)
    return out


@dataclass
class EAVSSResult:
    """EAVSS per block for both scopes, with bootstrap intervals and the group split."""

    scopes: dict[str, dict[str, np.ndarray]]  # scope -> score name -> [n_blocks]
    intervals: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # scope -> score -> (lo, hi)
    correct: np.ndarray  # [n_items] 1 = answered right (group C)
    predictions: np.ndarray  # [n_items] chosen choice (generative: the generated text, object)
    utility: str
    dtype: str
    eps: float
    relative: bool
    backend: str
    level: float = 0.95
    meta: dict = field(default_factory=dict)
    generations: list[dict] | None = None  # generative: one row per item (.generative.item_rows)

    @property
    def n_blocks(self) -> int:
        return len(self.scopes["answer"]["eavss"])

    def top(self, k: int, scope: str = "answer", lowest: bool = False) -> list[int]:
        """The k blocks with the highest EAVSS (``lowest=True``: the lowest); undefined ones
        last."""
        if not 0 < k <= self.n_blocks:
            raise UsageError(f"k must be in [1, {self.n_blocks}], got {k}")
        e = self.scopes[_check_scope(scope)]["eavss"]
        key = np.where(np.isfinite(e), e if lowest else -e, np.inf)
        return sorted(np.argsort(key, kind="stable")[:k].tolist())

    def to_dict(self) -> dict:
        return {
            "utility": self.utility,
            "dtype": self.dtype,
            "eps": self.eps,
            "relative": self.relative,
            "backend": self.backend,
            "level": self.level,
            "n_correct": int(self.correct.sum()),
            "n_wrong": int(len(self.correct) - self.correct.sum()),
            "scopes": {s: {k: v.tolist() for k, v in sc.items()} for s, sc in self.scopes.items()},
            "intervals": {
                s: {k: [lo.tolist(), hi.tolist()] for k, (lo, hi) in iv.items()}
                for s, iv in self.intervals.items()
            },
            **self.meta,
        }


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise UsageError(f"unknown scope {scope!r}; choose from {list(SCOPES)}")
    return scope


def eavss(
    model: SublayerModel,
    task,
    utility: str | None = None,
    stats_dtype: str | torch.dtype | None = STATS_DTYPE,
    eps: float = 1e-5,
    relative: bool = False,
    backend: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    game=None,
) -> EAVSSResult:
    """Split ``task``'s items by whether the full model answers them right (``utility``: acc,
    acc_norm or acc_bytes; None: acc_norm), then score every block (see the module docstring).
    On a generative task: ``exact_match`` (None) or another 0/1 utility of the generated answers,
    the statistics on prompt + generated tokens (:mod:`.generative`); one empty group raises
    :class:`~.generative.OneGroupEmpty` (a UsageError carrying the split).

    stats_dtype: the dtype of the statistics pass (default "bf16", as the AVSS authors ran: in
    fp32 almost no residual entry is below 1e-5, see docs/stats.md); "model" (or None) runs the
    model as it is, another dtype a copy of the model in it (as in ``lf.stats``).
    game: an existing ``lf.Game`` on ``task`` to reuse its cached evaluations.
    """
    from ..evaluation.game import Game
    from ..tasks.prompts import is_generative
    from ..tasks.scoring import ACCURACY_UTILITIES

    if is_generative(task):
        from . import generative as gen

        utility = gen.check_utility(task, utility)
        parse_stats_dtype(stats_dtype)  # a bad name fails before the generation
        got = gen.outcomes(model, task, utility, game=game, progress=progress)
        correct, reqs = got.correct, got.requests
        predictions = np.asarray(got.texts, dtype=object)
        record, rows = gen.split_record(task, got), gen.item_rows(task, correct, got.texts)
        c_idx, h_idx = split_by_outcome(correct)
        if not len(c_idx) or not len(h_idx):
            raise gen.OneGroupEmpty(gen.empty_group_message(task, record), record, rows)
        extra = {"generative": record}
    else:
        utility = "acc_norm" if utility is None else utility
        if utility not in ACCURACY_UTILITIES:
            raise UsageError(
                f"utility must be one of {ACCURACY_UTILITIES} (a right/wrong split), got "
                f"{utility!r}"
            )
        parse_stats_dtype(stats_dtype)  # a bad name fails before the evaluation
        game = game or Game(model, task, utility=utility, progress=progress)
        loglik = game.loglik(game.full_mask()[None])[0]
        predictions = game.scorer.predictions(loglik, utility)
        correct = (predictions == game.scorer.gold).astype(int)
        c_idx, h_idx = split_by_outcome(correct)
        if not len(c_idx) or not len(h_idx):
            raise UsageError(
                f"the model answers {len(c_idx)} of {len(correct)} items right: both "
                "groups need items (use a harder or easier task, or more items)"
            )
        reqs = answer_requests(game.requests, predictions)
        extra, rows = {}, None
    stats_model = model_for_stats(model, stats_dtype)
    per_scope = item_stats(
        stats_model,
        reqs,
        eps=eps,
        relative=relative,
        backend=backend,
        batch_size=batch_size,
        progress=progress,
    )
    scores = {s: group_scores(st, h_idx, c_idx) for s, st in per_scope.items()}
    intervals = {
        s: bootstrap(st, h_idx, c_idx, n_boot=n_boot, seed=seed) for s, st in per_scope.items()
    }
    nonfinite = {s: int(st.nonfinite.sum()) for s, st in per_scope.items()}
    return EAVSSResult(
        scopes=scores,
        intervals=intervals,
        correct=correct,
        predictions=predictions,
        utility=utility,
        dtype=str(stats_model.dtype).replace("torch.", ""),
        eps=eps,
        relative=relative,
        backend=resolve(backend, stats_model.device, stats_model.dtype),
        meta={
            "task": task.name,
            "n_items": len(correct),
            "nonfinite": nonfinite,
            "accuracy": float(correct.mean()),
            **extra,
        },
        generations=rows,
    )

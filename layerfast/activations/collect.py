"""``lf.stats``: one streaming pass of per-block activation statistics (AVSS, BI, angular, norms).

The forward loop of :class:`~layerfast.models.SublayerModel` runs with every player kept; after
each block, its input and output residual streams are folded into fp64 accumulators by
:func:`layerfast.activations.dispatch.block_stats` (the reference's accumulators,
:mod:`layerfast.activations.reference`) and dropped, so memory grows with blocks x hidden, not
with tokens.

Definitions (per block i, padding excluded; the AVSS authors' script includes padding):

* AV_i: per sample, the mean over its tokens of the block output gives a vector in R^d; AV_i is
  the unbiased variance across the d units of that vector, averaged over samples.
* AS_i: fraction of output entries with |a| < eps, counted in the dtype of the statistics pass,
  ``stats_dtype`` (default bf16, as the AVSS authors ran: in fp32 almost no residual entry is
  below 1e-5, see docs/stats.md; reported as ``dtype``); with ``relative=True`` the threshold is
  eps x the token's RMS.
* AVSS_i = AV_i / AS_i, NaN where AS_i = 0 (listed in ``as_zero``, with a
  :class:`~layerfast.errors.LayerfastWarning`: the ratio is undefined, not infinite);
  NAVSS_i = AVSS_i / sum of the defined AVSS.
* BI_i (ShortGPT's Block Influence) = 1 - mean over tokens of cos(block input, block output);
  angular_i = mean of arccos(cos) / pi; ``angular_last`` uses each sample's last token (as
  Gromov et al.); ``norm`` the mean L2 norm of the output; ``channel_var`` the mean over channels
  of the per-channel variance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UsageError, warn
from ..models import SublayerModel, copy_as, parse_dtype
from ..models.inputs import pad_right
from ..progress import progress as progress_bar
from .dispatch import block_stats, resolve
from .reference import empty, merge

METRICS = ("avss", "bi", "angular", "norm")
STATS_DTYPE = "bf16"  # the default dtype of the statistics pass


def stats_model(model: SublayerModel, stats_dtype: str | torch.dtype | None) -> SublayerModel:
    """The model the statistics pass runs: ``model`` itself for ``stats_dtype`` "model" or None
    or the model's own dtype, else a copy cast to ``stats_dtype`` (a name accepted by
    :func:`layerfast.models.parse_dtype`, e.g. "bf16", "fp16", "fp32", or a torch dtype). The
    copy (:func:`layerfast.models.copy_as`) holds the weights once more in that dtype (half the
    fp32 size for bf16; a full-precision deep copy while it is made) and is freed when the
    caller drops it."""
    dtype = parse_stats_dtype(stats_dtype)
    return model if dtype is None or dtype == model.dtype else copy_as(model, dtype)


def parse_stats_dtype(stats_dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The torch dtype ``stats_dtype`` names, None for "model" (or None); raises
    :class:`~layerfast.errors.UsageError` for an unknown name."""
    if stats_dtype is None or (isinstance(stats_dtype, str) and stats_dtype.lower() == "model"):
        return None
    return parse_dtype(stats_dtype)


def stats(
    model: SublayerModel,
    texts: Sequence[str],
    metrics: Sequence[str] = METRICS,
    backend: str = "auto",
    eps: float = 1e-5,
    relative: bool = False,
    batch_size: int = 8,
    max_length: int = 512,
    progress: bool = True,
    stats_dtype: str | torch.dtype | None = STATS_DTYPE,
) -> dict:
    """Per-block statistics over ``texts``: a dict of float64 arrays [n_blocks] plus metadata.

    Keys: av, as, avss, navss, bi, angular, angular_last, norm, channel_var, n_tokens;
    as_zero (blocks where AS = 0), nonfinite (NaN/inf output entries per block), dtype (the
    dtype the pass ran in, which AS was counted in), eps, relative, backend (the one that ran:
    ``backend="auto"`` reads ``LAYERFAST_BACKEND``, then picks Triton on CUDA, the C++ extension
    on the CPU, else the PyTorch reference; see :mod:`layerfast.activations.dispatch`).

    stats_dtype: the dtype of the pass (default "bf16", as the AVSS authors ran); "model" (or
    None) runs the model as it is. Another dtype than the model's runs a copy of the model in
    it (see :func:`stats_model`). Blocks with AS = 0 (AVSS NaN) raise a
    :class:`~layerfast.errors.LayerfastWarning` naming them.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise UsageError(f"unknown metric(s) {sorted(unknown)}; choose from {list(METRICS)}")
    if isinstance(texts, str) or not texts:
        raise UsageError("texts must be a non-empty sequence of strings")
    if model.tokenizer is None:
        raise UsageError("this model has no tokenizer: pass one to lf.load(..., tokenizer=...)")
    model = stats_model(model, stats_dtype)
    backend = resolve(backend, model.device, model.dtype)
    d = model.config.hidden_size
    accs = [empty(d) for _ in range(model.n_blocks)]
    batches = list(_batches(model, texts, batch_size, max_length))
    with torch.inference_mode():
        for ids, mask in _progress(batches, progress):
            device_mask = mask.to(model.device)
            for block, x_in, x_out in block_streams(model, ids, mask):
                acc = block_stats(x_in, x_out, device_mask, eps, relative, backend)
                accs[block] = merge(accs[block], acc)
    out = summarize(
        accs,
        eps=eps,
        relative=relative,
        dtype=str(model.dtype).replace("torch.", ""),
        backend=backend,
    )
    if "avss" in metrics and out["as_zero"]:
        _warn_as_zero(out)
    return out


def _warn_as_zero(st: dict) -> None:
    """One :class:`~layerfast.errors.LayerfastWarning` naming the blocks where AS = 0."""
    threshold = f"|a| < {st['eps']:g}" + (" x the token's RMS" if st["relative"] else "")
    remedy = "raise eps or pass relative=True"
    if st["dtype"] in ("float32", "float64"):
        remedy = "count in bf16 (stats_dtype='bf16', the default), " + remedy
    warn(
        f"AS = 0 in block(s) {st['as_zero']}: no output entry has {threshold} in "
        f"{st['dtype']}, so AVSS is NaN there; {remedy}",
    )


def block_streams(model: SublayerModel, ids: torch.Tensor, mask: torch.Tensor):
    """Run the forward loop with every player kept; yield (block, x_in, x_out) after each block,
    the residual stream before and after it, [B, T, d] in the model's dtype. Only the current
    pair is alive: consume it before asking for the next."""
    inputs = model.prepare(ids, mask)
    state = model.initial_state(inputs)
    for block in range(model.n_blocks):
        state = model.place(state, block)  # x_in and x_out on the block's device
        x_in = model.residual(state)  # [B, T, d]
        for player in model.players_of(block):
            state = model.step(player, state, inputs, True)
        yield block, x_in, model.residual(state)


def avss(model: SublayerModel, texts: Sequence[str], **options) -> np.ndarray:
    """AVSS per block, float64 [n_blocks] (NaN where AS = 0, with a warning):
    ``lf.stats(...)["avss"]``, for ``lf.prune(model, lf.avss(model, texts))``. Options as for
    :func:`stats` (counted in bf16 unless ``stats_dtype`` says otherwise); use :func:`stats`
    for the dtype, the backend and ``as_zero`` that come with it."""
    return stats(model, texts, metrics=("avss",), **options)["avss"]


def avss_ratio(av: np.ndarray, as_: np.ndarray) -> np.ndarray:
    """AV / AS, NaN where AS = 0 (undefined, not infinite)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(as_ > 0, av / np.where(as_ > 0, as_, 1.0), np.nan)


def summarize(
    accs: list[dict], eps: float, relative: bool, dtype: str, backend: str = "torch"
) -> dict:
    """Turn per-block accumulators into the metric arrays."""
    get = lambda k: np.array([a[k] for a in accs], dtype=np.float64)  # noqa: E731
    n_tok, n_ent, n_smp = get("n_tokens"), get("n_entries"), get("n_samples")
    with np.errstate(divide="ignore", invalid="ignore"):
        av = get("av_sum") / n_smp
        as_ = get("small") / n_ent
        avss = avss_ratio(av, as_)
        total = np.nansum(avss)
        navss = avss / total if total > 0 else np.full_like(avss, np.nan)
        cos = get("cos_sum") / n_tok
        ch_var = np.array([float(a["ch_m2"].mean()) for a in accs]) / np.maximum(n_tok - 1, 1)
        out = {
            "av": av,
            "as": as_,
            "avss": avss,
            "navss": navss,
            "bi": 1.0 - cos,
            "angular": get("angle_sum") / n_tok,
            "angular_last": get("last_angle_sum") / n_smp,
            "norm": get("norm_sum") / n_tok,
            "channel_var": ch_var,
            "n_tokens": n_tok,
        }
    out.update(
        {
            "as_zero": [int(i) for i in np.flatnonzero(as_ == 0)],
            "nonfinite": get("nonfinite").astype(int).tolist(),
            "dtype": dtype,
            "eps": eps,
            "relative": relative,
            "backend": backend,
            "padding": "excluded",
        }
    )
    return out


def _batches(model: SublayerModel, texts: Sequence[str], batch_size: int, max_length: int):
    tok = model.tokenizer
    encoded = [list(tok.encode(t))[:max_length] for t in texts]
    encoded = [e for e in encoded if e]
    if not encoded:
        raise UsageError("no text encodes to any token")
    for start in range(0, len(encoded), batch_size):
        yield pad_right(encoded[start : start + batch_size])


def _progress(seq, show: bool):
    return progress_bar(seq, desc="statistics", unit="batch", enabled=show and len(seq) >= 2)

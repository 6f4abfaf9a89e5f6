"""A statistics pass against a plain forward, and against keeping every hidden state.

One batch of ``batch`` x ``seq`` random token ids (every token real) through the model, each way
timed (median of the repeats after a warm-up) with its peak memory above what the model holds
(device memory on CUDA, the process's resident set on a CPU):

* ``hf forward``: ``hf_model.model(...)``, the decoder stack alone, keeping nothing;
* ``forward loop``: layerfast's forward loop (:func:`~layerfast.activations.collect.block_streams`)
  with every sublayer kept, keeping nothing: what the statistics pass runs;
* ``statistics``: the same loop with :func:`~layerfast.activations.dispatch.block_stats` after
  each block (the ``auto`` backend) and the accumulators merged: ``lf.stats`` without tokenising;
* ``keep hidden``: ``output_hidden_states=True``, every state to NumPy, the statistics in NumPy,
  as the peer scripts do (memory: the device's peak, plus the host copy noted separately).

Overhead = time(statistics) / time(forward) - 1, against each forward.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from ..activations.collect import block_streams
from ..activations.dispatch import block_stats, resolve
from ..activations.reference import empty, merge
from . import rows
from .machine import PeakMemory, times


def numpy_statistics(hidden: list[np.ndarray], keep: np.ndarray, eps: float) -> dict:
    """What a script does with kept hidden states [B, T, d] (float32 arrays) and a mask [B, T]:
    per block AV, AS, BI, angular distance and output norm, in NumPy."""
    keep = keep.astype(bool)
    out = {k: [] for k in ("av", "as", "bi", "angular", "norm")}
    for x_in, x_out in zip(hidden[:-1], hidden[1:]):
        a, b = x_out[keep], x_in[keep]  # [N, d]
        means = (x_out * keep[..., None]).sum(1) / keep.sum(1)[:, None]  # [B, d]
        out["av"].append(float(means.var(axis=1, ddof=1).mean()))
        out["as"].append(float((np.abs(a) < eps).mean()))
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = (a * b).sum(1) / np.maximum(norms, 1e-12)
        out["bi"].append(float(1 - cos.mean()))
        out["angular"].append(float((np.arccos(np.clip(cos, -1, 1)) / np.pi).mean()))
        out["norm"].append(float(np.linalg.norm(a, axis=1).mean()))
    return out


def ways(model, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """Name -> call of each way (module docstring); ids and mask [B, T] on the model's device."""
    backend = resolve("auto", model.device, model.dtype)
    d = model.config.hidden_size

    @torch.inference_mode()
    def hf_forward():
        model.hf_model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)

    @torch.inference_mode()
    def forward_loop():
        for _ in block_streams(model, ids, mask):
            pass

    @torch.inference_mode()
    def with_statistics():
        accs = [empty(d) for _ in range(model.n_blocks)]
        for block, x_in, x_out in block_streams(model, ids, mask):
            accs[block] = merge(accs[block], block_stats(x_in, x_out, mask, 1e-5, False, backend))
        return accs

    @torch.inference_mode()
    def keep_hidden():
        out = model.hf_model.base_model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
        )
        hidden = [h.float().cpu().numpy() for h in out.hidden_states]
        return numpy_statistics(hidden, mask.cpu().numpy(), 1e-5)

    return {
        "hf forward": hf_forward,
        "forward loop": forward_loop,
        f"statistics [{backend}]": with_statistics,
        "keep hidden [numpy]": keep_hidden,
    }


def measure(
    model, batch: int, seq: int, repeat: int, budget_s: float, bar=None
) -> tuple[dict, list[dict], list[str]]:
    """(summary, rows, printed lines) of the overhead step."""
    device = model.device
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, int(model.config.vocab_size), (batch, seq), generator=g).to(device)
    mask = torch.ones_like(ids)
    calls = ways(model, ids, mask)
    timed, peaks = {}, {}
    for name, fn in calls.items():
        with PeakMemory(device) as peak:
            fn()  # also the warm-up of the timed calls
        peaks[name] = peak.mb
        timed[name] = times(fn, device, repeat, budget_s / len(calls), warm_up=False)
        if bar is not None:
            bar.update(1)
    med = {name: statistics.median(s) for name, s in timed.items()}
    stats_name = next(n for n in calls if n.startswith("statistics"))
    n_tokens = batch * seq
    kept_mb = (model.n_blocks + 1) * n_tokens * model.config.hidden_size * 4 / 2**20
    dtype_name = str(model.dtype).removeprefix("torch.")
    lines = [
        f"statistics pass vs forward: {model.name}, {batch} x {seq} = {n_tokens} tokens, "
        f"{dtype_name}, {device} (keep hidden also holds {kept_mb:.0f} MB of fp32 states on "
        "the host)",
        f"  {'way':<26} {'s':>8} {'tokens/s':>10} {'peak MB':>9} {'vs hf forward':>14}",
    ]
    summary: dict = {"tokens": n_tokens, "host_hidden_mb": kept_mb}
    for name in calls:
        peak = peaks[name]
        lines.append(
            f"  {name:<26} {med[name]:8.3f} {n_tokens / med[name]:10.0f} "
            f"{'n/a' if peak is None else f'{peak:.0f}':>9} "
            f"{med[name] / med['hf forward']:13.3f}x"
        )
        summary[name] = {"s": med[name], "peak_mb": peak, "tokens_per_s": n_tokens / med[name]}
        common = ("stats_overhead", name, f"{model.name} {batch}x{seq}", dtype_name, str(device))
        out_rows = [rows.row(*common, "s", timed[name])]
        if peak is not None:
            out_rows.append(rows.row(*common, "peak_MB", peak))
        summary.setdefault("_rows", []).extend(out_rows)
    for base in ("hf forward", "forward loop"):
        summary[f"overhead_vs_{base.replace(' ', '_')}"] = med[stats_name] / med[base] - 1
    lines.append(
        f"  statistics overhead: {100 * summary['overhead_vs_hf_forward']:+.1f}% vs the HF "
        f"forward, {100 * summary['overhead_vs_forward_loop']:+.1f}% vs the forward loop"
    )
    return summary, summary.pop("_rows"), lines

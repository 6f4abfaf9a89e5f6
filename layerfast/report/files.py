"""Write sweep results: strict JSON, CSV and PNG files, one ``save_*`` per CLI verb's outputs.

Every figure is written twice: the PNG and, beside it, the same figure as SVG (vector, for
papers; :func:`with_svg`).

Every JSON file goes through :func:`write_json`: NaN and ±inf become ``null`` and the file is
strict JSON (no bare ``NaN``), so any JSON parser reads it.

Every file is written through :func:`layerfast.paths.atomic_write` (a temporary name in the same
folder, renamed into place once complete): a failed write leaves the old file or none, never a
truncated one, and raises one :class:`~layerfast.errors.OutputError` naming the path and why.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..estimators.ablation import AblationResult
from ..paths import atomic_write
from ..paths import write_text as _write_text
from .plots import plot_ablation, plot_blocks, plot_convergence, plot_search, plot_shapley

# the per-block statistics of ``lf.stats`` written as CSV columns by ``save_avss``
AVSS_COLUMNS = ("av", "as", "avss", "navss", "bi", "angular", "angular_last", "norm", "channel_var")
EAVSS_COLUMNS = ("hsav", "hss", "eavss", "av_h", "av_c", "as_h", "as_c")
EAVSS_INTERVALS = ("hsav", "hss", "eavss")


def environment() -> dict[str, Any]:
    """Date, Python/torch/transformers versions, machine and device, for the record."""
    import torch
    import transformers

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars as lists and numbers, tuples as lists, and NaN/±inf
    as None, recursively through dicts and lists. Other types are returned as they are."""
    if isinstance(obj, dict):
        return {
            (k.item() if isinstance(k, np.generic) else k): to_jsonable(v) for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def with_svg(draw: Callable[[Path], Any], png: Path) -> list[Path]:
    """``draw(png)`` and ``draw(png.with_suffix(".svg"))`` (matplotlib picks the format from the
    suffix): ``[png, svg]``."""
    svg = png.with_suffix(".svg")
    draw(png)
    draw(svg)
    return [png, svg]


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as strict, indented JSON (NaN/±inf as null) to ``path``; return it.

    Raises TypeError for a value JSON cannot hold, and ValueError (instead of writing invalid
    JSON) should a non-finite number get through.
    """
    text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False)
    return _write_text(path, text + "\n")


def write_csv(path: Path, rows: list[dict]) -> Path:
    """One row per dict; the columns are the first dict's keys."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_ablation(out: Path, abl: AblationResult, meta: dict) -> list[Path]:
    """``ablation.json``, ``ablation.csv``, ``ablation.png`` and ``ablation.svg`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    title = f"{meta.get('model', '')} on {meta.get('task', '')}: single-sublayer ablation"
    return [
        write_json(out / "ablation.json", {**meta, **abl.to_dict()}),
        write_csv(out / "ablation.csv", abl.rows()),
        *with_svg(
            lambda path: plot_ablation(
                abl.players,
                abl.values,
                abl.full,
                abl.chance,
                path,
                title=title,
                utility=abl.utility,
            ),
            out / "ablation.png",
        ),
    ]


def save_shapley(out: Path, res: Any, meta: dict, stem: str = "shapley") -> list[Path]:
    """``STEM.json``, ``STEM.csv``, ``STEM.png`` and ``STEM.svg`` in ``out`` for a ShapleyResult
    ``res``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {"player": p, "value": float(v), "stderr": float(s)}
        for p, v, s in zip(res.players, res.values, res.stderr, strict=True)
    ]
    if getattr(res, "stderr_items", None) is not None:  # the item bootstrap's columns
        for row, si, st in zip(rows, res.stderr_items, res.stderr_total, strict=True):
            row.update(stderr_items=float(si), stderr_total=float(st))
    title = f"{meta.get('model', '')} on {meta.get('task', '')}: {res.method} Shapley"
    error = res.stderr
    if getattr(res, "item_rank_counts", None) is not None:  # the item bootstrap ran
        error = res.stderr_total
        title += " (error bars: coalition sampling and items)"
    return [
        write_json(out / f"{stem}.json", {**meta, **res.to_dict()}),
        write_csv(out / f"{stem}.csv", rows),
        *with_svg(
            lambda path: plot_shapley(res.players, res.values, error, path, title=title),
            out / f"{stem}.png",
        ),
    ]


def save_convergence(
    out: Path, records: list[dict], meta: dict, players: Sequence | None = None
) -> list[Path]:
    """``convergence.png`` and ``.svg`` (estimates vs budget) and ``convergence.json`` in
    ``out``."""
    return [
        *with_svg(
            lambda path: plot_convergence(records, path, players=players), out / "convergence.png"
        ),
        write_json(out / "convergence.json", {**meta, "records": records}),
    ]


def avss_rows(st: dict, n_blocks: int) -> list[dict]:
    """One dict per block: ``block`` and the :data:`AVSS_COLUMNS` of ``lf.stats`` output."""
    return [{"block": i, **{k: float(st[k][i]) for k in AVSS_COLUMNS}} for i in range(n_blocks)]


def save_avss(out: Path, st: dict, model_name: str, n_blocks: int, eps: float) -> list[Path]:
    """``avss.json``, ``avss.csv`` and ``avss.png``/``.svg`` (NAVSS per block) in ``out``."""
    payload = {"model": model_name, "environment": environment(), **st}
    return [
        write_json(out / "avss.json", payload),
        write_csv(out / "avss.csv", avss_rows(st, n_blocks)),
        *with_svg(
            lambda path: plot_blocks(
                st["navss"],
                path,
                ylabel="NAVSS",
                title=f"{model_name}: NAVSS per block ({st['dtype']}, eps={eps})",
            ),
            out / "avss.png",
        ),
    ]


def save_prune(out: Path, result: dict, model_name: str) -> list[Path]:
    """``prune.json`` (``result`` holds ``by``, ``scores``, ``removed``, ...) and ``prune.png``
    / ``.svg``."""
    by = result["by"]
    return [
        write_json(out / "prune.json", result),
        *with_svg(
            lambda path: plot_blocks(
                result["scores"],
                path,
                ylabel=by,
                highlight=result["removed"],
                title=f"{model_name}: {by} per block (removed: grey)",
            ),
            out / "prune.png",
        ),
    ]


def save_search(out: Path, result: dict, model_name: str) -> list[Path]:
    """A pruning search: ``prune.json`` (``result``: the metadata and
    ``SearchResult.to_dict()``), ``prune.csv`` (one row per step: the unit removed, v and its
    interval, each held-out task's v and retention) and ``prune.png`` / ``.svg``."""
    path, rows = result["search"], []
    for i in range(len(path["values"])):
        row = {"step": i, "removed": "" if i == 0 else result["order"][i - 1]}
        for name, values in [("search", path), *result["held_out"].items()]:
            for key in ("values", "lo", "hi", "retained", "retained_lo", "retained_hi"):
                column = key.replace("values", "v")
                row[f"{name}_{column}"] = None if values[key] is None else values[key][i]
        rows.append(row)
    title = (
        f"{model_name}: {result['method']} removal of {result['unit']}s on {result['task']} "
        f"({path['utility']})"
    )
    return [
        write_json(out / "prune.json", result),
        write_csv(out / "prune.csv", rows),
        *with_svg(lambda p: plot_search(result, p, title), out / "prune.png"),
    ]


def eavss_rows(res: Any) -> list[dict]:
    """One dict per (scope, block) of an EAVSSResult: the scores and their interval bounds."""
    return [
        {
            "scope": s,
            "block": b,
            **{k: float(res.scopes[s][k][b]) for k in EAVSS_COLUMNS},
            **{f"{k}_lo": float(res.intervals[s][k][0][b]) for k in EAVSS_INTERVALS},
            **{f"{k}_hi": float(res.intervals[s][k][1][b]) for k in EAVSS_INTERVALS},
        }
        for s in res.scopes
        for b in range(res.n_blocks)
    ]


def save_eavss(
    out: Path, res: Any, meta: dict, scope: str, k: int, model_name: str, wall_s: float
) -> list[Path]:
    """``eavss.json``, ``eavss.csv`` and ``eavss.png``/``.svg`` (EAVSS per block of ``scope``
    with its intervals, the top ``k`` blocks in grey) in ``out``; ``wall_s`` in seconds."""
    title = (
        f"{model_name}: EAVSS per block ({scope} positions, {int(res.correct.sum())} right / "
        f"{int((1 - res.correct).sum())} wrong, {res.dtype}); top {k} in grey"
    )
    return [
        write_json(out / "eavss.json", {**meta, **res.to_dict(), "wall_s": wall_s}),
        write_csv(out / "eavss.csv", eavss_rows(res)),
        *with_svg(
            lambda path: plot_blocks(
                res.scopes[scope]["eavss"],
                path,
                ylabel="EAVSS",
                interval=res.intervals[scope]["eavss"],
                highlight=res.top(k, scope),
                title=title,
            ),
            out / "eavss.png",
        ),
    ]


def save_finetune(out: Path, payload: dict, table: str) -> list[Path]:
    """``finetune.json`` (``payload`` holds ``rows``), ``finetune.csv`` and ``finetune.md``."""
    rows = [{**r, "blocks": " ".join(map(str, r["blocks"]))} for r in payload["rows"]]
    _write_text(out / "finetune.md", table + "\n")
    return [
        write_json(out / "finetune.json", payload),
        write_csv(out / "finetune.csv", rows),
        out / "finetune.md",
    ]

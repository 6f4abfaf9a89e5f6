"""Write sweep results as JSON, CSV, PNG and a short Markdown summary."""
from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..estimators.ablation import AblationResult
from .plots import plot_ablation, plot_shapley


def environment() -> dict[str, Any]:
    import torch
    import transformers

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def write_json(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_ablation(out: Path, abl: AblationResult, meta: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    title = f"{meta.get('model', '')} on {meta.get('task', '')}: single-sublayer ablation"
    return [write_json(out / "ablation.json", {**meta, **abl.to_dict()}),
            write_csv(out / "ablation.csv", abl.rows()),
            plot_ablation(abl.players, abl.values, abl.full, abl.chance, out / "ablation.png",
                          title=title, utility=abl.utility)]


def save_shapley(out: Path, res, meta: dict, stem: str = "shapley") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"player": p, "value": float(v), "stderr": float(s)}
            for p, v, s in zip(res.players, res.values, res.stderr)]
    title = f"{meta.get('model', '')} on {meta.get('task', '')}: {res.method} Shapley"
    return [write_json(out / f"{stem}.json", {**meta, **res.to_dict()}),
            write_csv(out / f"{stem}.csv", rows),
            plot_shapley(res.players, res.values, res.stderr, out / f"{stem}.png", title=title)]


def ablation_table(abl: AblationResult, res=None, top: int | None = None) -> str:
    """A plain-text table: one row per player (optionally with Shapley values)."""
    without = "v(N\\{l})"
    head = f"{'player':>8} {without:>9} {'drop':>8}" + (f" {'shapley':>9} {'± s.e.':>8}" if res else "")
    lines = [head, "-" * len(head)]
    order = range(len(abl.players))
    if top is not None:
        order = np.argsort(-abl.drops, kind="stable")[:top]
    cornerstones = set(abl.cornerstones)
    for i in order:
        line = f"{abl.players[i]:>8} {abl.values[i]:9.3f} {abl.drops[i]:8.3f}"
        if res is not None:
            line += f" {res.values[i]:9.4f} {res.stderr[i]:8.4f}"
        lines.append(line + ("  <- cornerstone" if abl.players[i] in cornerstones else ""))
    return "\n".join(lines)


def markdown_summary(meta: dict, abl: AblationResult, res, wall_s: float) -> str:
    chance = f"{abl.chance:.3f}" if abl.chance is not None else "n/a"
    lines = [f"# layerfast report: {meta['model']} on {meta['task']}", "",
             f"- items: {meta['n_items']}, utility: {abl.utility}, dtype: {meta['dtype']}",
             f"- full model v(N) = {abl.full:.4f}; chance = {chance}; cornerstone margin = "
             f"{f'{abl.margin:.3f}' if abl.margin is not None else 'n/a'}",
             f"- cornerstones (removal drops the utility to chance): {', '.join(abl.cornerstones) or 'none'}",
             f"- Shapley: {res.method} (window {res.info.get('window', '-')}), "
             f"{res.n_evaluations} coalitions; efficiency gap {res.efficiency_gap:.4f}",
             f"- wall time {wall_s:.0f} s; {meta['environment']['machine']}, {meta['environment']['date']}",
             "", "![ablation](ablation.png)", "", "![shapley](shapley.png)", "", "```",
             ablation_table(abl, res), "```", ""]
    return "\n".join(lines)

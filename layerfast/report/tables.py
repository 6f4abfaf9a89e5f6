"""Plain-text and Markdown tables and summaries that the CLI prints or writes (``finetune.md``),
and the report of one model on one task as a document (:func:`pair_document`: ``report.md`` and
``report.html``, :mod:`layerfast.report.document`) with its provenance lines and player rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

from ..estimators.ablation import NOT_ENOUGH_ITEMS, AblationResult
from .document import Bullets, Document, Figure, Heading, Table, render_markdown
from .significance import significance_blocks

TOP_K = 5  # the rank-stability column: how often a player is among the top 5 Shapley values
VERSIONS = ("numpy", "matplotlib", "accelerate", "triton")  # named in the provenance line


def ablation_table(abl: AblationResult, res: Any = None, top: int | None = None) -> str:
    """A plain-text table: one row per player (optionally with Shapley values); with the item
    bootstrap, the drop's item-level standard error, the Shapley value's total standard error
    (coalition sampling and items) and how often the player is in the top 5 across the item
    resamples."""
    without = "v(N\\{l})"
    items = getattr(abl, "item_bootstrap", 0) > 0
    head = f"{'player':>8} {without:>9} {'drop':>8}" + (f" {'± items':>8}" if items else "")
    boot = res is not None and getattr(res, "item_rank_counts", None) is not None
    top_k = min(TOP_K, len(abl.players))
    if res is not None:
        head += f" {'shapley':>9} {'± total' if boot else '± s.e.':>8}"
        if boot:
            head += f" {f'P(top{top_k})':>8}"
    lines = [head, "-" * len(head)]
    stability = res.rank_stability(top_k) if boot else None
    order = range(len(abl.players))
    if top is not None:
        order = np.argsort(-abl.drops, kind="stable")[:top]
    cornerstones = set(abl.cornerstones)
    drop_se = abl.drop_stderr_items if items else None
    for i in order:
        line = f"{abl.players[i]:>8} {abl.values[i]:9.3f} {abl.drops[i]:8.3f}"
        if drop_se is not None:
            line += f" {drop_se[i]:8.3f}"
        if res is not None:
            se = res.stderr_total if boot else res.stderr
            line += f" {res.values[i]:9.4f} {se[i]:8.4f}"
            if stability is not None:
                line += f" {stability[i]:8.2f}"
        lines.append(line + ("  <- cornerstone" if abl.players[i] in cornerstones else ""))
    return "\n".join(lines)


def cornerstone_summary(abl: AblationResult) -> str:
    """``"cornerstones: mlp0, attn3 (<how they were decided>)"``, or ``"cornerstones: not enough
    items to tell: <why>"``: the line the CLI prints after an ablation sweep."""
    if abl.status == NOT_ENOUGH_ITEMS:
        return f"cornerstones: {abl.cornerstone_note}"
    return f"cornerstones: {_cornerstone_names(abl)} ({abl.cornerstone_note})"


def _cornerstone_names(abl: AblationResult) -> str:
    if abl.cornerstones:
        return ", ".join(abl.cornerstones)
    return NOT_ENOUGH_ITEMS if abl.status == NOT_ENOUGH_ITEMS else "none"


def chance_text(chance: float | None) -> str:
    """The chance level as printed: ``"0.250"``, or ``"n/a"`` for a smooth utility (logprob,
    margin), which has no chance level and so no cornerstones."""
    return "n/a" if chance is None else f"{chance:.3f}"


def markdown_summary(meta: dict, abl: AblationResult, res: Any, wall_s: float) -> str:
    """``report.md`` without its provenance lines: the run's setup, cornerstones, Shapley cost,
    both figures and the table (:func:`pair_document` as Markdown)."""
    return render_markdown(pair_document(meta, abl, res, wall_s))


def pair_document(
    meta: dict, abl: AblationResult, res: Any, wall_s: float, provenance: Sequence[str] = ()
) -> Document:
    """The report of one model on one task: the run's setup, cornerstones, Shapley cost, both
    figures, the player table (and, with the item bootstrap, which values are told from zero).

    meta: the run's metadata (``model``, ``task``, ``n_items``, ``dtype``, ``environment``, ...).
    abl, res: the ablation sweep and the Shapley result over the same players.
    wall_s: the run's wall time in seconds.
    provenance: bullet items put first (:func:`provenance`); none in :func:`markdown_summary`.
    """
    chance = f"{abl.chance:.3f}" if abl.chance is not None else "n/a"
    margin = f"{abl.margin:.3f}" if abl.margin is not None else "n/a"
    env = meta["environment"]
    facts = (
        f"items: {meta['n_items']}, utility: {abl.utility}{_note(meta)}, dtype: {meta['dtype']}",
        truncation_text(meta.get("truncation")),
        f"full model v(N) = {abl.full:.4f}; chance = {chance}; cornerstone margin = {margin}",
        f"cornerstones (removal drops the utility to chance): {_cornerstone_names(abl)}",
        f"cornerstone test: {abl.cornerstone_note}",
        f"Shapley: {res.method} (window {res.info.get('window', '-')}), "
        f"{res.n_evaluations} coalitions; efficiency gap {efficiency_gap_text(res)}",
        error_bars_text(abl, res),
        f"wall time {wall_s:.0f} s on {meta.get('threads', '?')} CPU threads; "
        f"{env['machine']}, {env['date']}",
    )
    blocks = (
        Heading(f"layerfast report: {meta['model']} on {meta['task']}"),
        Bullets((*provenance, *facts)),
        Figure("ablation.png", "ablation"),
        Figure("shapley.png", "shapley"),
        Table.from_records(player_rows(abl, res), plain=ablation_table(abl, res)),
    )
    return Document(blocks + (significance_blocks(abl, res, meta.get("n_items")) or ()))


def provenance(meta: dict, version: str) -> tuple[str, str]:
    """The report header's bullet items on what made it: the command (``meta["command"]``), the
    layerfast ``version`` and the other versions (``meta["environment"]``, installed packages)."""
    env = meta["environment"]
    versions = ", ".join(f"{name} {_version(name)}" for name in VERSIONS)
    return (
        f"made by `{meta['command']}`",
        f"with layerfast {version}, Python {env['python']}, torch {env['torch']}, "
        f"transformers {env['transformers']}, {versions}; device {env['device']}",
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def player_rows(abl: AblationResult, res: Any) -> list[dict]:
    """The rows of ``report.html``'s sortable player table, one dict per player: ``player``,
    ``v(N\\{l})``, ``drop``, ``shapley``, ``± s.e.`` (floats, utility units) and
    ``cornerstone`` (bool)."""
    cornerstones = set(abl.cornerstones)
    return [
        {
            "player": p,
            "v(N\\{l})": float(abl.values[i]),
            "drop": float(abl.drops[i]),
            "shapley": float(res.values[i]),
            "± s.e.": float(res.stderr[i]),
            "cornerstone": p in cornerstones,
        }
        for i, p in enumerate(abl.players)
    ]


def error_bars_text(abl: AblationResult, res: Any) -> str:
    """What the table's error bars include: the item sample (bootstrap) or not."""
    b_abl = getattr(abl, "item_bootstrap", 0)
    b_res = (res.info.get("item_bootstrap") or {}).get("replicates") if res is not None else None
    if not b_abl and not b_res:
        return "error bars: coalition sampling only (no item bootstrap)"
    parts = []
    if b_abl:
        parts.append(f"drops ± the item sample (bootstrap over items, B={b_abl})")
    if b_res:
        k = min(TOP_K, len(abl.players))
        parts.append(
            f"Shapley ± total = coalition sampling and the item sample (B={b_res}); P(top{k})"
            f" = share of item resamples in which the player is among the top {k}"
        )
    return "error bars: " + "; ".join(parts)


def _note(meta: dict) -> str:
    """`` (v = -(mean ...); higher is better)`` where the utility's sign needs saying (a text
    task's nll and ppl, ``meta["utility_note"]``), else nothing."""
    return f" ({meta['utility_note']})" if meta.get("utility_note") else ""


def truncation_text(truncation: dict | None) -> str:
    """``"requests up to 2048 tokens (config max_position_embeddings); 3 of 120 truncated"``."""
    if not truncation:
        return "request length: not recorded"
    return (
        f"requests up to {truncation['max_length']} tokens ({truncation['limit_source']}); "
        f"{truncation['n_truncated']} of {truncation['n_requests']} left-truncated"
    )


# estimators whose values are not meant to sum to v(N) - v(empty): no efficiency gap to report
NO_EFFICIENCY = ("proximity",)


def efficiency_gap_text(res: Any) -> str:
    """The efficiency gap as printed: ``"0.0012"``; ``"not defined for this estimator"`` for
    one that is not efficient by design (proximity) and reports none; ``"n/a (v(empty set) not
    evaluated)"`` when the gap (NaN or None) is missing for another reason."""
    gap = getattr(res, "efficiency_gap", None)
    if gap is not None and math.isfinite(gap):
        return f"{gap:.4f}"
    if getattr(res, "method", None) in NO_EFFICIENCY:
        return "not defined for this estimator"
    return "n/a (v(empty set) not evaluated)"


def top_players(res: Any, k: int = 5) -> str:
    """``"top Shapley players: attn3 0.1234, ..."``: the ``k`` largest values of a result."""
    top = np.argsort(-res.values)[:k]
    return "top Shapley players: " + ", ".join(f"{res.players[i]} {res.values[i]:.4f}" for i in top)


def stats_summary(st: dict, eps: float) -> str:
    """One line on an ``lf.stats`` run (backend, dtype, texts, tokens, seconds), plus a note
    when AS = 0 in some blocks (AVSS undefined there)."""
    text = (
        f"statistics: {st['backend']} backend, {st['dtype']}, {st['n_texts']} texts, "
        f"{int(st['n_tokens'][0])} tokens, {st['wall_s']:.1f} s"
    )
    if st["as_zero"]:
        text += (
            f"\nnote: AS = 0 in blocks {st['as_zero']} (no |a| < {eps} in {st['dtype']}): "
            "AVSS is undefined there (NaN); try --stats-dtype bf16 (as the AVSS authors ran), "
            "a larger --eps or --relative"
        )
    return text


def avss_table(rows: list[dict]) -> str:
    """One line per block: AV, AS, NAVSS, BI, angular (rows of ``report.files.avss_rows``)."""
    return "\n".join(
        f"block {r['block']:>3}  AV {r['av']:.4g}  AS {r['as']:.3g}  "
        f"NAVSS {r['navss']:.4f}  BI {r['bi']:.4f}  angular {r['angular']:.4f}"
        for r in rows
    )


def eavss_summary(res: Any, scope: str, k: int) -> str:
    """The top ``k`` EAVSS blocks of ``scope`` and the blocks whose 95% interval excludes 0."""
    lo, hi = res.intervals[scope]["eavss"]
    clear = [b for b in range(res.n_blocks) if lo[b] > 0 or hi[b] < 0]
    return (
        f"EAVSS ({scope} positions, {res.dtype}, {res.backend}): top {k} blocks "
        f"{res.top(k, scope)}; 95% interval excludes 0 in blocks {clear or 'none'} "
        f"(about {0.05 * res.n_blocks:.1f} expected by chance)"
    )


def finetune_table(rows: list[dict], utility: str) -> str:
    """Markdown: test and validation accuracy and gold log-prob before/after, per condition."""
    lines = [
        f"| condition | blocks | test {utility} before -> after (delta ± s.e.) | "
        f"test gold log-prob before -> after | val {utility} after |",
        "|---|---|---|---|---:|",
    ]
    for r in rows:
        blocks = "all" if r["condition"] == "all" else (" ".join(map(str, r["blocks"])) or "-")
        lines.append(
            f"| {r['condition']} | {blocks} | {r['test_acc_before']:.3f} -> "
            f"{r['test_acc_after']:.3f} ({r['test_acc_delta']:+.3f} ± "
            f"{r['test_acc_delta_se']:.3f}) | {r['test_logprob_before']:.3f} -> "
            f"{r['test_logprob_after']:.3f} | {r['val_acc_after']:.3f} |"
        )
    return "\n".join(lines)

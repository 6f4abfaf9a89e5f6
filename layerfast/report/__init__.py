"""Stage 5 of models -> tasks -> evaluation -> estimators -> report: report, results written as
strict JSON and CSV (files), text and Markdown tables (tables), PNG and SVG figures (plots, grid),
and the reports as documents (document: blocks rendered to ``report.md``; html: to ``report.html``;
tables.pair_document and multi: what a report says)."""

from .files import (
    environment,
    save_ablation,
    save_convergence,
    save_shapley,
    to_jsonable,
    write_csv,
    write_json,
)
from .plots import plot_ablation, plot_blocks, plot_convergence, plot_shapley
from .tables import ablation_table, finetune_table, markdown_summary

__all__ = [
    "ablation_table",
    "environment",
    "finetune_table",
    "markdown_summary",
    "plot_ablation",
    "plot_blocks",
    "plot_convergence",
    "plot_shapley",
    "save_ablation",
    "save_convergence",
    "save_shapley",
    "to_jsonable",
    "write_csv",
    "write_json",
]

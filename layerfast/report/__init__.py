"""Stage 4, report: results written as strict JSON and CSV, tables, plots and ``report.md``."""

from .files import (
    ablation_table,
    environment,
    markdown_summary,
    save_ablation,
    save_shapley,
    write_csv,
    write_json,
)

__all__ = ["ablation_table", "environment", "markdown_summary", "save_ablation", "save_shapley",
           "write_csv", "write_json"]

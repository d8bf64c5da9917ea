"""Several runs side by side: one row per run, strategy and update stage with the summary figures, as a rich
table (best value per stage in bold) or as JSON."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .tables import COLUMNS, highlighted, load_summary, overview_rows


def compare_rows(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """{"run": the folder as given, "strategy", "stage", every summary figure} per run, strategy and update stage."""
    return [{"run": str(run_dir), **row} for run_dir in run_dirs for row in overview_rows(load_summary(run_dir)[1])]


def render_compare(rows: Sequence[dict[str, Any]], console=None) -> None:
    """Print ``rows`` as a table; within each stage, the best value of each figure is bold."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Piped output has no width to respect, and rich's fallback of 80 columns would squash 16 columns to "…".
    console = console or Console(width=None if sys.stdout.isatty() else 250)
    table = Table(title="CML runs compared (Δ, losses and scores in points)")
    for name in ("run", "strategy", "stage"):
        table.add_column(name)
    for column in COLUMNS:
        table.add_column(column.label, justify="right")
    for row, flags in zip(rows, highlighted(rows, COLUMNS, lambda row: row["stage"])):
        table.add_row(row["run"], row["strategy"], row["stage"],
                      *(Text(column.format(row[column.key]), style="bold" if flags[column.key] else "")
                        for column in COLUMNS))
    console.print(table)

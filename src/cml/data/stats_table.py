"""Terminal rendering of stream statistics (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_stats(stats: dict, title: str, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=title)
    table.add_column("language", style="bold")
    for stage in stats["stages"]:
        table.add_column(stage["name"], justify="right")
    table.add_column("dev", justify="right", style="dim")
    table.add_column("test", justify="right", style="dim")
    for lang in stats["languages"]:
        cells = [str(stage["counts"].get(lang, "")) or "·" for stage in stats["stages"]]
        table.add_row(lang, *cells, str(stats["dev"][lang]), str(stats["test"][lang]))
    totals = [str(sum(stage["counts"].values())) for stage in stats["stages"]]
    table.add_row("total", *totals, str(sum(stats["dev"].values())), str(sum(stats["test"].values())),
                  style="bold", end_section=True)
    console.print(table)
    if "test_labels" in stats:
        labels = sorted({label for stage in stats["stages"] for by_lang in stage["labels"].values() for label in by_lang})
        label_table = Table(title="label counts per stage (all languages)")
        label_table.add_column("label", style="bold")
        for stage in stats["stages"]:
            label_table.add_column(stage["name"], justify="right")
        for label in labels:
            label_table.add_row(label, *(str(sum(c.get(label, 0) for c in stage["labels"].values()))
                                         for stage in stats["stages"]))
        console.print(label_table)

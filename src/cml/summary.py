"""Terminal tables of a run's scores (the full report lives in the reports module)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_scores(results: dict, console: Console | None = None) -> None:
    """Stage x language table of the primary metric, in points, with each update's languages marked; then the
    run's warnings, among them the other metrics that disagree with the primary one (``results["summary"]``)."""
    console = console or Console()
    for strategy, entry in results["strategies"].items():
        table = Table(title=f"{results['name']}: test {results['metric']} (x100), {strategy}")
        table.add_column("language", style="bold")
        for stage in entry["stages"]:
            table.add_column(stage["name"], justify="right")
        for lang in results["languages"]:
            cells = []
            for stage in entry["stages"]:
                mark = "*" if stage["index"] > 0 and lang in stage["updated_languages"] else ""
                cells.append(f"{100 * stage['scores'][lang]:.1f}{mark}")
            table.add_row(lang, *cells)
        means = [f"{100 * sum(s['scores'].values()) / len(s['scores']):.1f}" for s in entry["stages"]]
        table.add_row("mean", *means, style="bold")
        console.print(table)
        console.print("* language in the update stage", style="dim")
    from .reports.report import disagreement_lines, run_warnings

    console.print(f"primary metric: {results['metric']} (evaluation.primary_metric; the report shows every metric)",
                  style="dim")
    for line in run_warnings(results) + disagreement_lines(results.get("summary") or {}, results["metric"]):
        console.print(f"warning: {line}", style="bold red")

"""The show program: the tables already measured, printed (and drawn) from the results files; trains nothing."""

from __future__ import annotations

from pathlib import Path

from cml.errors import CMLError
from cml.io import atomic_open

from .ledger import Ledger, table_path
from .streams import TARGET_AGGREGATE_PP
from .tables import dominance_lines, render, render_markdown


def show_tables(suite: dict, names: list[str], mode: str, results_dir: Path, *, kinds: list[str] | None = None,
                markdown: bool = False, plot: Path | None = None, chosen: bool = False) -> None:
    """Print the ``mode`` tables of the benchmarks ``names`` (the streams of ``kinds``, default all), as Markdown
    or for the terminal, and draw each as ``plot/<benchmark>-<mode>.png``. A benchmark not measured yet is an
    error, except in a named suite's tables when the benchmarks were not ``chosen`` by name: those say so."""
    for name in names:
        path = table_path(results_dir, suite, name, mode)
        if not path.is_file() and suite.get("name") and not chosen:
            print(f"\n**{suite['name']} `{name}`**: not measured yet ({path.relative_to(results_dir)} is absent)")
            continue
        if not path.is_file():
            raise CMLError(f"no {mode} table for {name} yet; run it first", file=path)
        report = Ledger.read(path).report(kinds)
        (render_markdown if markdown else render)(report)
        if plot:
            from cml.reports.plots import seeds_chart  # matplotlib: imported only when drawing, as in reports

            with atomic_open(plot / f"{name}-{mode}.png", "wb") as handle:
                handle.write(seeds_chart(report["streams"], name, TARGET_AGGREGATE_PP))


def show_dominance(suite: dict, names: list[str], results_dir: Path, kind: str) -> None:
    """Print, from the full tables of ``names`` measured so far, which strategies others dominate on the streams
    of update kind ``kind`` (``dominance_lines``)."""
    paths = [(name, table_path(results_dir, suite, name, "full")) for name in names]
    ledgers = {name: Ledger.read(path) for name, path in paths if path.is_file()}
    if not ledgers:
        raise CMLError(f"no full tables of {sorted(names)} in {results_dir}")
    streams = {name: ledger.streams[kind] for name, ledger in ledgers.items() if kind in ledger.streams}
    print("\n".join(dominance_lines(streams, kind)))

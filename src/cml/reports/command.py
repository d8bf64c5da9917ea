"""``cml report`` and ``cml compare``. Reports import numpy, scipy and matplotlib, hence the imports inside."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import CMLError

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("report")
@click.argument("run_dir", type=RUN_DIR)
def report(run_dir: Path) -> None:
    """Write RUN_DIR's report.md, report.html (self-contained) and results.csv, and print their paths."""
    from ..io import FolderLock
    from .report import write_report

    if not (run_dir / "results.json").is_file():  # before the lock: never write into a folder that is no run
        raise CMLError("no results.json; has the run finished?", file=run_dir)
    with FolderLock(run_dir), results_read_from(run_dir):  # not while a run (or another report) writes there
        paths = write_report(run_dir)
    for path in paths.values():
        click.echo(str(path))


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=RUN_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def compare(run_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Compare the summary figures of RUN_DIRS, one row per run, strategy and update stage."""
    from .compare import compare_rows, render_compare

    rows = []
    for run_dir in run_dirs:
        with results_read_from(run_dir):
            rows += compare_rows([run_dir])
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        render_compare(rows)


@contextmanager
def results_read_from(run_dir: Path) -> Iterator[None]:
    """A ``results.json`` that parses but lacks what a report reads (a hand-edited or foreign file) is a
    CMLError naming it. Until results are one typed, versioned model, this is the boundary that says so."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
        raise CMLError(f"not the results of a cml run ({type(err).__name__}: {err})",
                       file=run_dir / "results.json") from None

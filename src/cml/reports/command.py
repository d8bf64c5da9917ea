"""``cml report`` and ``cml compare``. Reports import numpy, scipy and matplotlib, hence the imports inside."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import CMLError
from ..run_folder import RunFolder

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("report")
@click.argument("run_dir", type=RUN_DIR)
def report(run_dir: Path) -> None:
    """Write RUN_DIR's report.md, report.html (self-contained) and results.csv, and print their paths."""
    from ..io import FolderLock
    from .report import write_report

    folder = RunFolder(run_dir)
    folder.read_results()  # before the lock: never write into a folder that holds no finished run
    with FolderLock(run_dir):  # not while a run (or another report) writes there
        try:
            paths = write_report(run_dir)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
            # the typed check covers what every reader relies on; a strategy's own fields (its groups, routes)
            # are its to define, so a hand-edited one can still fail where the report draws it
            raise CMLError(f"not the results of a cml run ({type(err).__name__}: {err})",
                           file=folder.results_file) from None
    for path in paths.values():
        click.echo(str(path))


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=RUN_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def compare(run_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Compare the summary figures of RUN_DIRS, one row per run, strategy and update stage."""
    from .compare import compare_rows, render_compare

    rows = compare_rows(list(run_dirs))
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        render_compare(rows)

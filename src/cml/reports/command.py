"""``cml report`` and ``cml compare``. Reports import numpy, scipy and matplotlib, hence the imports inside."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..run_folder import RunFolder

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("report")
@click.argument("run_dir", type=RUN_DIR)
def report(run_dir: Path) -> None:
    """Write RUN_DIR's report.md, report.html (self-contained) and results.csv, and print their paths."""
    from ..io import FolderLock
    from .report import write_report

    RunFolder(run_dir).read_results()  # before the lock: never write into a folder that holds no finished run
    with FolderLock(run_dir):  # not while a run (or another report) writes there
        paths = write_report(run_dir)
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

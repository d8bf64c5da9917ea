"""``cml typology``: typological distances between languages and, optionally, groups of close languages."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import click

from ..errors import CMLError
from . import DEFAULT_KINDS, KINDS

if TYPE_CHECKING:
    from .grouping import Grouping
    from .uriel import TypologyMatrix


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _weights(text: str | None) -> list[float] | None:
    parts = _split(text)
    if parts is None:
        return None
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise CMLError(f"--weights takes comma-separated numbers, got {text!r}") from None


@click.command("typology")
@click.argument("codes", nargs=-1, required=True)
@click.option("--groups", "n_groups", type=click.IntRange(min=1), help="Cluster the languages into N groups.")
@click.option("--threshold", type=click.FloatRange(min=0.0),
              help="Cluster by cutting the average-linkage tree at this distance.")
@click.option("--max-size", type=click.IntRange(min=1),
              help="With --groups or --threshold: split groups larger than this at their top merge.")
@click.option("--kinds", help=f"Comma-separated URIEL kinds from {', '.join(KINDS)} "
                              f"[default: {','.join(DEFAULT_KINDS)}].")
@click.option("--weights", help="Comma-separated weights, one per kind [default: equal].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def typology(codes: tuple[str, ...], n_groups: int | None, threshold: float | None, max_size: int | None,
             kinds: str | None, weights: str | None, as_json: bool) -> None:
    """Typological distances (URIEL+) between CODES, and groups of close languages with --groups or --threshold."""
    from .grouping import cluster
    from .uriel import typology_matrix

    if n_groups is not None and threshold is not None:
        raise click.UsageError("give --groups or --threshold, not both")
    if max_size is not None and n_groups is None and threshold is None:
        raise click.UsageError("--max-size splits groups: give --groups or --threshold too")
    matrix = typology_matrix(codes, _split(kinds) or DEFAULT_KINDS, _weights(weights))
    grouping = None if n_groups is None and threshold is None else cluster(matrix, n_groups, threshold, max_size)
    if as_json:
        click.echo(json.dumps({**matrix.to_json(), "grouping": grouping.to_json() if grouping else None},
                              indent=2, ensure_ascii=False))
    else:
        _print(matrix, grouping)


def _print(matrix: TypologyMatrix, grouping: Grouping | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    weights = ", ".join(f"{kind} {weight:.2f}" for kind, weight in zip(matrix.kinds, matrix.weights))
    table = Table(title=f"Typological distance ({weights})")
    table.add_column("")
    for code in matrix.languages:
        table.add_column(code, justify="right")
    for code, row in zip(matrix.languages, matrix.distances.tolist()):
        table.add_row(code, *("–" if math.isnan(value) else f"{value:.2f}" for value in row))
    console.print(table)
    if grouping is not None:
        console.print("[bold]Groups[/bold] (average linkage)")
        for label, members in grouping.groups.items():
            console.print(f"  {label}: {' '.join(members)}")
    for warning in matrix.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    console.print(f"[dim]{matrix.database_version}[/dim]", highlight=False)

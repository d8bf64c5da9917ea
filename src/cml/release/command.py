"""The release commands: ``cml train``, ``cml update``, ``cml check``, ``cml export``.

Exit status: 0 done (for ``update`` and ``check``: the release may ship), 2 bad input, 3 the release must not
ship (``update`` still writes it, so that its report can be read).
"""

from __future__ import annotations

import sys

import click

MUST_NOT_SHIP = 3

CONFIG = click.argument("config", type=click.Path(dir_okay=False))
OUT = click.option("--out", required=True, type=click.Path(file_okay=False), help="The release folder to write.")
OVERRIDES = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                         help="Override a config setting (value parsed as YAML); repeatable.")
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace what is in the output folder.")
TRUST_REMOTE_CODE = click.option("--trust-remote-code", is_flag=True,
                                 help="Run the Python code a hub model or dataset ships (no file can allow it).")


def _print_release(record) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..routing import route_name
    from .manifest import BASE_ROUTE

    metric = record.primary_metric
    table = Table(title=f"release {record.name}: {metric}", title_justify="left")
    for column in ("language", "route", "before", "after", "change", "95% CI"):
        table.add_column(column, justify="left" if column in ("language", "route") else "right")
    for lang in record.languages:
        result = record.results[lang]
        change = result.changes.get(metric)
        style = "red" if change and change.significant_loss else "green" if change and change.significant_gain else None
        table.add_row(lang, route_name(result.route, BASE_ROUTE),
                      f"{100 * change.before:.1f}" if change else "–", f"{100 * result.scores[metric]:.1f}",
                      f"{100 * change.delta:+.1f}" if change else "–",
                      f"[{100 * change.ci_low:+.1f}, {100 * change.ci_high:+.1f}]" if change else "–", style=style)
    Console(stderr=False).print(table)


def _print_verdict(verdict, folder) -> None:
    if verdict.ship:
        click.echo(f"{folder}: may ship ({len(verdict.significant_losses)} significant {verdict.metric} losses, "
                   f"mean change {100 * (verdict.mean_delta or 0):+.2f} points)")
        return
    for failure in verdict.failures:
        click.echo(f"{folder}: {failure}")
    click.echo(f"{folder}: must not ship")


@click.command()
@CONFIG
@OUT
@OVERRIDES
@OVERWRITE
@TRUST_REMOTE_CODE
def train(config, out, overrides, overwrite, trust_remote_code):
    """Train the initial model on CONFIG's data (every language: train split, best epoch on dev, scored on test)
    and write it as a release to OUT. CONFIG needs name, task, data and optionally model and training (which
    default per task family)."""
    from ..config import TrainConfig
    from .api import release_config
    from .build import train as build

    record = build(release_config(config, TrainConfig, overrides, trust_remote_code), out, overwrite=overwrite)
    _print_release(record)
    click.echo(f"release: {out} (report: {out}/report.html)")


@click.command()
@CONFIG
@click.option("--from", "source", required=True, metavar="SOURCE",
              help="The model to update: a release folder, or a Hugging Face checkpoint folder or hub id that has "
                   "its task head (its id2label is kept as it is).")
@OUT
@click.option("--grow-head", is_flag=True, help="Add labels the new data has and the model lacks to its head "
                                                "(the old labels keep their ids); without it they are an error.")
@OVERRIDES
@OVERWRITE
@TRUST_REMOTE_CODE
def update(config, source, out, grow_head, overrides, overwrite, trust_remote_code):
    """Update SOURCE with CONFIG's new batch (`data`, all of it), score every language on `eval` before and
    after, and write the release to OUT. Exits 3 when CONFIG's `ship` criteria say it must not ship."""
    from ..config import UpdateConfig
    from .api import release_config
    from .build import update as build

    record = build(release_config(config, UpdateConfig, overrides, trust_remote_code), source, out, grow=grow_head,
                   overwrite=overwrite)
    _print_release(record)
    click.echo(f"release: {out} (report: {out}/report.html)")
    _print_verdict(record.verdict, out)
    if not record.verdict.ship:
        sys.exit(MUST_NOT_SHIP)


@click.command()
@click.argument("release", type=click.Path(file_okay=False))
@click.option("--max-significant-losses", type=int, default=None, metavar="N",
              help="At most N languages may lose significantly (default: the release's own criterion).")
@click.option("--min-mean-delta", type=float, default=None, metavar="X",
              help="The mean change over languages must be at least X, a fraction (0.01 = one point).")
@click.option("--metric", default=None, help="The metric the criteria read (default: the release's).")
def check(release, max_significant_losses, min_mean_delta, metric):
    """Whether RELEASE may ship: one line per failed criterion, exit 0 (may ship) or 3 (must not ship)."""
    from .api import check as judge

    verdict = judge(release, max_significant_losses, min_mean_delta, metric)
    _print_verdict(verdict, release)
    if not verdict.ship:
        sys.exit(MUST_NOT_SHIP)


@click.command("export")
@click.argument("release", type=click.Path(file_okay=False))
@click.option("--format", "format_", type=click.Choice(["peft", "merged", "hf"]), required=True,
              help="peft: base model + PEFT adapters + routes.json; merged: one plain model per route; hf: a "
                   "full-model release as one plain folder.")
@OUT
@OVERWRITE
@click.option("--push-to-hub", "repo", default=None, metavar="REPO",
              help="Also upload the export to this Hugging Face Hub repository (private unless --public).")
@click.option("--public", is_flag=True, help="With --push-to-hub: create the repository public.")
@click.option("--dry-run", is_flag=True, help="With --push-to-hub: list what would be uploaded, upload nothing.")
def export_command(release, format_, out, overwrite, repo, public, dry_run):
    """Export RELEASE for tools without cml, with a model card (README.md) holding every language's scores and
    the verdict."""
    from .export import export, push, upload_plan

    export(release, out, format_, overwrite=overwrite)
    click.echo(f"exported {release} as {format_}: {out}")
    if repo and dry_run:
        for name, size in upload_plan(out):
            click.echo(f"would upload {name} ({size:,} bytes) to {repo}")
    elif repo:
        click.echo(f"pushed to {repo}: {push(out, repo, private=not public)}")


COMMANDS = (train, update, check, export_command)

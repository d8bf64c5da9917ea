"""The ``cml`` command line. Heavy libraries are imported inside commands so ``cml --help`` stays fast."""

from __future__ import annotations

import json
import sys

import click

from .errors import exit_on_user_error

CONFIG = click.argument("config", type=click.Path(dir_okay=False))
OVERRIDES = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                         help="Override a config setting (value parsed as YAML); repeatable.")
TRUST_REMOTE_CODE = click.option(
    "--trust-remote-code", is_flag=True,
    help="Run the Python code that a hub model or dataset ships. Only this flag allows it: no config file or "
         "run folder can.")


class _Main(click.Group):
    """Turns a CMLError anywhere below into one clear line on stderr and exit status 2."""

    def invoke(self, ctx):
        import warnings

        # PEFT asks transformers 5 a deprecated question whenever it wraps a model: not the user's to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        with exit_on_user_error():
            return super().invoke(ctx)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="continual-multilingual")
def main():
    """Continual multilingual learning: update a multilingual model safely, and measure every language.

    \b
    Releases (your model, your new data):
      cml train train.yaml --out releases/v1                     # the initial model
      cml update update.yaml --from releases/v1 --out releases/v2  # new batch; exit 3: must not ship
      cml check releases/v2                                      # the ship gate, for CI
      cml export releases/v2 --format peft --out export/v2       # for transformers + PEFT
      cml predict releases/v2 < inputs.jsonl

    \b
    Research harness:
      cml data stats configs/sib200.yaml     # what the stream holds
      cml run configs/sib200.yaml            # train, update, evaluate every language
      cml report runs/sib200                 # tables, plots and an HTML page
    """


@main.group()
def data():
    """Inspect data sources and CML streams."""


@data.command("stats")
@CONFIG
@OVERRIDES
@click.option("--labels", is_flag=True, help="Also count labels (tags for tagging) per stage and language.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@TRUST_REMOTE_CODE
def data_stats(config, overrides, labels, as_json, trust_remote_code):
    """Print the stage x language table of training-example counts of CONFIG's stream.

    Dev and test sets are fixed across stages and shown as the last two columns.
    """
    from .config import load_config
    from .data.readers import read_dataset
    from .data.stream import build_stream

    cfg = load_config(config, overrides)
    cfg.allow_remote_code(trust_remote_code)
    with cfg.locating_errors():
        dataset = read_dataset(cfg.data, cfg.task)
        stream = build_stream(dataset, cfg.stream, cfg.stream_seed)
    stats = stream.stats(labels=labels)
    if dataset.repairs:
        stats["iob2_repairs"] = dict(sorted(dataset.repairs.items()))
    if as_json:
        click.echo(json.dumps(stats, indent=2, ensure_ascii=False))
        return
    from .data.stats_table import print_stats

    print_stats(stats, title=f"{cfg.name}: {cfg.task.value} stream (seed {stream.seed})")
    for path, count in stats.get("iob2_repairs", {}).items():
        click.echo(f"{path}: {count} IOB2 tags repaired (a stray I-X read as B-X)")


@main.command()
@CONFIG
@OVERRIDES
@click.option("--resume", is_flag=True, help="Continue an interrupted run: reuse finished stages and the last "
                                               "checkpoint of the unfinished one.")
@click.option("--from-stage", type=int, default=None, metavar="K",
              help="Roll back: keep stages before K from the run folder and redo stage K and later.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in the run folder (without it, a run "
                                                "folder that holds a run is refused unless --resume).")
@TRUST_REMOTE_CODE
def run(config, overrides, resume, from_stage, overwrite, trust_remote_code):
    """Run the CML experiment CONFIG: train on the initial stage, apply each update stage, and score every
    language after every stage. Writes <output_dir>/<name>/results.json (with the resolved config,
    versions and seed), per-example predictions, stage checkpoints (safetensors) and run.log, then the
    report (report.md, report.html, results.csv), as `cml report` writes it.
    """
    from .config import load_config
    from .experiment import Experiment
    from .io import FolderLock
    from .reports.report import write_report
    from .summary import print_scores

    if resume and overwrite:
        raise click.UsageError("--resume continues the run in the folder, --overwrite replaces it: choose one")
    cfg = load_config(config, overrides)
    cfg.allow_remote_code(trust_remote_code)
    experiment = Experiment(cfg, resume=resume, from_stage=from_stage, overwrite=overwrite)
    results = experiment.run()
    if not experiment.accelerator.is_main_process:  # under `accelerate launch`: write and print once
        return
    with FolderLock(experiment.run_dir):  # as `cml report`: not while another process writes there
        write_report(experiment.run_dir)
    print_scores(results)
    click.echo(f"results: {experiment.folder.results_file}")
    click.echo(f"report:  {experiment.run_dir / 'report.html'} (and report.md, results.csv)")

@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--stage", type=int, default=None, help="Stage whose deployed model to use (default: the last).")
@click.option("--strategy", default=None, help="Strategy to serve (default: the run's reference strategy).")
@click.option("--lang", default="auto", show_default=True,
              help="Language code of every input line, or `auto` to detect each line's language.")
@click.option("--restrict", is_flag=True, help="With --lang auto: detect only among the run's languages.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, metavar="K",
              help="Also give the K most probable labels with their probabilities (per word for tagging).")
@TRUST_REMOTE_CODE
def predict(folder, stage, strategy, lang, restrict, top_k, trust_remote_code):
    """Predict with a release (or a finished run) FOLDER on stdin: JSONL objects with `text` (and optionally
    `lang`) or plain text lines. Writes one JSON line per input, in order, with the prediction, the language
    (and whether it was detected) and the route that served it. A language outside the release goes to its
    nearest URIEL group when close enough (modular strategies: route_to_nearest, by default
    cml.strategies.modular.routes.NEW_LANGUAGE_MAX_DISTANCE) or to the previous model.
    """
    from pathlib import Path

    from .predict import LanguageDetector, Predictor, read_inputs
    from .release.manifest import MANIFEST

    if (Path(folder) / MANIFEST).is_file():
        if stage is not None or strategy is not None:
            raise click.UsageError("--stage and --strategy choose inside a run folder; a release has one model")
        from .release.api import Release

        predictor = Release.load(folder, trust_remote_code=trust_remote_code).predictor
    else:
        predictor = Predictor.from_run(folder, stage=stage, strategy=strategy, trust_remote_code=trust_remote_code)
    detector = LanguageDetector(predictor.languages if restrict else None) if lang == "auto" else None
    if top_k is not None and predictor.task.family.value == "seq2seq":
        raise click.UsageError("--top-k is for classification and tagging runs; this run generates text")
    for output in predictor.predict(read_inputs(sys.stdin.buffer, lang, detector), top_k=top_k):
        click.echo(json.dumps(output, ensure_ascii=False))



def _register_component_commands() -> None:
    """Commands that live beside their component; their modules import heavy libraries lazily."""
    from .models.command import model
    from .release.command import COMMANDS
    from .reports.command import compare, report
    from .typology.command import typology

    for command in (*COMMANDS, model, typology, report, compare):
        main.add_command(command)


_register_component_commands()

if __name__ == "__main__":
    main()

"""Quality benchmark: does each update strategy spread gains and shrink losses on real data?

Runs the streams of ``configs/benchmarks/suite.yaml`` (each benchmark's "subset" update and its other update
kinds) with every strategy over several seeds, prints the headline table against ``full_finetune`` and the
paper's targets for ``laft_uriel``, and writes ``benchmarks/results/<benchmark>-<mode>.json``.

    python benchmarks/cml_quality.py --quick            # one seed, fewer languages: under 15 min on 2 CPU cores
    python benchmarks/cml_quality.py                    # every benchmark and update kind, seeds 0 1 2
    python benchmarks/cml_quality.py --benchmarks sib200 --kinds subset --seeds 0
    python benchmarks/cml_quality.py --show --markdown  # the tables already measured, as docs/benchmarks.md quotes them
    python benchmarks/cml_quality.py --show --plot docs/img  # ... and as charts: docs/img/<benchmark>-<mode>.png

Runs go to ``runs/benchmarks/<benchmark>-<kind>-<mode>-seed<k>/`` and resume where they stopped. The full benchmark
takes many sessions, so the table is built in pieces and keeps each seed's rows: a run of some update kinds keeps the
other kinds' streams, a run of some seeds keeps the other seeds' rows, and a run of some strategies (``--strategies``,
full_finetune among them) keeps, per seed, the other strategies' rows when it measured the same full fine-tuning.
The update kinds of one benchmark share stage 0 (same data, model and seed), so its trained model is reused, not
retrained.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "configs" / "benchmarks" / "suite.yaml"
RESULTS = REPO / "benchmarks" / "results"
SEEDS = (0, 1, 2)
TARGET_STRATEGY = "laft_uriel"
# The paper's figures (arXiv 2209.06767) and our own bar for the aggregate score.
TARGET_IMPROVED_PP = 25.0
TARGET_LOSS_REDUCTION = 0.78
TARGET_AGGREGATE_PP = -0.5
RULES = {">=": operator.ge, "<=": operator.le}
FIGURES = ("n_languages", "n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded",
           "mean_delta", "mean_loss_magnitude", "max_loss", "aggregate_before", "aggregate_after",
           "negative_flip_rate", "improved_share_gain_pp", "loss_magnitude_reduction",
           "aggregate_after_vs_reference_pp", "train_seconds")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchmarkSpec(_Strict):
    config: str  # an experiment config, relative to the suite file
    update_kinds: dict[str, dict[str, Any]]  # kind -> config overrides (`--set` keys, YAML values)
    quick: dict[str, Any] = {}  # overrides of the quick variant


class QuickSelection(_Strict):
    benchmarks: list[str]
    update_kinds: list[str]
    strategies: list[str]


class Suite(_Strict):
    benchmarks: dict[str, BenchmarkSpec]
    quick: QuickSelection

    @field_validator("quick")
    @classmethod
    def _quick_names_known(cls, quick: QuickSelection, info: ValidationInfo) -> QuickSelection:
        unknown = sorted(set(quick.benchmarks) - set(info.data.get("benchmarks", {})))
        if unknown:
            raise ValueError(f"benchmarks {unknown} are not in this suite's benchmarks")
        return quick


def load_suite(path: Path) -> dict:
    """The benchmark manifest, validated (errors name its file, line and key), as plain data plus its folder."""
    from cml.config import read_yaml, validated

    tree, node = read_yaml(path, what="suite")
    return {**validated(Suite, tree, node, path).model_dump(), "folder": path.parent}


def overrides_of(mapping: dict) -> list[str]:
    # JSON is YAML: load_config parses each value back into the structure written here.
    return [f"{key}={json.dumps(value)}" for key, value in mapping.items()]


def run_config(bench: dict, kind: str, seed: int, quick: bool, suite: dict, output_dir: Path,
               strategies: list[str] | None = None):
    """The experiment config of one benchmark, update kind and seed; ``strategies`` (labels) keeps only those,
    else the quick mode's list or all of the config's."""
    from cml.config import load_config
    from cml.errors import CMLError

    name = f"{bench['name']}-{kind}-{'quick' if quick else 'full'}-seed{seed}"
    overrides = {**(bench.get("quick", {}) if quick else {}), **bench["update_kinds"][kind],
                 "seed": seed, "name": name, "output_dir": str(output_dir)}
    path = Path(suite["folder"]) / bench["config"]
    config = load_config(path, overrides_of(overrides))
    wanted = strategies or (suite["quick"]["strategies"] if quick else None)
    if wanted:
        labels = [s.label for s in config.strategies]
        if "full_finetune" not in wanted or set(wanted) - set(labels):
            raise CMLError(f"--strategies must name full_finetune (the reference) and only strategies of this "
                           f"config: {labels}", file=path)
        config = config.model_copy(update={"strategies": [s for s in config.strategies if s.label in wanted]})
    return config


def stage0_fingerprint(config) -> str:
    """What stage 0 depends on (its examples, the model, the training settings, the seed): the settings a
    resumed run checks, so a copied stage 0 is one that run accepts."""
    from cml.data.examples import stable_hash
    from cml.data.readers import read_dataset
    from cml.data.stream import build_stream
    from cml.experiment import stage_settings

    stream = build_stream(read_dataset(config.data, config.task), config.stream, config.stream_seed)
    return stable_hash(json.dumps(stage_settings(config, stream, 0), sort_keys=True))


STAGE0_PARTS = (Path("stages") / "initial", Path("predictions") / "initial")  # the summary's bootstrap reads both


def reuse_stage0(config, donors: list) -> None:
    """Copy a finished stage 0 from another run of the same benchmark and seed whose stage 0 is identical.
    Reading the data to compare fingerprints happens only when there is something to reuse."""
    run_dir = Path(config.output_dir) / config.name
    if (run_dir / STAGE0_PARTS[0]).exists():
        return
    fingerprint = None
    for donor in donors:
        donor_dir = Path(donor.output_dir) / donor.name
        if not all((donor_dir / part).is_dir() for part in STAGE0_PARTS):
            continue
        fingerprint = fingerprint or stage0_fingerprint(config)
        if stage0_fingerprint(donor) == fingerprint:
            for part in STAGE0_PARTS:
                shutil.copytree(donor_dir / part, run_dir / part, dirs_exist_ok=True)
            return


def stream_rows(results: dict) -> dict[str, dict]:
    """{strategy: figures} for the run's (single) update stage: the ``FIGURES``, None where undefined."""
    from cml.reports.tables import overview_rows

    summary = results["summary"]
    reference = results.get("reference_strategy", "full_finetune")
    stage = results["stages"][1]["name"]
    rows = {row["strategy"]: row for row in overview_rows(summary) if row["stage"] == stage}
    for strategy, row in rows.items():
        row["aggregate_after_vs_reference_pp"] = 100 * (row["aggregate_after"] - rows[reference]["aggregate_after"])
        row["train_seconds"] = sum(s["train"]["train_seconds"] for s in results["strategies"][strategy]["stages"][1:]
                                   if s.get("train"))
    return {strategy: {key: row.get(key) for key in FIGURES} for strategy, row in rows.items()}


def aggregate(per_seed: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """{strategy: {figure: {"mean", "std", "n"}}} over the seeds that ran the strategy (``aggregate_seeds``: std None
    for one seed; ``n`` says how many); a figure undefined in every seed (a loss reduction where the reference lost
    nothing) is left out. ``per_seed``: {seed: {strategy: figures}}."""
    from cml.evaluation.cml_metrics import aggregate_seeds

    strategies = dict.fromkeys(strategy for rows in per_seed.values() for strategy in rows)
    aggregated = {strategy: aggregate_seeds([rows[strategy] for rows in per_seed.values() if strategy in rows])
                  for strategy in strategies}
    return {strategy: {key: value for key, value in figures.items() if value is not None}
            for strategy, figures in aggregated.items()}


def targets(kind: str, strategies: dict[str, dict]) -> list[dict]:
    """The paper's targets, checked for ``laft_uriel`` and each of its named variants (``laft_uriel_*``). A figure
    undefined on this stream (the loss reduction where full fine-tuning lost nothing) has ``met`` None."""
    judged = [s for s in strategies if s == TARGET_STRATEGY or s.startswith(TARGET_STRATEGY + "_")]
    if not judged:
        return []
    bars = [("aggregate_after_vs_reference_pp", TARGET_AGGREGATE_PP, ">=")]
    if kind == "subset":
        bars += [("improved_share_gain_pp", TARGET_IMPROVED_PP, ">="),
                 ("loss_magnitude_reduction", TARGET_LOSS_REDUCTION, ">=")]
    else:
        bars.append(("n_degraded", strategies["full_finetune"]["n_degraded"]["mean"], "<="))
    rows = []
    for strategy in judged:
        for figure, target, rule in bars:
            value = strategies[strategy][figure]["mean"] if figure in strategies[strategy] else None
            rows.append({"strategy": strategy, "figure": figure, "value": value, "target": target, "rule": rule,
                         "met": None if value is None else RULES[rule](value, target)})
    return rows


def earlier_streams(path: Path) -> dict[str, dict]:
    """The streams of an earlier table at ``path``, by update kind: the full benchmark runs over many sessions, one
    update kind, seed or set of strategies at a time, and one run must not erase another's rows. Read before any
    training, so an unreadable table stops the run at once rather than after hours."""
    from cml.errors import CMLError

    if not path.is_file():
        return {}
    try:
        streams = {stream["update_kind"]: stream for stream in json.loads(path.read_text("utf-8"))["streams"]}
    except (ValueError, KeyError, TypeError) as err:
        raise CMLError(f"cannot merge into this benchmark table ({err}); move it away to start a new one",
                       file=path) from None
    without_rows = [kind for kind, stream in streams.items() if not isinstance(stream.get("per_seed"), dict)]
    if without_rows:
        raise CMLError(f"cannot merge into this benchmark table: streams {without_rows} have no per-seed rows; move it "
                       "away to start a new one", file=path)
    return streams


def same_reference(earlier: dict[str, dict], rows: dict[str, dict]) -> bool:
    """Whether two runs of one seed measured the same reference: the same figures for full fine-tuning (training time
    aside). Full fine-tuning is deterministic, so that holds when the config, data and code it depends on are
    unchanged, and then the earlier strategies' figures, all relative to it, still hold."""
    def figures(row: dict) -> dict:
        return {key: row.get(key) for key in FIGURES if key != "train_seconds"}

    return ("full_finetune" in earlier and "full_finetune" in rows
            and figures(earlier["full_finetune"]) == figures(rows["full_finetune"]))


def in_order(keys, order: list) -> list:
    """``keys`` in ``order``'s order, those it lacks last and by name."""
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))


def stream_table(update_kind: str, config: str, per_seed: dict[str, dict[str, dict]], runs: list[dict],
                 order: list[str]) -> dict:
    """A stream of the table: its per-seed rows (strategies in ``order``), their mean and std over seeds, the
    paper's targets checked on those, and the runs that measured them."""
    seeds = sorted(per_seed, key=int)
    per_seed = {seed: {k: per_seed[seed][k] for k in in_order(per_seed[seed], order)} for seed in seeds}
    strategies = aggregate(per_seed)
    strategies = {k: strategies[k] for k in in_order(strategies, order)}
    return {"update_kind": update_kind, "config": config, "seeds": [int(seed) for seed in seeds],
            "strategies": strategies, "targets": targets(update_kind, strategies), "per_seed": per_seed, "runs": runs}


def merged_stream(earlier: dict | None, stream: dict, order: list[str]) -> dict:
    """This run's stream merged into the earlier run's, seed by seed: seeds this run did not repeat are kept; for a
    repeated seed, the earlier rows of strategies this run left out are kept when both runs measured the same
    reference (``same_reference``), else that seed's earlier rows are dropped. Each run's record lists the
    strategies by seed that it still accounts for. ``order``: the config's strategy labels."""
    if earlier is None:
        return stream
    per_seed = dict(earlier["per_seed"])
    dropped = {}  # seed -> the earlier strategies this run's rows replace
    for seed, rows in stream["per_seed"].items():
        before = per_seed.get(seed, {})
        kept = {k: v for k, v in before.items() if k not in rows} if same_reference(before, rows) else {}
        dropped[seed] = set(before) - set(kept)
        per_seed[seed] = {**kept, **rows}
    runs = []
    for run in earlier["runs"]:
        remaining = {seed: [s for s in strategies if s not in dropped.get(seed, ())]
                     for seed, strategies in run["strategies"].items()}
        remaining = {seed: strategies for seed, strategies in remaining.items() if strategies}
        if remaining:
            runs.append({**run, "strategies": remaining})
    return stream_table(stream["update_kind"], stream["config"], per_seed, runs + stream["runs"], order)


def merged_report(header: dict, earlier: dict[str, dict], streams: dict[str, dict], kinds: list[str],
                  strategies: list[str]) -> dict:
    """This run's streams merged into the earlier table: streams of update kinds this run did not repeat are kept
    whole, and a repeated stream keeps the seeds and strategies this run left out (``merged_stream``). ``kinds`` and
    ``strategies`` give the order, the suite's and the config's."""
    merged = {**earlier, **{kind: merged_stream(earlier.get(kind), stream, strategies)
                            for kind, stream in streams.items()}}
    return {**header, "streams": [merged[kind] for kind in in_order(merged, kinds)]}


# The headline table's columns: header, figure, scale, format.
COLUMNS = (("improved", "n_improved", 1, "{:.1f}"), ("degraded", "n_degraded", 1, "{:.1f}"),
           ("sig. degraded", "n_significant_degraded", 1, "{:.1f}"),
           ("improved vs FT (pp)", "improved_share_gain_pp", 1, "{:+.1f}"),
           ("loss reduction vs FT", "loss_magnitude_reduction", 100, "{:+.0f}%"),
           ("mean loss (pt)", "mean_loss_magnitude", 100, "{:.2f}"), ("mean Δ (pt)", "mean_delta", 100, "{:+.2f}"),
           ("after - FT after (pt)", "aggregate_after_vs_reference_pp", 1, "{:+.2f}"),
           ("train s", "train_seconds", 1, "{:.0f}"))
# The figures that compare a strategy with the reference: "—" on the reference's own row.
AGAINST_REFERENCE = {"improved_share_gain_pp", "loss_magnitude_reduction", "aggregate_after_vs_reference_pp"}


def table_rows(stream: dict) -> list[list[str]]:
    """A stream's headline rows: strategy, the seeds that ran it, then ``COLUMNS`` as "mean ± std" over those seeds
    ("—" where a figure is undefined, and for the reference against itself)."""
    def cell(strategy: str, figures: dict, key: str, scale: float, fmt: str) -> str:
        if strategy == "full_finetune" and key in AGAINST_REFERENCE:
            return "—"
        value = figures.get(key)
        if value is None:
            return "—"
        mean = fmt.format(scale * value["mean"])
        return mean if value["std"] is None else f"{mean} ± {fmt.format(scale * value['std']).lstrip('+')}"

    return [[strategy, " ".join(seed for seed, rows in stream["per_seed"].items() if strategy in rows)]
            + [cell(strategy, figures, key, scale, fmt) for _, key, scale, fmt in COLUMNS]
            for strategy, figures in stream["strategies"].items()]


def render_markdown(report: dict) -> None:
    """The headline table as Markdown, one table a stream (the form docs/benchmarks.md quotes)."""
    headers = ["strategy", "seeds"] + [header for header, *_ in COLUMNS]
    for stream in report["streams"]:
        print(f"\n**{report['benchmark']}, kind `{stream['update_kind']}`** ({report['mode']}; mean ± std over seeds "
              "against full_finetune)\n")
        print("| " + " | ".join(headers) + " |")
        print("|---|---|" + "---:|" * len(COLUMNS))
        for row in table_rows(stream):
            print("| " + " | ".join(row) + " |")


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"{report['benchmark']} ({report['mode']}): mean ± std over seeds, against full_finetune")
    for column in ("kind", "strategy", "seeds", *(header for header, *_ in COLUMNS)):
        table.add_column(column, justify="left" if column in ("kind", "seeds", "strategy") else "right")
    for stream in report["streams"]:
        for row in table_rows(stream):
            table.add_row(stream["update_kind"], *row)
    console.print(table)
    for stream in report["streams"]:
        for check in stream["targets"]:
            if check["met"] is None:
                console.print(f"{check['strategy']} {stream['update_kind']}: {check['figure']} undefined on this "
                              "stream (full_finetune lost nothing)")
                continue
            mark = "[green]met[/green]" if check["met"] else "[red]MISSED[/red]"
            console.print(f"{check['strategy']} {stream['update_kind']}: {check['figure']} = {check['value']:.3g} "
                          f"(target {check['rule']} {check['target']:.3g}): {mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, fewer languages and streams (see suite.yaml)")
    parser.add_argument("--benchmarks", nargs="+", help="benchmarks of suite.yaml to run (default: all, or quick's)")
    parser.add_argument("--kinds", nargs="+", help="update kinds to run (default: all, or quick's)")
    parser.add_argument("--seeds", nargs="+", type=int, help=f"default: {' '.join(map(str, SEEDS))}; --quick: 0")
    parser.add_argument("--strategies", nargs="+", help="only these strategies (labels; full_finetune among them)")
    parser.add_argument("--suite", type=Path, default=SUITE, help="the benchmark manifest")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "benchmarks", help="where the runs go")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON tables go")
    parser.add_argument("--show", action="store_true", help="print the tables already in --results-dir; train nothing")
    parser.add_argument("--markdown", action="store_true", help="with --show: print the tables as Markdown")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="with --show: also draw each table as DIR/<benchmark>-<mode>.png")
    args = parser.parse_args(argv)
    if (args.markdown or args.plot) and not args.show:
        parser.error("--markdown and --plot go with --show")
    if args.show and (args.seeds or args.strategies):
        parser.error("--show prints whole tables; --seeds and --strategies choose what to run")

    from cml.errors import CMLError
    from cml.experiment import Experiment
    from cml.io import atomic_open, write_json

    suite = load_suite(args.suite)
    benchmarks = {name: {"name": name, **spec} for name, spec in suite["benchmarks"].items()}
    mode = "quick" if args.quick else "full"
    names = args.benchmarks or (suite["quick"]["benchmarks"] if args.quick else list(benchmarks))
    seeds = args.seeds or ([0] if args.quick else list(SEEDS))
    unknown = sorted(set(names) - set(benchmarks))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; {args.suite} has {sorted(benchmarks)}")
    if args.show:
        for name in names:
            path = args.results_dir / f"{name}-{mode}.json"
            if not path.is_file():
                raise CMLError(f"no {mode} table for {name} yet; run it first", file=path)
            measured = earlier_streams(path)
            kinds = args.kinds or list(measured)
            report = {"benchmark": name, "mode": mode, "streams": [measured[k] for k in kinds if k in measured]}
            (render_markdown if args.markdown else render)(report)
            if args.plot:
                from cml.reports.plots import seeds_chart  # matplotlib: imported only when drawing, as in reports

                with atomic_open(args.plot / f"{name}-{mode}.png", "wb") as handle:
                    handle.write(seeds_chart(report["streams"], name, TARGET_AGGREGATE_PP))
        return 0
    command = "python benchmarks/cml_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    for name in names:
        bench = benchmarks[name]
        kinds = args.kinds or (suite["quick"]["update_kinds"] if args.quick else list(bench["update_kinds"]))
        if set(kinds) - set(bench["update_kinds"]):
            raise CMLError(f"{name} has the update kinds {list(bench['update_kinds'])}, not "
                           f"{sorted(set(kinds) - set(bench['update_kinds']))}", file=args.suite)
        path = args.results_dir / f"{name}-{mode}.json"
        earlier = earlier_streams(path)
        labels = [s.label for s in run_config(bench, kinds[0], seeds[0], args.quick, suite, args.output_dir).strategies]
        streams = {}
        for kind in kinds:
            started = time.perf_counter()
            per_seed = {}
            for seed in seeds:
                config = run_config(bench, kind, seed, args.quick, suite, args.output_dir, args.strategies)
                # Another update kind of this benchmark and seed may already have trained the same stage 0.
                reuse_stage0(config, [run_config(bench, other, seed, args.quick, suite, args.output_dir)
                                      for other in bench["update_kinds"] if other != kind])
                print(f"== {config.name}: {len(config.strategies)} strategies", flush=True)
                per_seed[str(seed)] = stream_rows(Experiment(config, resume=True).run())
            run = {"command": command, "machine": machine, "wall_seconds": time.perf_counter() - started,
                   "strategies": {seed: list(rows) for seed, rows in per_seed.items()}}
            streams[kind] = stream_table(kind, bench["config"], per_seed, [run], labels)
        report = merged_report({"benchmark": name, "mode": mode}, earlier, streams, list(bench["update_kinds"]), labels)
        write_json(path, report)
        render(report)
        wall = sum(stream["runs"][-1]["wall_seconds"] for stream in streams.values())
        print(f"wall time {wall:.0f} s; table: {path}")
    return 0


if __name__ == "__main__":
    from cml.errors import exit_on_user_error

    with exit_on_user_error():
        sys.exit(main())

"""Quality benchmark: does each update strategy spread gains and shrink losses on real data?

Runs the streams of ``configs/benchmarks/suite.yaml`` (each benchmark's "subset" update and its other update
kinds) with every strategy over several seeds, prints the headline table against ``full_finetune`` and the
paper's targets for ``laft_uriel``, and writes ``benchmarks/results/<benchmark>-<mode>.json``.

    python benchmarks/cml_quality.py --quick            # one seed, fewer languages: under 15 min on 2 CPU cores
    python benchmarks/cml_quality.py                    # every benchmark and update kind, seeds 0 1 2
    python benchmarks/cml_quality.py --benchmarks sib200 --kinds subset --seeds 0
    python benchmarks/cml_quality.py --show --markdown  # the tables already measured, as docs/benchmarks.md quotes them
    python benchmarks/cml_quality.py --show --plot docs/img  # ... and as charts: docs/img/<benchmark>-<mode>.png
    python benchmarks/cml_quality.py --v2 --quick       # the benchmark v2 (issue 30): under 10 min on 2 CPU cores
    python benchmarks/cml_quality.py --v2 --benchmarks ud_pos --seeds 0   # v2, one stream and seed (resumable)
    python benchmarks/cml_quality.py --v2 --show --markdown   # v2's tables, as docs/benchmarks.md quotes them

Runs go to ``runs/benchmarks/<benchmark>-<kind>-<mode>-seed<k>/`` and resume where they stopped. The full benchmark
takes many sessions, so the table is built in pieces and keeps each seed's rows: a run of some update kinds keeps the
other kinds' streams, a run of some seeds keeps the other seeds' rows, and a run of some strategies (``--strategies``,
full_finetune among them) keeps, per seed, the other strategies' rows when it measured the same full fine-tuning.
The update kinds of one benchmark share stage 0 (same data, model and seed), so its trained model is reused, not
retrained.

``--v2`` runs the suite ``configs/benchmarks/suite_v2.yaml`` (a suite with a ``name``): its runs and tables carry the
name (``runs/benchmarks/v2-<benchmark>-...``, ``benchmarks/results/v2-<benchmark>.json``, the quick mode's one stream
in ``v2-quick.json``), every table has both references (``full_finetune`` and ``no_update``), each row adds the
total loss, the figures against each reference and the same figures for every metric the task computes, each
stream records its stage-0 dev curves and how many languages full fine-tuning degraded significantly per seed, and
the run fails (exit 1) where that problem is absent: fewer than ``PROBLEM_MIN_LOSSES`` languages in a full run, no
language outside the update in the quick one.
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
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "configs" / "benchmarks" / "suite.yaml"
SUITE_V2 = REPO / "configs" / "benchmarks" / "suite_v2.yaml"
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
# What a named (v2) suite adds to each row: the sum of the losses, the figures against each reference (``versus``)
# and every metric's figures (``metrics``, the primary one named by ``primary_metric``), and which languages were
# significantly degraded (outside the update's languages too).
TOTAL_LOSS = "total_loss"
VERSUS = ("improved_share_gain_pp", "loss_magnitude_reduction", "aggregate_after_pp")
METRIC_FIGURES = ("n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded",
                  "mean_loss_magnitude", TOTAL_LOSS, "aggregate_after", "improved_share_gain_pp",
                  "loss_magnitude_reduction")
PROBLEM_MIN_LOSSES = 3  # a full v2 stream needs full fine-tuning to degrade this many languages significantly


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
    # A named suite (v2) prefixes its runs and tables with the name and adds the v2 figures (module docstring).
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=32)] | None = None
    references: list[str] = Field(["full_finetune"], min_length=1)
    default_strategy: str | None = None  # the strategy the project recommends, named in the tables
    added_after_results: list[str] = []  # variants added after seeing results: marked in the tables
    strategies: list[str] | None = None  # the strategies a full run runs (labels; default: all of each config's)
    benchmarks: dict[str, BenchmarkSpec]
    quick: QuickSelection

    @field_validator("references")
    @classmethod
    def _full_finetune_first(cls, references: list[str]) -> list[str]:
        if references[0] != "full_finetune" or len(set(references)) != len(references):
            raise ValueError(f"references must start with full_finetune and not repeat, got {references}")
        return references

    @field_validator("quick")
    @classmethod
    def _quick_names_known(cls, quick: QuickSelection, info: ValidationInfo) -> QuickSelection:
        unknown = sorted(set(quick.benchmarks) - set(info.data.get("benchmarks", {})))
        if unknown:
            raise ValueError(f"benchmarks {unknown} are not in this suite's benchmarks")
        if info.data.get("name") and len(quick.benchmarks) != 1:
            raise ValueError("a named suite's quick mode runs one benchmark (its table is <name>-quick.json)")
        return quick

    @model_validator(mode="after")
    def _references_run(self):
        for where, labels in (("strategies", self.strategies), ("quick.strategies", self.quick.strategies)):
            missing = [label for label in self.references if labels is not None and label not in labels]
            if missing:
                raise ValueError(f"{where} must run every reference; it lacks {missing}")
        named = [self.default_strategy] if self.default_strategy else []
        unknown = [label for label in named + self.added_after_results
                   if self.strategies is not None and label not in self.strategies]
        if unknown:
            raise ValueError(f"default_strategy and added_after_results must be among strategies; {unknown} are not")
        return self


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

    prefix = f"{suite['name']}-" if suite.get("name") else ""
    name = f"{prefix}{bench['name']}-{kind}-{'quick' if quick else 'full'}-seed{seed}"
    overrides = {**(bench.get("quick", {}) if quick else {}), **bench["update_kinds"][kind],
                 "seed": seed, "name": name, "output_dir": str(output_dir)}
    path = Path(suite["folder"]) / bench["config"]
    config = load_config(path, overrides_of(overrides))
    wanted = strategies or (suite["quick"]["strategies"] if quick else suite.get("strategies"))
    if wanted:
        labels = [s.label for s in config.strategies]
        references = suite.get("references") or ["full_finetune"]
        if set(references) - set(wanted) or set(wanted) - set(labels):
            raise CMLError(f"--strategies must name {' and '.join(references)} (the references) and only strategies "
                           f"of this config: {labels}", file=path)
        config = config.model_copy(update={"strategies": [s for s in config.strategies if s.label in wanted]})
    return config


def table_path(results_dir: Path, suite: dict, benchmark: str, mode: str) -> Path:
    """Where a benchmark's table goes: ``<benchmark>-<mode>.json``; a named suite's ``<name>-<benchmark>.json``,
    its quick mode's (one benchmark) ``<name>-quick.json``."""
    if suite.get("name"):
        return Path(results_dir) / f"{suite['name']}-{'quick' if mode == 'quick' else benchmark}.json"
    return Path(results_dir) / f"{benchmark}-{mode}.json"


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


def stream_rows(results: dict, references: list[str] | None = None) -> dict[str, dict]:
    """{strategy: figures} for the run's (single) update stage: the ``FIGURES``, None where undefined. With
    ``references`` (a named suite's) each row adds ``v2_extras``."""
    from cml.reports.tables import overview_rows

    summary = results["summary"]
    reference = results.get("reference_strategy", "full_finetune")
    stage = results["stages"][1]["name"]
    rows = {row["strategy"]: row for row in overview_rows(summary) if row["stage"] == stage}
    for strategy, row in rows.items():
        row["aggregate_after_vs_reference_pp"] = 100 * (row["aggregate_after"] - rows[reference]["aggregate_after"])
        row["train_seconds"] = sum(s["train"]["train_seconds"] for s in results["strategies"][strategy]["stages"][1:]
                                   if s.get("train"))
    figures = {strategy: {key: row.get(key) for key in FIGURES} for strategy, row in rows.items()}
    if references:
        for strategy, row in figures.items():
            row.update(v2_extras(summary, strategy, stage, references, results["metric"]))
    return figures


def with_total_loss(figures: dict) -> dict:
    """``figures`` plus the total loss: the sum of the losses over the degraded languages (mean loss x count)."""
    return {**figures, TOTAL_LOSS: figures["mean_loss_magnitude"] * figures["n_degraded"]}


def versus(figures: dict, reference: dict) -> dict:
    """A strategy's stage figures against a reference's: the paper's two figures (``compare_to_reference``) and
    the aggregate after the update minus the reference's, in points."""
    from cml.evaluation.cml_metrics import compare_to_reference

    return {**compare_to_reference(figures, reference),
            "aggregate_after_pp": 100 * (figures["aggregate_after"] - reference["aggregate_after"])}


def v2_extras(summary: dict, strategy: str, stage: str, references: list[str], primary: str) -> dict:
    """A named suite's additions to a strategy's row (``VERSUS``, ``METRIC_FIGURES``): the total loss, ``versus``
    each reference, every metric's figures (each against the references too), and the languages significantly
    degraded (all, and those outside the update)."""
    ours = summary[strategy][stage]
    languages = ours["languages"]

    def metric_figures(metric: str) -> dict:
        figures = with_total_loss({key: ours["metrics"][metric][key] for key in SUMMARY_FIGURES})
        against = {reference: versus(ours["metrics"][metric], summary[reference][stage]["metrics"][metric])
                   for reference in references if metric in summary.get(reference, {}).get(stage, {}).get("metrics", {})}
        return {**figures, **(against.get("full_finetune") or {}), "versus": against}

    degraded = [lang for lang, change in languages.items() if change["ci_high"] < 0]
    return {TOTAL_LOSS: with_total_loss(ours)[TOTAL_LOSS],
            "versus": {reference: versus(ours, summary[reference][stage]) for reference in references
                       if reference in summary},
            "primary_metric": primary,
            "metrics": {metric: metric_figures(metric) for metric in ours.get("metrics", {})},
            "significantly_degraded": degraded,
            "significantly_degraded_outside_update": [lang for lang in degraded
                                                      if languages[lang].get("category") != "in_update"]}


SUMMARY_FIGURES = ("n_languages", "n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded",
                   "mean_delta", "mean_loss_magnitude", "aggregate_after")


def stage0_curve(results: dict) -> dict:
    """Stage 0's training as the run records it: the dev score (primary metric) after each epoch, the epochs
    run of those allowed, the best epoch and whether early stopping ended it (a plateau on dev)."""
    train = results["stages"][0].get("train") or {}
    allowed = results["config"]["training"]["epochs"]
    return {"metric": results["metric"], "dev_history": train.get("dev_history", []),
            "epochs_run": train.get("epochs_run"), "epochs_allowed": allowed, "best_epoch": train.get("best_epoch"),
            "early_stopped": bool(train.get("epochs_run")) and train["epochs_run"] < allowed,
            "patience": results["config"]["training"].get("early_stopping_patience")}


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
                 order: list[str], stage0: dict[str, dict] | None = None, quick: bool = False) -> dict:
    """A stream of the table: its per-seed rows (strategies in ``order``), their mean and std over seeds, the
    paper's targets checked on those, and the runs that measured them. ``stage0`` ({seed: ``stage0_curve``}, a
    named suite's) adds the stage-0 curves and, per seed, the problem full fine-tuning shows (``problem``)."""
    seeds = sorted(per_seed, key=int)
    per_seed = {seed: {k: per_seed[seed][k] for k in in_order(per_seed[seed], order)} for seed in seeds}
    strategies = aggregate(per_seed)
    strategies = {k: strategies[k] for k in in_order(strategies, order)}
    stream = {"update_kind": update_kind, "config": config, "seeds": [int(seed) for seed in seeds],
              "strategies": strategies, "targets": targets(update_kind, strategies), "per_seed": per_seed, "runs": runs}
    if stage0 is not None:
        stream["stage0"] = {seed: stage0[seed] for seed in sorted(stage0, key=int)}
        stream["problem"] = problem(per_seed, quick)
    return stream


def problem(per_seed: dict[str, dict[str, dict]], quick: bool) -> dict:
    """Whether each seed shows the problem the benchmark measures: full fine-tuning degrades at least
    ``PROBLEM_MIN_LOSSES`` languages significantly (the quick mode: at least one language outside the update)."""
    by_seed = {}
    for seed, rows in per_seed.items():
        naive = rows.get("full_finetune") or {}
        outside = naive.get("significantly_degraded_outside_update") or []
        count = naive.get("n_significant_degraded") or 0
        by_seed[seed] = {"n_significant_degraded": count, "languages": naive.get("significantly_degraded") or [],
                         "outside_update": outside,
                         "present": bool(outside) if quick else count >= PROBLEM_MIN_LOSSES}
    return {"rule": ("full_finetune degrades a language outside the update significantly" if quick else
                     f"full_finetune degrades at least {PROBLEM_MIN_LOSSES} languages significantly"),
            "per_seed": by_seed, "present": bool(by_seed) and all(s["present"] for s in by_seed.values())}


def merged_stream(earlier: dict | None, stream: dict, order: list[str], quick: bool = False) -> dict:
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
    stage0 = None
    if "stage0" in stream:  # a named suite's: the earlier seeds' curves are kept with their rows
        stage0 = {seed: curve for seed, curve in (earlier.get("stage0") or {}).items() if seed in per_seed}
        stage0.update(stream["stage0"])
    return stream_table(stream["update_kind"], stream["config"], per_seed, runs + stream["runs"], order, stage0, quick)


def merged_report(header: dict, earlier: dict[str, dict], streams: dict[str, dict], kinds: list[str],
                  strategies: list[str], quick: bool = False) -> dict:
    """This run's streams merged into the earlier table: streams of update kinds this run did not repeat are kept
    whole, and a repeated stream keeps the seeds and strategies this run left out (``merged_stream``). ``kinds`` and
    ``strategies`` give the order, the suite's and the config's."""
    merged = {**earlier, **{kind: merged_stream(earlier.get(kind), stream, strategies, quick)
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
    if report.get("suite"):
        print("\n".join(v2_lines(report)))
        return
    headers = ["strategy", "seeds"] + [header for header, *_ in COLUMNS]
    for stream in report["streams"]:
        print(f"\n**{report['benchmark']}, kind `{stream['update_kind']}`** ({report['mode']}; mean ± std over seeds "
              "against full_finetune)\n")
        print("| " + " | ".join(headers) + " |")
        print("|---|---|" + "---:|" * len(COLUMNS))
        for row in table_rows(stream):
            print("| " + " | ".join(row) + " |")


# A named suite's columns: header, figure (a dotted path in a strategy's figures), scale, format.
V2_COLUMNS = (("improved", "n_improved", 1, "{:.1f}"), ("degraded", "n_degraded", 1, "{:.1f}"),
              ("sig. improved", "n_significant_improved", 1, "{:.1f}"),
              ("sig. degraded", "n_significant_degraded", 1, "{:.1f}"),
              ("mean loss (pt)", "mean_loss_magnitude", 100, "{:.2f}"), ("total loss (pt)", TOTAL_LOSS, 100, "{:.1f}"),
              ("after", "aggregate_after", 100, "{:.1f}"),
              ("after - FT (pt)", "versus.full_finetune.aggregate_after_pp", 1, "{:+.2f}"),
              ("after - no_update (pt)", "versus.no_update.aggregate_after_pp", 1, "{:+.2f}"),
              ("improved vs FT (pp)", "improved_share_gain_pp", 1, "{:+.1f}"),
              ("loss reduction vs FT", "loss_magnitude_reduction", 100, "{:+.0f}%"),
              ("train s", "train_seconds", 1, "{:.0f}"))


def figure_at(figures: dict, path: str):
    """The value at a dotted path of a strategy's figures (``versus.no_update.aggregate_after_pp``), else None."""
    for part in path.split("."):
        if not isinstance(figures, dict) or part not in figures:
            return None
        figures = figures[part]
    return figures


def v2_table(report: dict, stream: dict, metric: str | None) -> list[str]:
    """One Markdown table of a named suite's stream: the primary metric's figures (``metric`` None) or another
    metric's; references, the default strategy and variants added after seeing results marked in the first column."""
    references, default = report.get("references", []), report.get("default_strategy")
    late = set(report.get("added_after_results", []))
    columns = [c for c in V2_COLUMNS if metric is None or c[1] != "train_seconds"]

    def cell(strategy: str, figures: dict, key: str, scale: float, fmt: str) -> str:
        against = (key.split(".")[1] if key.startswith("versus.") else
                   "full_finetune" if key in AGAINST_REFERENCE else None)
        value = figure_at(figures if metric is None else figures.get("metrics", {}).get(metric, {}), key)
        if strategy == against or not isinstance(value, dict):
            return "—"
        mean = fmt.format(scale * value["mean"])
        return mean if value["std"] is None else f"{mean} ± {fmt.format(scale * value['std']).lstrip('+')}"

    def label(strategy: str) -> str:
        marks = (["reference"] if strategy in references else []) + (["default"] if strategy == default else [])
        text = f"**{strategy}**" if strategy == default else strategy
        return text + (" †" if strategy in late else "") + (f" ({', '.join(marks)})" if marks else "")

    lines = ["| " + " | ".join(["strategy", "seeds"] + [header for header, *_ in columns]) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for strategy, figures in stream["strategies"].items():
        seeds = " ".join(seed for seed, rows in stream["per_seed"].items() if strategy in rows)
        lines.append("| " + " | ".join([label(strategy), seeds] + [cell(strategy, figures, key, scale, fmt)
                                                                   for _, key, scale, fmt in columns]) + " |")
    return lines


def v2_lines(report: dict) -> list[str]:
    """A named suite's tables as Markdown: per stream, what full fine-tuning degraded per seed (the problem),
    stage 0's dev curve per seed, then one table for the primary metric and one per other metric."""
    lines = []
    for stream in report["streams"]:
        primary = report.get("primary_metric") or "primary metric"
        seeds = stream["seeds"]
        lines += ["", f"**{report['suite']} `{report['benchmark']}`, update kind `{stream['update_kind']}`** "
                  f"({report['mode']}; {len(seeds)} seed{'s' if len(seeds) != 1 else ''}: "
                  f"{' '.join(map(str, seeds))}; mean ± std over seeds; primary metric: {primary})", ""]
        check = stream.get("problem") or {}
        per_seed = check.get("per_seed", {})
        said = "; ".join(f"seed {seed}: {entry['n_significant_degraded']} "
                         f"({', '.join(entry['languages']) or 'none'}; outside the update: "
                         f"{', '.join(entry['outside_update']) or 'none'})" for seed, entry in per_seed.items())
        verdict = "present" if check.get("present") else "ABSENT"
        lines.append(f"Languages full_finetune degraded significantly (95% paired bootstrap): {said}. "
                     f"Problem ({check.get('rule', '')}): {verdict}.")
        curves = []
        for seed, curve in (stream.get("stage0") or {}).items():
            points = " ".join(f"{100 * value:.1f}" for value in curve["dev_history"])
            stop = ("early stop" if curve["early_stopped"] else "epoch limit")
            curves.append(f"seed {seed}: {points} (best epoch {curve['best_epoch']} of {curve['epochs_run']} run, "
                          f"{curve['epochs_allowed']} allowed; {stop})")
        if curves:
            lines += ["", f"Stage-0 dev {primary} per epoch (x100): " + "; ".join(curves) + "."]
        runs = "; ".join(f"`{run['command']}`, {run['wall_seconds'] / 60:.1f} min wall"
                         + (f" ({run['cpu_seconds'] / 60:.1f} min CPU)" if run.get("cpu_seconds") else "")
                         + f" on {run['machine']['cpus']} "
                         f"CPUs (seeds {', '.join(run['strategies'])}: {len(next(iter(run['strategies'].values())))} "
                         "strategies)" for run in stream["runs"])
        lines += ["", f"Runs: {runs}."]
        lines += [""] + v2_table(report, stream, None)
        metrics = next(iter(stream["strategies"].values()), {}).get("metrics", {})
        for metric in metrics:
            if metric == report.get("primary_metric"):
                continue
            lines += ["", f"Metric `{metric}` (not the primary one):", ""] + v2_table(report, stream, metric)
    lines += ["", "References: full_finetune (every parameter trained on the update) and no_update (the previous "
              "model kept as is). " + (f"**{report['default_strategy']}** is the strategy the project recommends. "
                                       if report.get("default_strategy") else "")
              + ("† a variant added after seeing results. " if report.get("added_after_results") else "")
              + "Points are x100 of the metric; `after - X` is the aggregate after the update minus X's."]
    return lines


# Where one strategy dominates another on a stream: at least as high an aggregate after the update, and no more
# languages significantly degraded and no larger mean loss (means over seeds).
DOMINANCE = (("aggregate_after", ">="), ("n_significant_degraded", "<="), ("mean_loss_magnitude", "<="))


def dominated_by(strategies: dict[str, dict]) -> dict[str, list[str]]:
    """{strategy: the strategies of the same stream that dominate it (``DOMINANCE``)}."""
    def mean(strategy: str, figure: str):
        return (strategies[strategy].get(figure) or {}).get("mean")

    def dominates(other: str, strategy: str) -> bool:
        pairs = [(mean(other, figure), mean(strategy, figure), rule) for figure, rule in DOMINANCE]
        return all(a is not None and b is not None and RULES[rule](a, b) for a, b, rule in pairs)

    return {strategy: [other for other in strategies if other != strategy and dominates(other, strategy)]
            for strategy in strategies}


def dominance_lines(tables: dict[str, dict], kind: str) -> list[str]:
    """A Markdown table: per strategy, on which of the measured streams of ``kind`` (``tables``: {benchmark: its
    table}) another strategy dominates it, and by which: how the v2 suite's strategies were cut."""
    streams = {name: stream["strategies"] for name, table in tables.items() for stream in table["streams"]
               if stream["update_kind"] == kind}
    verdicts = {name: dominated_by(strategies) for name, strategies in streams.items()}
    labels = list(dict.fromkeys(label for strategies in streams.values() for label in strategies))
    lines = ["| strategy | dominated on | " + " | ".join(f"{name} `{kind}`: dominated by" for name in streams) + " |",
             "|---|---:|" + "---|" * len(streams)]
    for label in labels:
        cells = [", ".join(verdicts[name][label]) or "—" if label in verdicts[name] else "not run"
                 for name in streams]
        count = sum(bool(verdicts[name].get(label)) for name in streams)
        lines.append(f"| {label} | {count} of {sum(label in verdicts[name] for name in streams)} | "
                     + " | ".join(cells) + " |")
    return lines


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    if report.get("suite"):  # a named suite's tables have more columns than a terminal table holds
        render_markdown(report)
        return
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
    parser.add_argument("--v2", action="store_true", help=f"the benchmark v2 (suite {SUITE_V2.relative_to(REPO)})")
    parser.add_argument("--suite", type=Path, help=f"the benchmark manifest (default: {SUITE.relative_to(REPO)})")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "benchmarks", help="where the runs go")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON tables go")
    parser.add_argument("--show", action="store_true", help="print the tables already in --results-dir; train nothing")
    parser.add_argument("--markdown", action="store_true", help="with --show: print the tables as Markdown")
    parser.add_argument("--dominated", metavar="KIND",
                        help="print, from the measured full tables, which strategies others dominate on the streams "
                             "of update kind KIND (how --v2's strategies were cut); train nothing")
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

    if args.v2 and args.suite:
        parser.error("--v2 runs its own suite; --suite chooses another")
    args.suite = args.suite or (SUITE_V2 if args.v2 else SUITE)
    suite = load_suite(args.suite)
    benchmarks = {name: {"name": name, **spec} for name, spec in suite["benchmarks"].items()}
    mode = "quick" if args.quick else "full"
    names = args.benchmarks or (suite["quick"]["benchmarks"] if args.quick else list(benchmarks))
    seeds = args.seeds or ([0] if args.quick else list(SEEDS))
    unknown = sorted(set(names) - set(benchmarks))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; {args.suite} has {sorted(benchmarks)}")
    if args.dominated:
        tables = {}
        for name in names:
            path = table_path(args.results_dir, suite, name, "full")
            if path.is_file():
                tables[name] = {"streams": list(earlier_streams(path).values())}
        if not tables:
            raise CMLError(f"no full tables of {sorted(names)} in {args.results_dir}")
        print("\n".join(dominance_lines(tables, args.dominated)))
        return 0
    if args.show:
        for name in names:
            path = table_path(args.results_dir, suite, name, mode)
            if not path.is_file() and suite.get("name") and not args.benchmarks:
                print(f"\n**{suite['name']} `{name}`**: not measured yet ({path.relative_to(args.results_dir)} "
                      "is absent)")
                continue
            if not path.is_file():
                raise CMLError(f"no {mode} table for {name} yet; run it first", file=path)
            measured = earlier_streams(path)
            kinds = args.kinds or list(measured)
            header = json.loads(path.read_text("utf-8"))
            report = {**{key: value for key, value in header.items() if key != "streams"},
                      "streams": [measured[k] for k in kinds if k in measured]}
            (render_markdown if args.markdown else render)(report)
            if args.plot:
                from cml.reports.plots import seeds_chart  # matplotlib: imported only when drawing, as in reports

                with atomic_open(args.plot / f"{name}-{mode}.png", "wb") as handle:
                    handle.write(seeds_chart(report["streams"], name, TARGET_AGGREGATE_PP))
        return 0
    command = "python benchmarks/cml_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    references = suite["references"] if suite.get("name") else None  # a named suite's rows add the v2 figures
    failed = False
    for name in names:
        bench = benchmarks[name]
        kinds = args.kinds or (suite["quick"]["update_kinds"] if args.quick else list(bench["update_kinds"]))
        if set(kinds) - set(bench["update_kinds"]):
            raise CMLError(f"{name} has the update kinds {list(bench['update_kinds'])}, not "
                           f"{sorted(set(kinds) - set(bench['update_kinds']))}", file=args.suite)
        path = table_path(args.results_dir, suite, name, mode)
        earlier = earlier_streams(path)
        labels = [s.label for s in run_config(bench, kinds[0], seeds[0], args.quick, suite, args.output_dir).strategies]
        streams = {}
        for kind in kinds:
            started, cpu_started = time.perf_counter(), time.process_time()
            per_seed, stage0 = {}, {}
            for seed in seeds:
                config = run_config(bench, kind, seed, args.quick, suite, args.output_dir, args.strategies)
                # Another update kind of this benchmark and seed may already have trained the same stage 0.
                reuse_stage0(config, [run_config(bench, other, seed, args.quick, suite, args.output_dir)
                                      for other in bench["update_kinds"] if other != kind])
                print(f"== {config.name}: {len(config.strategies)} strategies", flush=True)
                results = Experiment(config, resume=True).run()
                per_seed[str(seed)] = stream_rows(results, references)
                stage0[str(seed)] = stage0_curve(results)
                primary = results["metric"]
            run = {"command": command, "machine": machine, "wall_seconds": time.perf_counter() - started,
                   "cpu_seconds": time.process_time() - cpu_started,  # all threads: the cost on a shared machine
                   "strategies": {seed: list(rows) for seed, rows in per_seed.items()}}
            streams[kind] = stream_table(kind, bench["config"], per_seed, [run], labels,
                                         stage0 if references else None, args.quick)
        header = {"benchmark": name, "mode": mode}
        if references:
            header.update({"suite": suite["name"], "primary_metric": primary, "references": references,
                           "default_strategy": suite["default_strategy"],
                           "added_after_results": suite["added_after_results"]})
        report = merged_report(header, earlier, streams, list(bench["update_kinds"]), labels, args.quick)
        write_json(path, report)
        render(report)
        wall = sum(stream["runs"][-1]["wall_seconds"] for stream in streams.values())
        print(f"wall time {wall:.0f} s; table: {path}")
        absent = [stream["update_kind"] for stream in report["streams"] if not stream.get("problem", {}).get("present", True)]
        if absent:
            print(f"the problem is absent on {name} kinds {absent}: {report['streams'][0]['problem']['rule']} fails "
                  "on some seed", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    from cml.errors import exit_on_user_error

    with exit_on_user_error():
        sys.exit(main())

"""Fair tuning on dev for the benchmark v2 (issue 30, item 4): every strategy's learning rate (and replay's memory)
picked on dev from grids of the same size, per stream, by this one script; the grids and the choices are recorded,
and no choice looks at a test score. One tuning process per results file at a time (a second one is refused when
it would overwrite the first's points).

    python benchmarks/tune.py --stream ud_pos --seed 0              # every strategy's grid on ud_pos (resumable)
    python benchmarks/tune.py --stream ud_pos --strategies replay   # some strategies; the others' points are kept
    python benchmarks/tune.py --quick                               # smoke run: the suite's quick stream, same grid
    python benchmarks/tune.py --show [--markdown] [--stream ud_pos | --quick]   # the measured grids; trains nothing

The grids are ``configs/benchmarks/tuning_v2.yaml`` (per stream, per strategy: override keys and their values; the
grid is their product). For each strategy and grid point the stream's first update (the suite's "subset" update,
the config ``cml_quality.py --v2`` runs) starts from a copy of the stream's finished stage 0, read from the
benchmark's run folder ``runs/benchmarks/v2-<stream>-subset-<mode>-seed<k>/`` (trained by
``cml_quality.py --v2``; never trained nor written here: the benchmark may be running in it). After the update
every language's dev set is scored (the primary metric); per strategy the point with the highest mean dev score
over languages is chosen (each language weighs the same; ties: the first point, the grid lists values most
conservative first). Test sets are never scored.

Results: ``benchmarks/results/v2-tuning-<stream>.json`` (``--quick``: ``v2-tuning-quick.json``), written after every
point. A later invocation keeps each point measured with the same settings (stage 0's and the update's, the grid
point among them) and measures the rest; ``--quick`` tunes the quick mode's strategies by default.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, ValidationError, model_validator

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the quality package lies beside this script, which the tests load by its path
    sys.path.insert(0, BENCHMARKS)

from quality.ledger import RESULTS  # noqa: E402
from quality.run import stage0_model  # noqa: E402
from quality.suite import REPO, benchmarks_of, load_suite, run_config  # noqa: E402

from cml.config import ConfigOrigin, StrategyConfig  # noqa: E402
from cml.errors import CMLError, invalid_record  # noqa: E402

GRID = REPO / "configs" / "benchmarks" / "tuning_v2.yaml"
UPDATE_KIND = "subset"  # the v2 suite's one update kind: the stream's first update
FORMAT_VERSION = 1
OBJECTIVE = ("the highest mean over languages of the primary metric on each language's dev set after the stream's "
             "first update (each language weighs the same); ties: the first grid point")
IDENTITY_KEYS = ("method", "name")  # they say which strategy a config is, not how it trains


# ---------------------------------------------------------------------------------------------- the grid file

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StrategyGrid(RootModel[dict[str, Annotated[list[Any], Field(min_length=1)]]]):
    """One strategy's grid: dotted override keys of its config, each with the values tried."""

    @model_validator(mode="after")
    def _knobs(self):
        if not self.root:
            raise ValueError("a tuned strategy tunes at least one setting")
        for key, values in self.root.items():
            if not all(key.split(".")) or key.split(".")[0] in IDENTITY_KEYS:
                raise ValueError(f"{key!r} is no setting to tune (a dotted key of the strategy's config other than "
                                 f"{' or '.join(IDENTITY_KEYS)})")
            try:
                distinct = {json.dumps(value, sort_keys=True) for value in values}
            except TypeError:  # a YAML date or time: pydantic reports only ValueError as the file's error
                raise ValueError(f"{key} lists a value that is not a number, string, boolean or null") from None
            if len(distinct) != len(values):
                raise ValueError(f"{key} lists a value twice")
        return self

    @property
    def size(self) -> int:
        return len(self.points())

    def points(self) -> list[dict[str, Any]]:
        """The grid's points in order: the product of the lists, the first key varying slowest."""
        return [dict(zip(self.root, values)) for values in itertools.product(*self.root.values())]


class StreamGrid(RootModel[dict[str, StrategyGrid]]):
    """A stream's grids by strategy label."""

    @model_validator(mode="after")
    def _same_size(self):
        sizes = {label: grid.size for label, grid in self.root.items()}
        if not sizes:
            raise ValueError("a stream tunes at least one strategy")
        if len(set(sizes.values())) > 1:
            raise ValueError("fair tuning gives every strategy of a stream a grid of the same size; here "
                             + ", ".join(f"{label} has {size} points" for label, size in sizes.items()))
        return self


class TuningGrid(_Strict):
    suite: str  # the suite file whose streams are tuned, relative to the grid file
    streams: dict[str, StreamGrid]


@dataclasses.dataclass(frozen=True)
class Grids:
    """The grid file, validated against its suite: each stream's strategies exist there and take the overrides."""

    path: Path
    grid: TuningGrid
    suite: dict
    origin: ConfigOrigin  # names the file's lines in errors

    def of(self, stream: str) -> dict[str, StrategyGrid]:
        return self.grid.streams[stream].root


STRATEGY_CONFIG = TypeAdapter(StrategyConfig)


def with_point(config, point: dict[str, Any]):
    """The strategy config ``config`` with the grid point's overrides (dotted keys) set, validated again."""
    tree = config.model_dump()
    for key, value in point.items():
        parts = key.split(".")
        section = tree
        for depth, part in enumerate(parts[:-1]):
            section = section.setdefault(part, {})
            if not isinstance(section, dict):
                raise ValueError(f"{'.'.join(parts[:depth + 1])} is a value, not a section")
        section[parts[-1]] = value
    return STRATEGY_CONFIG.validate_python(tree)


def why_not(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        return "unknown setting (check its spelling)" if first["type"] == "extra_forbidden" else first["msg"]
    return str(err)


def load_grids(path: Path) -> Grids:
    """The grid file and its suite, validated; every error names the grid file's line and key."""
    from cml.config import read_yaml, validated

    tree, node = read_yaml(path, what="tuning grid")
    grid, origin = validated(TuningGrid, tree, node, path), ConfigOrigin(path, node)
    suite_path = path.parent / grid.suite
    if not suite_path.is_file():
        raise CMLError(f"suite file not found: {suite_path}", **origin.locate(("suite",)))
    grids = Grids(path, grid, load_suite(suite_path), origin)
    for stream in grid.streams:
        check_stream(grids, stream)
    return grids


def check_stream(grids: Grids, stream: str) -> None:
    """Refuse a stream the suite lacks, a strategy the stream does not run (or one that trains nothing), and an
    override the strategy's config refuses."""
    benchmarks = benchmarks_of(grids.suite)
    if stream not in benchmarks or UPDATE_KIND not in benchmarks[stream]["update_kinds"]:
        raise CMLError(f"the suite has no stream {stream!r} with a {UPDATE_KIND!r} update; it has "
                       f"{sorted(benchmarks)}", **grids.origin.locate(("streams", stream)))
    # any seed and output folder: only the strategies are read
    runs = stream_config(grids, stream, 0, quick=False, output_dir=REPO, strategies=False)
    strategies = {s.label: s for s in runs.strategies}
    for label, grid in grids.of(stream).items():
        where = ("streams", stream, label)
        if label not in strategies:
            raise CMLError(f"{stream} runs no strategy {label!r}; it runs {sorted(strategies)}",
                           **grids.origin.locate(where))
        if strategies[label].method == "no_update":
            raise CMLError("no_update trains nothing: there is nothing to tune", **grids.origin.locate(where))
        for key, values in grid.root.items():
            for value in values:
                try:
                    with_point(strategies[label], {key: value})
                except (ValidationError, ValueError) as err:
                    raise CMLError(f"{json.dumps(value)} does not fit {label}: {why_not(err)}",
                                   **grids.origin.locate((*where, key))) from None


def stream_config(grids: Grids, stream: str, seed: int, quick: bool, output_dir: Path, strategies: bool = True):
    """The experiment config ``cml_quality.py --v2`` runs for the stream and seed (its run folder holds stage 0).
    ``strategies``: with the references and the stream's tuned strategies (also in quick mode, whose suite list is
    shorter); else with the strategies the full benchmark runs there."""
    wanted = list(dict.fromkeys([*grids.suite["references"], *grids.of(stream)])) if strategies else None
    return run_config(benchmarks_of(grids.suite)[stream], UPDATE_KIND, seed, quick, grids.suite, output_dir, wanted)


# ---------------------------------------------------------------------------------------------- the results file

class MeasuredPoint(_Strict):
    overrides: dict[str, Any]  # the grid point: override key -> value
    fingerprint: str  # stage 0's and the update's settings: a point is kept only while they are unchanged
    mean_dev: float  # the objective: the mean over languages of their dev scores
    dev: dict[str, float]  # every language's dev score (primary metric)
    train_seconds: float  # the update's wall time (training, and a gate's dev scoring)
    cpu_seconds: float  # the update's CPU time, all threads (the cost on a shared machine)
    eval_seconds: float  # scoring the dev sets after the update


class StrategyTuning(_Strict):
    method: str
    grid: dict[str, list[Any]]
    points: list[MeasuredPoint]  # those measured, in grid order
    chosen: dict[str, Any] | None  # the chosen point's overrides; None until every point is measured
    chosen_mean_dev: float | None


class TuningReport(_Strict):
    """``v2-tuning-<stream>.json``: one stream and seed's tuning. Read and written only through this class."""

    format_version: Literal[FORMAT_VERSION]
    suite: str | None
    stream: str
    mode: Literal["full", "quick"]
    seed: int
    update_kind: str
    config: str  # the stream's experiment config
    grid_file: str
    stage0_run: str  # the run folder whose finished stage 0 every point starts from
    primary_metric: str
    objective: str
    test_used: Literal[False]  # no choice, and no number in this file, comes from a test set
    command: str
    strategies: dict[str, StrategyTuning]

    @classmethod
    def read(cls, path: Path) -> TuningReport:
        from cml.io import read_json

        data = read_json(path, "tuning results")
        version = data.get("format_version") if isinstance(data, dict) else None
        if type(version) is not int or version != FORMAT_VERSION:  # noqa: E721 - true == 1 is no version
            raise CMLError(f"tuning results in format {json.dumps(version)}; this script reads format "
                           f"{FORMAT_VERSION}: move the file away to tune again", file=path, key="format_version")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise invalid_record(err, "tuning results", path) from None

    @model_validator(mode="after")
    def _consistent(self):
        """Every point scores the same languages (the tables read each one), and a choice is a measured point."""
        languages = {tuple(sorted(p.dev)) for tuning in self.strategies.values() for p in tuning.points}
        if len(languages) > 1:
            raise ValueError(f"the points score different languages: {sorted(languages)}")
        for label, tuning in self.strategies.items():
            if tuning.chosen is not None and point_key(tuning.chosen) not in {point_key(p.overrides)
                                                                              for p in tuning.points}:
                raise ValueError(f"{label}'s chosen point {tuning.chosen} is none of its measured points")
        return self

    def write(self, path: Path, expected: tuple[int, int] | None) -> tuple[int, int]:
        """Write atomically; refuse when the file is not as this process last saw it (``expected``: its
        :func:`file_stamp` when read, None when absent, then what this returned): another tuning writes there
        too, and one of them would lose the other's points. Returns the file's new stamp."""
        from cml.io import write_json

        if file_stamp(path) != expected:
            raise CMLError("changed by another process since this tuning last wrote it; run one tuning per results "
                           "file at a time (the points measured here since are lost)", file=path)
        write_json(path, self.model_dump(mode="json"))
        return file_stamp(path)


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_mtime_ns, found.st_size


def results_path(results_dir: Path, suite: dict, stream: str, quick: bool) -> Path:
    prefix = f"{suite['name']}-" if suite.get("name") else ""
    return results_dir / f"{prefix}tuning-{'quick' if quick else stream}.json"


def choose(points: list[MeasuredPoint]) -> MeasuredPoint:
    """The point with the highest mean dev score; ties: the first (max keeps the first of equal keys)."""
    return max(points, key=lambda point: point.mean_dev)


def point_key(overrides: dict[str, Any]) -> str:
    return json.dumps(overrides, sort_keys=True)


# ---------------------------------------------------------------------------------------------- measuring

@dataclasses.dataclass(frozen=True)
class Request:
    """What one tuning invocation measures."""

    grids: Grids
    stream: str
    seed: int
    quick: bool
    strategies: list[str]  # labels to measure; the stream's other grids are kept as measured before
    output_dir: Path  # the benchmark's run folders' parent
    results: Path
    command: str
    replace: bool  # start over a results file of another stream, mode or seed instead of refusing it

    @property
    def mode(self) -> Literal["full", "quick"]:
        return "quick" if self.quick else "full"

    def train_command(self) -> str:
        """The command that trains the stage 0 this tuning starts from."""
        if self.quick:
            return f"python benchmarks/cml_quality.py --v2 --quick --seeds {self.seed}"
        return f"python benchmarks/cml_quality.py --v2 --benchmarks {self.stream} --seeds {self.seed}"


@dataclasses.dataclass(frozen=True)
class PlannedPoint:
    overrides: dict[str, Any]
    config: Any  # the strategy config with the overrides
    fingerprint: str


def stage0_identity(experiment) -> str:
    """Stage 0 as trained: its saved files' hashes (a stage 0 retrained with the same settings, after
    ``--overwrite`` or on another machine, has other weights), and the package versions the updates run with."""
    from cml.io import sha256_bytes
    from cml.run_folder import INITIAL
    from cml.versions import package_versions

    stage_dir = experiment.stage_dir(INITIAL, 0)
    files = {path.name: sha256_bytes(path.read_bytes()) for path in sorted(stage_dir.iterdir()) if path.is_file()}
    return sha256_bytes(json.dumps({"files": files, "versions": package_versions()}, sort_keys=True).encode())


def fingerprint(experiment, strategy_config, stage0: str) -> str:
    """What a point's scores depend on: stage 0 (:func:`stage0_identity`) and its settings, and the update's
    settings (data, model, training, seed and the strategy config with the point's overrides)."""
    from cml.io import sha256_bytes

    settings = {"stage0": experiment.settings(0), "stage0_identity": stage0,
                "update": experiment.settings(1, strategy_config)}
    return sha256_bytes(json.dumps(settings, sort_keys=True).encode())


def plan(experiment, grids: dict[str, StrategyGrid], stage0: str) -> dict[str, list[PlannedPoint]]:
    """Every grid point of every strategy of the stream, in grid order."""
    strategies = {s.label: s for s in experiment.config.strategies}
    planned = {}
    for label, grid in grids.items():
        configs = [(point, with_point(strategies[label], point)) for point in grid.points()]
        planned[label] = [PlannedPoint(point, config, fingerprint(experiment, config, stage0))
                          for point, config in configs]
    return planned


def earlier_report(request: Request) -> TuningReport | None:
    """The results file's tuning of this stream, mode and seed, if any. A file of another stream, mode or seed is
    refused (hours of measurements) unless ``replace``, which starts over it."""
    if not request.results.is_file():
        return None
    report = TuningReport.read(request.results)
    if (report.stream, report.mode, report.seed) != (request.stream, request.mode, request.seed):
        if request.replace:
            return None
        raise CMLError(f"holds the {report.mode} tuning of {report.stream}, seed {report.seed}; pass --replace to "
                       "start this one over it", file=request.results)
    return report


def earlier_points(report: TuningReport | None, planned: dict[str, list[PlannedPoint]]
                   ) -> dict[str, dict[str, MeasuredPoint]]:
    """Per strategy, the points ``report`` holds that were measured with the same settings, by point key."""
    kept: dict[str, dict[str, MeasuredPoint]] = {label: {} for label in planned}
    if report is None:
        return kept
    for label, points in planned.items():
        before = {point_key(p.overrides): p for p in report.strategies[label].points} \
            if label in report.strategies else {}
        for point in points:
            earlier = before.get(point_key(point.overrides))
            if earlier and earlier.fingerprint == point.fingerprint:
                kept[label][point_key(point.overrides)] = earlier
    return kept


def measure_point(experiment, stage0, point: PlannedPoint) -> MeasuredPoint:
    """One grid point: the update from a copy of stage 0, then every language's dev score."""
    from cml.evaluation.inference import evaluate_languages
    from cml.strategies import make_strategy

    strategy = make_strategy(point.config)
    # No checkpoint folder: the run folder's may be the benchmark's own, in use; a point cut short is redone whole.
    ctx = dataclasses.replace(experiment.context(strategy.name, 1), checkpoint_dir=None, resume=False, tracking=None)
    wall, cpu = time.perf_counter(), time.process_time()
    model, _ = strategy.update(copy.deepcopy(stage0), ctx)
    train_seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    started = time.perf_counter()
    results = evaluate_languages(model, experiment.task, experiment.dev, experiment.config.training.eval_batch_size)
    dev = {lang: metrics[experiment.task.primary_metric] for lang, (metrics, _) in results.items()}
    return MeasuredPoint(overrides=point.overrides, fingerprint=point.fingerprint,
                         mean_dev=sum(dev.values()) / len(dev), dev=dev, train_seconds=train_seconds,
                         cpu_seconds=cpu_seconds, eval_seconds=time.perf_counter() - started)


def strategy_tuning(method: str, grid: StrategyGrid, points: list[MeasuredPoint]) -> StrategyTuning:
    """A strategy's record; its choice once every grid point is measured (a partial grid chooses nothing)."""
    chosen = choose(points) if len(points) == grid.size else None
    return StrategyTuning(method=method, grid=grid.root, points=points, chosen=chosen.overrides if chosen else None,
                          chosen_mean_dev=chosen.mean_dev if chosen else None)


def tuning_report(request: Request, experiment, measured: dict[str, dict[str, MeasuredPoint]],
                  planned: dict[str, list[PlannedPoint]]) -> TuningReport:
    grids, suite = request.grids.of(request.stream), request.grids.suite
    methods = {s.label: s.method for s in experiment.config.strategies}
    strategies = {label: strategy_tuning(methods[label], grid, [measured[label][point_key(p.overrides)]
                                                                for p in planned[label]
                                                                if point_key(p.overrides) in measured[label]])
                  for label, grid in grids.items()}
    config = Path(suite["folder"]) / benchmarks_of(suite)[request.stream]["config"]
    return TuningReport(format_version=FORMAT_VERSION, suite=suite.get("name"), stream=request.stream,
                        mode=request.mode, seed=request.seed, update_kind=UPDATE_KIND, config=shown_path(config),
                        grid_file=shown_path(request.grids.path), stage0_run=shown_path(experiment.run_dir),
                        primary_metric=experiment.task.primary_metric, objective=OBJECTIVE, test_used=False,
                        command=request.command, strategies=strategies)


def tune(request: Request) -> TuningReport:
    """Measure the requested strategies' grid points not measured before with the same settings, writing the
    results after each."""
    from tqdm.auto import tqdm

    from cml.experiment import Experiment

    config = stream_config(request.grids, request.stream, request.seed, request.quick, request.output_dir)
    experiment = Experiment(config, resume=True)
    stamp = file_stamp(request.results)
    earlier = earlier_report(request)
    stage0 = stage0_model(experiment, request.train_command())
    planned = plan(experiment, request.grids.of(request.stream), stage0_identity(experiment))
    measured = earlier_points(earlier, planned)
    todo = [(label, point) for label in request.strategies for point in planned[label]
            if point_key(point.overrides) not in measured[label]]
    for label in request.strategies:
        if measured[label]:
            print(f"{label}: {len(measured[label])} of {len(planned[label])} points measured before, kept", flush=True)
    stamp = tuning_report(request, experiment, measured, planned).write(request.results, stamp)
    with tqdm(todo, desc=f"tuning {request.stream}", unit="point") as bar:
        for label, point in bar:
            bar.set_postfix_str(f"{label} {point_text(point.overrides)}")
            result = measure_point(experiment, stage0, point)
            measured[label][point_key(point.overrides)] = result
            tqdm.write(f"{label} {point_text(point.overrides)}: mean dev {experiment.task.primary_metric} "
                       f"{result.mean_dev:.4f} ({result.train_seconds:.0f} s)")
            # after every point: an interrupted tuning keeps what it measured
            stamp = tuning_report(request, experiment, measured, planned).write(request.results, stamp)
    return tuning_report(request, experiment, measured, planned)


def shown_path(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ---------------------------------------------------------------------------------------------- showing

def value_text(value: Any) -> str:
    if isinstance(value, float) and value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"  # 2.5e-5, not 2.5e-05 nor 0.000025
    return "null" if value is None else str(value)


def point_text(point: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value_text(value)}" for key, value in point.items())


def grid_edges(tuning: StrategyTuning) -> list[str]:
    """The settings whose chosen value is the first or last of a list of three or more: the dev score may still
    rise beyond the grid there, so the grid should reach further before its pick is trusted (two values are both
    edges, and say nothing of the kind)."""
    if tuning.chosen is None:
        return []
    edges = []
    for key, values in tuning.grid.items():
        if len(values) >= 3 and tuning.chosen[key] in (values[0], values[-1]):
            side = "lowest" if tuning.chosen[key] == values[0] else "highest"
            edges.append(f"the grid's {side} {key}")
    return edges


def strategy_table(label: str, tuning: StrategyTuning, languages: list[str]
                   ) -> tuple[str, list[str], list[list[str]]]:
    """(title, header, rows): one row per grid point, in grid order; the chosen one marked."""
    measured = {point_key(p.overrides): p for p in tuning.points}
    keys = list(tuning.grid)
    rows = []
    for values in itertools.product(*tuning.grid.values()):
        point = dict(zip(keys, values))
        found = measured.get(point_key(point))
        mark = "yes" if tuning.chosen is not None and point_key(tuning.chosen) == point_key(point) else ""
        scores = [f"{100 * found.mean_dev:.2f}", *(f"{100 * found.dev[lang]:.1f}" for lang in languages),
                  f"{found.train_seconds:.0f}"] if found else ["not measured", *([""] * (len(languages) + 1))]
        rows.append([mark, *map(value_text, values), *scores])
    status = "chosen: " + point_text(tuning.chosen) if tuning.chosen is not None else \
        f"{len(tuning.points)} of {len(rows)} points measured, none chosen yet"
    if edges := grid_edges(tuning):
        status += f" ({' and '.join(edges)}: a better value may lie beyond it)"
    name = label if label == tuning.method else f"{label} ({tuning.method})"
    return f"{name}: {status}", ["chosen", *keys, "mean dev", *languages, "train s"], rows


def show(report: TuningReport, markdown: bool) -> None:
    languages = sorted({lang for tuning in report.strategies.values() for p in tuning.points for lang in p.dev})
    suite = f"{report.suite} " if report.suite else ""
    heading = (f"{suite}tuning of `{report.stream}` ({report.mode}, seed {report.seed}): dev "
               f"{report.primary_metric} x100 per grid point after the `{report.update_kind}` update from "
               f"{report.stage0_run}; objective: {report.objective}. Test sets not used.")
    print(f"**{heading}**\n" if markdown else heading + "\n")
    for title, header, rows in (strategy_table(label, tuning, languages)
                                for label, tuning in report.strategies.items()):
        if markdown:
            print(f"_{title}_\n")
            print("| " + " | ".join(header) + " |")
            print("|" + "|".join("---" if column == "chosen" else "---:" for column in header) + "|")
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            print(title)
            widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
            for row in (header, *rows):
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        print()


def show_streams(grids: Grids, streams: list[str], results_dir: Path, quick: bool, markdown: bool) -> None:
    for stream in streams:
        path = results_path(results_dir, grids.suite, stream, quick)
        if path.is_file():
            show(TuningReport.read(path), markdown)
        else:
            print(f"`{stream}`: not tuned yet ({path.name} is absent)\n")


# ---------------------------------------------------------------------------------------------- command line

def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", help="the stream to tune (a benchmark of the grid file's suite)")
    parser.add_argument("--seed", type=int, default=0, help="whose stage 0 the updates start from (default 0)")
    parser.add_argument("--strategies", nargs="+", help="only these strategies' grids (labels; default: all the "
                        "stream's, --quick: those of the suite's quick mode)")
    parser.add_argument("--quick", action="store_true", help="the suite's quick stream (its stage 0 from "
                        "cml_quality.py --v2 --quick), the same grids: a smoke run")
    parser.add_argument("--grid", type=Path, default=GRID, help=f"the grid file (default: {GRID.relative_to(REPO)})")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "benchmarks",
                        help="where the benchmark's runs lie (stage 0 is read there, nothing is written)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the tuning JSON goes")
    parser.add_argument("--replace", action="store_true",
                        help="start over a results file of another stream, mode or seed")
    parser.add_argument("--show", action="store_true", help="print the measured grids; train nothing")
    parser.add_argument("--markdown", action="store_true", help="with --show: as Markdown tables")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.markdown and not args.show:
        parser.error("--markdown goes with --show")
    if args.show and args.strategies:
        parser.error("--show prints whole grids; --strategies chooses what to measure")
    grids = load_grids(args.grid)
    quick_stream = grids.suite["quick"]["benchmarks"][0]
    if args.quick and args.stream not in (None, quick_stream):
        parser.error(f"--quick tunes the suite's quick stream, {quick_stream}")
    stream = quick_stream if args.quick else args.stream
    if stream is not None and stream not in grids.grid.streams:
        parser.error(f"{args.grid} has no grids for {stream!r}; it has {sorted(grids.grid.streams)}")
    if args.show:
        show_streams(grids, [stream] if stream else list(grids.grid.streams), args.results_dir, args.quick,
                     args.markdown)
        return 0
    if stream is None:
        parser.error("--stream (or --quick) says which stream to tune")
    tuned = list(grids.of(stream))
    default = [label for label in tuned if label in grids.suite["quick"]["strategies"]] if args.quick else tuned
    labels = args.strategies or default
    unknown = [label for label in labels if label not in tuned]
    if unknown:
        parser.error(f"{args.grid} tunes {tuned} on {stream}, not {unknown}")
    if not labels:
        parser.error(f"{args.grid} tunes none of the quick mode's strategies on {stream}: name some (--strategies)")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    request = Request(grids, stream, args.seed, args.quick, labels, args.output_dir,
                      results_path(args.results_dir, grids.suite, stream, args.quick),
                      "python benchmarks/tune.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                      args.replace)
    report = tune(request)
    show(report, markdown=False)
    print(f"written: {request.results}")
    return 0


if __name__ == "__main__":
    from cml.errors import exit_on_user_error

    with exit_on_user_error():
        sys.exit(main())

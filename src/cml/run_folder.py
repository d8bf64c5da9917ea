"""A run folder, what ``cml run`` writes: where each thing lies in it and what its JSON files hold. This module
alone knows the layout; every writer (the experiment) and reader (serving, reports, the benchmark scripts) goes
through :class:`RunFolder`. The records are versioned (:data:`FORMAT_VERSION`): a folder written in another
format is refused with a message that says so, never read by guesswork.

Layout::

    <run>/results.json                                         RunResults
    <run>/run.log, report.md, report.html, results.csv, report_figures/
    <run>/stages/initial/0-<stage>/{model.safetensors, state.json}     the stage-0 model; state.json: SavedStage
    <run>/stages/<strategy>/<k>-<stage>/{model.safetensors, state.json}  what the strategy changed at stage k
    <run>/predictions/<strategy>/<k>-<stage>.jsonl            per test item: prediction, score, scores
    <run>/checkpoints/<strategy>/<k>/...                       in-progress training, removed when the run ends

A run folder may come from anyone, so a record that would send a reader outside the folder (a prediction file at
``/etc/passwd``), or make it work without bound (thousands of languages), is refused here, once, rather than at
each use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .bootstrap import IntervalChange
from .errors import CMLError, invalid_record
from .io import read_json, write_json

FORMAT_VERSION = 1
MAX_LANGUAGES = 1000  # SIB-200 has 205; more is not a run this tool made
INITIAL = "initial"
"""The strategy folder of stage 0, the full fine-tuning every strategy starts from."""
Category = Literal["in_update", "neighbour", "far"]
"""Where a language stands to an update: one of its languages, close to one (URIEL distance), or far."""
CATEGORIES: tuple[str, ...] = get_args(Category)
RESULTS = "results.json"
STATE = "state.json"
WEIGHTS = "model.safetensors"
# What a run writes in its folder (besides the lock): what --overwrite removes, and nothing else.
OUTPUTS = (RESULTS, "run.log", "stages", "predictions", "checkpoints", "report.md", "report.html", "results.csv",
           "report_figures")


def _inside_run_folder(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\x00" in path:
        raise ValueError(f"must be a path inside the run folder, got {path[:80]!r}")
    return path


class _Record(BaseModel):
    """The fields every reader relies on are typed, strictly (readers use the file's values, so ``"1"`` is no
    index and ``"false"`` no boolean); a strategy's own fields (its gate, routes, groups) pass through as written."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


class StageRecord(_Record):
    """One stage of one strategy: what it trained on and how every language scored."""

    name: str
    index: int = Field(ge=0)
    updated_languages: list[str]
    train_examples: dict[str, int]
    scores: dict[str, float]
    metrics: dict[str, dict[str, Any]]
    predictions: Annotated[str, AfterValidator(_inside_run_folder)]
    warnings: list[str]


class SavedStage(_Record):
    """A finished stage's ``state.json``: its record and the settings it was made with."""

    format_version: Literal[FORMAT_VERSION]
    complete: bool
    record: StageRecord
    settings: dict[str, Any]


class StrategyRun(_Record):
    method: str
    stages: list[StageRecord] = Field(min_length=1)


class LanguageChange(_Record, IntervalChange):
    """One language's change over an update, of one metric, and where the language stands to the update."""

    category: Category
    distance_to_update: float | None


class Figures(_Record):
    """What an update did to a set of languages (``cml.evaluation.cml_metrics.SUMMARY_KEYS``); the means are
    None for a set without languages (a category no language fell in)."""

    n_languages: int
    n_improved: int
    n_degraded: int
    n_significant_improved: int
    n_significant_degraded: int
    mean_delta: float | None
    mean_loss_magnitude: float | None
    max_loss: float | None
    negative_flip_rate: float | None
    aggregate_before: float | None
    aggregate_after: float | None

    @model_validator(mode="after")
    def _means_of_languages(self):
        means = (self.mean_delta, self.negative_flip_rate, self.aggregate_before, self.aggregate_after)
        if self.n_languages and None in means:
            raise ValueError("figures of a set of languages must have their means")
        return self


class MetricSummary(Figures):
    by_category: dict[Category, Figures]
    vs_reference: dict[str, float | None] | None
    languages: dict[str, LanguageChange]

    @model_validator(mode="after")
    def _every_category(self):
        if set(self.by_category) != set(CATEGORIES):
            raise ValueError(f"by_category must hold {', '.join(CATEGORIES)}")
        return self


class SummarySettings(_Record):
    reference: str
    neighbour_threshold: float
    resamples: int
    seed: int
    confidence: float


class StageSummary(MetricSummary):
    """An update stage's summary: its primary metric's figures, and each metric's under ``metrics``."""

    settings: SummarySettings
    metrics: dict[str, MetricSummary]


class RunResults(_Record):
    """A run's ``results.json``."""

    format_version: Literal[FORMAT_VERSION]
    name: str
    task: str
    metric: str
    seed: int
    languages: list[str] = Field(min_length=1, max_length=MAX_LANGUAGES)
    labels: list[str]  # empty for seq2seq
    reference_strategy: str
    stages: list[StageRecord] = Field(min_length=1)
    strategies: dict[str, StrategyRun] = Field(min_length=1)
    summary: dict[str, dict[str, StageSummary]]
    config: dict[str, Any]

    @model_validator(mode="after")
    def _one_run(self):
        """What one part names, another holds: every record scores every language, and the summary is of the
        strategies' stages and the run's languages."""
        languages = set(self.languages)
        for strategy, run in self.strategies.items():
            for record in run.stages:
                if set(record.scores) != languages:
                    raise ValueError(f"{strategy}, stage {record.name}: scores must be of the run's languages")
        for strategy, stages in self.summary.items():
            if strategy not in self.strategies:
                raise ValueError(f"summary of {strategy!r}, a strategy the run lacks")
            for name, stage in stages.items():
                if name not in {record.name for record in self.strategies[strategy].stages}:
                    raise ValueError(f"summary of {strategy}, stage {name!r}, a stage the strategy lacks")
                if any(set(figures.languages) != languages for figures in (stage, *stage.metrics.values())):
                    raise ValueError(f"summary of {strategy}, stage {name}: must be of the run's languages")
        return self


WHAT = {SavedStage: "a finished stage's state", RunResults: "the results of a cml run"}


def checked(model: type[BaseModel], value: Any, path: Path) -> Any:
    """``value`` validated as ``model``, else a CMLError naming the file and the first bad key. A record of
    another format version says so rather than which of its keys this version lacks."""
    if isinstance(value, dict) and "format_version" not in value and {"strategies", "record"} & set(value):
        raise CMLError(f"{WHAT[model]} in an earlier format (no format_version); this version of cml reads format "
                       f"{FORMAT_VERSION}: redo the run with --overwrite", file=path, key="format_version")
    version = value.get("format_version") if isinstance(value, dict) else None
    if version is not None and version != FORMAT_VERSION:
        raise CMLError(f"{WHAT[model]} in format {json.dumps(version)[:20]}; this version of cml reads format "
                       f"{FORMAT_VERSION}: redo the run with --overwrite", file=path, key="format_version")
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise invalid_record(err, WHAT[model], path) from None


class RunFolder:
    """The folder of one run: paths of its parts, and its records read (checked) and written (atomically)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def of(cls, output_dir: str | Path, name: str) -> RunFolder:
        """The folder of the run ``name`` (a config's ``name``: its ``FolderName`` type makes it one path
        component) in ``output_dir``."""
        return cls(Path(output_dir) / name)

    @property
    def results_file(self) -> Path:
        return self.root / RESULTS

    @property
    def log_file(self) -> Path:
        return self.root / "run.log"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def stage_dir(self, strategy: str, index: int, stage_name: str) -> Path:
        """Where a strategy's finished stage lives: ``stages/<strategy>/<index>-<stage name>``."""
        return self.root / "stages" / strategy / f"{index}-{stage_name}"

    def checkpoint_dir(self, strategy: str, index: int) -> Path:
        return self.checkpoints / strategy / str(index)

    def predictions_file(self, strategy: str, index: int, stage_name: str) -> Path:
        return self.root / "predictions" / strategy / f"{index}-{stage_name}.jsonl"

    def stage0_parts(self) -> tuple[Path, Path]:
        """What stage 0 leaves in the folder (its weights and state, and its predictions): all another run needs
        to reuse it."""
        return self.root / "stages" / INITIAL, self.root / "predictions" / INITIAL

    def relative(self, path: Path) -> str:
        """How a record names a file of this folder."""
        return PurePosixPath(Path(path).relative_to(self.root)).as_posix()

    def resolve(self, recorded: str) -> Path:
        """The file a record names (checked on read to lie inside the folder)."""
        return self.root / recorded

    def create(self) -> None:
        """Create the folder, refusing one that is a link elsewhere or not writable."""
        if self.root.is_symlink() or (self.root.exists() and self.root.resolve().parent != self.root.parent.resolve()):
            raise CMLError("the run folder must be a folder inside output_dir, not a link elsewhere", file=self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CMLError(f"cannot create the run folder: {err.strerror}", file=self.root) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise CMLError("the run folder is not writable", file=self.root)

    def holds_a_run(self) -> bool:
        return self.results_file.is_file() or (self.root / "stages").is_dir()

    def finished(self) -> bool:
        return self.results_file.is_file()

    def read_results(self) -> RunResults:
        """``results.json``, checked; a folder without one is named as no finished run."""
        if not self.results_file.is_file():
            raise CMLError("no results.json: is this a finished run folder?", file=self.root)
        return checked(RunResults, read_json(self.results_file, "results file"), self.results_file)

    def write_results(self, results: dict) -> None:
        """``results`` (checked first: a run never writes what it could not read back) as ``results.json``."""
        checked(RunResults, results, self.results_file)
        write_json(self.results_file, results)

    def read_stage(self, stage_dir: Path) -> dict:
        """The ``state.json`` of ``stage_dir`` as written (a strategy's restore reads its own fields from the record),
        checked to be a finished stage's state (:class:`SavedStage`) whose prediction file lies in this folder and is
        present. The weights beside it are checked by whoever loads them."""
        path = Path(stage_dir) / STATE
        if not path.is_file():
            raise CMLError("no finished stage here (no state.json)", file=stage_dir)
        state = read_json(path, "a finished stage's state")
        predictions = self.resolve(checked(SavedStage, state, path).record.predictions)
        if not predictions.is_file():
            raise CMLError("a finished stage's prediction file is missing", file=predictions)
        return state

    def finished_stages(self) -> dict[str, list[dict]]:
        """{strategy: its finished stages' records in stage order, stage 0's first}, from every stage folder (also
        those of strategies an earlier invocation trained and results.json does not list)."""
        stages = self.root / "stages"
        initial = sorted((stages / INITIAL).glob(f"0-*/{STATE}"))
        if not initial:
            raise CMLError("no finished stage 0 in this run folder", file=stages / INITIAL)
        stage0 = self.read_stage(initial[0].parent)["record"]
        records = {}
        for folder in sorted(p for p in stages.iterdir() if p.is_dir() and p.name != INITIAL):
            saved = [self.read_stage(path.parent) for path in sorted(folder.glob(f"*/{STATE}"))]
            updates = sorted((state["record"] for state in saved if state["complete"]), key=lambda r: r["index"])
            if updates:
                records[folder.name] = [stage0, *updates]
        return records


def stage_state(record: dict, settings: dict) -> dict:
    """A finished stage's ``state.json`` content."""
    return {"format_version": FORMAT_VERSION, "complete": True, "record": record, "settings": settings}

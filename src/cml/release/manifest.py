"""A release folder, the unit `cml` ships: ``release.json`` (this module's :class:`ReleaseRecord`, versioned),
the weights, and the report. This module alone reads and writes ``release.json``; every reader goes through
:func:`read_manifest`, which checks the record as strictly as a config file (a release may come from anyone).

Layout::

    <release>/release.json
    <release>/model/                    a Hugging Face folder: config.json (id2label), tokenizer, model.safetensors
    <release>/adapters/<module>/        one PEFT adapter folder per module (modular strategies)
    <release>/predictions.jsonl         the test predictions after the update, one line per item
    <release>/report.md, report.html    the verdict first, then every language

``model`` is the base every route starts from: the trained model of ``cml train`` and of a full-model update, or
the parent's base, unchanged, under a modular update's adapters.
"""

from __future__ import annotations

import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..bootstrap import IntervalChange
from ..errors import CMLError, invalid_record
from ..io import read_bytes, read_json, refuse_links, sha256_bytes, write_json
from ..task_family import TaskFamily

FORMAT_VERSION = 1
MANIFEST = "release.json"
MODEL_DIR = "model"
ADAPTER_DIR = "adapters"
PREDICTIONS = "predictions.jsonl"
EXPORT_MARKER = "cml-export.json"
MAX_LANGUAGES = 1000
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
MAX_LABELS = 100_000
BASE_ROUTE = "base"
"""What a release calls the route without modules, with :func:`cml.routing.route_name`: in its report and outputs,
and as an export's folder; its modular state, like a run's records, says ``previous``."""


def _inside_release(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\x00" in path or "\\" in path:
        raise ValueError(f"must be a path inside the release folder, got {path[:80]!r}")
    return path


def _module_name(name: str) -> str:
    from ..config import check_folder_name

    return check_folder_name(name)


ReleasePath = Annotated[str, AfterValidator(_inside_release)]
ModuleName = Annotated[str, AfterValidator(_module_name)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Origin(_Record):
    """What a release was made from: a parent release, a Hugging Face checkpoint (folder or hub id) with its
    task head, or (``cml train``) a backbone. ``files`` holds the sha256 of its files, where local."""

    kind: Literal["release", "checkpoint", "backbone"]
    name: str
    release: str | None = None  # the parent release's name
    files: dict[str, str] = {}


class Change(_Record, IntervalChange):
    """One metric of one language, before and after: ``delta`` with its 95% paired-bootstrap interval."""

    @property
    def significant_loss(self) -> bool:
        return self.ci_high < 0

    @property
    def significant_gain(self) -> bool:
        return self.ci_low > 0


class LanguageResult(_Record):
    """How one language is served and scored: ``scores`` after the update (every metric the task computes),
    ``changes`` from the parent (none after ``cml train``, or for a language the parent did not score)."""

    route: list[ModuleName] = []
    updated: bool = False
    train_examples: int = Field(0, ge=0)
    test_examples: int = Field(ge=0)
    scores: dict[str, float]
    changes: dict[str, Change] = {}
    gate: dict[str, Any] | None = None


class Verdict(_Record):
    """The ship gate's decision under ``criteria``: ``failures`` says, one line each, why not."""

    max_significant_losses: int = Field(ge=0)
    min_mean_delta: float
    metric: str
    significant_losses: list[str]
    mean_delta: float
    failures: list[str]

    @property
    def ship(self) -> bool:
        return not self.failures


class Reference(_Record):
    """Another strategy applied to the same parent and batch for comparison (``references`` in the update
    config, e.g. full fine-tuning): its changes, summary and verdict under the same criteria, or why it could
    not be applied to this parent (``skipped``). Not shipped."""

    strategy: dict[str, Any]
    skipped: str | None = None
    changes: dict[str, dict[str, Change]] = {}
    summary: dict[str, dict[str, Any]] = {}
    verdict: Verdict | None = None


class ModularState(_Record):
    """What a modular update continues: each language's group, the trained modules and the routes (module
    names joined by ``+``; ``previous`` for the base)."""

    groups: dict[str, str]
    modules: list[ModuleName]
    routes: dict[str, str]


class ReleaseRecord(_Record):
    """``release.json``."""

    format_version: Literal[1] = FORMAT_VERSION
    name: str
    kind: Literal["train", "update"]
    created: str
    task: TaskFamily
    primary_metric: str
    languages: list[str] = Field(min_length=1, max_length=MAX_LANGUAGES)
    labels: list[str] = Field([], max_length=MAX_LABELS)  # id order: labels[i] is id2label[i]; none for seq2seq
    origin: Origin
    backbone: str
    base_format: Literal["hf", "assembled"] = "hf"  # assembled: a seq2seq model cml built around an encoder
    strategy: dict[str, Any]  # the update strategy's settings, as its config section
    trained: dict[str, Any] = {}  # what training recorded: epochs, dev scores, losses, seconds
    strategy_state: ModularState | None = None  # what the next update continues (modular strategies)
    modules: list[ModuleName] = []
    model_settings: dict[str, Any] = {}  # max_length, decoding: what scoring and serving need besides weights
    training: dict[str, Any] = {}
    data: dict[str, str] = {}  # batch (or training data) file -> sha256
    eval_data: dict[str, str] = {}
    results: dict[str, LanguageResult]
    summary: dict[str, dict[str, Any]] = {}  # metric -> figures over languages (cml.evaluation.cml_metrics)
    verdict: Verdict | None = None
    references: dict[str, Reference] = {}
    files: dict[ReleasePath, str]  # every file of the model and adapters (weights, configs, tokenizer) -> sha256
    versions: dict[str, str] = {}

    @property
    def routes(self) -> dict[str, tuple[str, ...]]:
        return {lang: tuple(result.route) for lang, result in self.results.items()}

    @model_validator(mode="after")
    def _consistent(self):
        if self.base_format == "assembled" and self.task is not TaskFamily.seq2seq:
            raise ValueError("base_format `assembled` is for seq2seq models only")
        unknown = sorted({module for result in self.results.values() for module in result.route} - set(self.modules))
        if unknown:
            raise ValueError(f"routes name modules the release does not have: {', '.join(unknown[:5])}")
        if self.modules and (self.strategy_state is None or set(self.strategy_state.modules) != set(self.modules)):
            raise ValueError("a release with modules needs its strategy_state (groups, modules, routes)")
        return self


def written_by_cml(folder: Path) -> bool:
    """Whether ``folder`` is a release or an export (what ``--overwrite`` may replace)."""
    return (folder / MANIFEST).is_file() or (folder / EXPORT_MARKER).is_file()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_manifest(folder: str | Path) -> ReleaseRecord:
    """The ``release.json`` of ``folder``, checked; a CMLError naming the file and the first bad key if it is
    not a release this version can read."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CMLError(f"no {MANIFEST}: is this a release folder (made by `cml train` or `cml update`)?",
                       file=folder)
    data = read_json(path, "release file")
    if isinstance(data, dict) and data.get("format_version") not in (None, FORMAT_VERSION):
        raise CMLError(f"release format {data.get('format_version')!r}; this version of cml reads format "
                       f"{FORMAT_VERSION} (upgrade cml)", file=path, key="format_version")
    try:
        release = ReleaseRecord.model_validate(data)
    except ValidationError as err:
        raise invalid_record(err, "a release record", path) from None
    missing = set(release.languages) ^ set(release.results)
    if missing:
        raise CMLError(f"languages and results differ ({', '.join(sorted(missing)[:5])})", file=path)
    return release


def write_manifest(folder: str | Path, release: ReleaseRecord) -> None:
    write_json(Path(folder) / MANIFEST, release.model_dump(mode="json"))


def model_files(folder: Path) -> list[str]:
    """Every file of the release's network (relative paths, in a stable order): weights, configs, tokenizer."""
    return sorted(path.relative_to(folder).as_posix() for sub in (MODEL_DIR, ADAPTER_DIR)
                  for path in (folder / sub).rglob("*") if path.is_file())


def fingerprint_files(folder: Path) -> dict[str, str]:
    return {name: sha256_bytes(read_bytes(folder / name, "model file")) for name in model_files(folder)}


def verify_files(folder: str | Path, release: ReleaseRecord) -> None:
    """Every file of the network that the record lists is there with its recorded sha256, and no other is: a
    release whose weights, configs (an adapter's scaling, the label map) or tokenizer changed after it was
    scored is not the release its verdict speaks for."""
    folder = Path(folder)
    refuse_links(folder, "a release folder may not hold links: its files would not be the ones its sha256 speak for")
    pickled = sorted(path for path in folder.rglob("*") if path.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise CMLError("a release holds safetensors only; this file may be a pickle, which can run code when "
                       "loaded", file=pickled[0])
    found = set(model_files(folder))
    extra = sorted(found - set(release.files))
    if extra:
        raise CMLError(f"files the release does not list: {', '.join(extra[:3])}", file=folder)
    for name, digest in release.files.items():
        path = folder / name
        if not path.is_file():
            raise CMLError("a file of the release is missing", file=path)
        if sha256_bytes(read_bytes(path, "model file")) != digest:
            raise CMLError("this file changed after the release was made (its sha256 differs from release.json)",
                           file=path)

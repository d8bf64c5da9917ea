"""What a run folder's JSON files must hold before anything reads further into them: a finished stage's
``state.json`` and a run's ``results.json``, checked as typed models (the fields every reader relies on; a
strategy's own fields pass through). A run folder may come from anyone, so a record that would send a reader
outside the folder (a prediction file at ``/etc/passwd``), or make it work without bound (thousands of
languages), is refused here, once, rather than at each use."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import CMLError

MAX_LANGUAGES = 1000  # SIB-200 has 205; more is not a run this tool made


def _inside_run_folder(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\x00" in path:
        raise ValueError(f"must be a path inside the run folder, got {path[:80]!r}")
    return path


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class StageRecord(_Record):
    """One stage of one strategy: what it trained on and how every language scored."""

    name: str
    index: int = Field(ge=0)
    updated_languages: list[str] = []
    scores: dict[str, float]
    metrics: dict[str, dict[str, Any]] = {}
    predictions: Annotated[str, AfterValidator(_inside_run_folder)]


class SavedStage(_Record):
    """A finished stage's ``state.json``: its record and the settings it was made with."""

    complete: bool
    record: StageRecord
    settings: dict | None = None  # none in runs saved before settings were recorded


class StrategyRun(_Record):
    method: str
    stages: list[StageRecord] = Field(min_length=1)


class RunResults(_Record):
    """A run's ``results.json``."""

    name: str
    task: str
    metric: str
    languages: list[str] = Field(min_length=1, max_length=MAX_LANGUAGES)
    labels: list[str] = []  # none for seq2seq
    strategies: dict[str, StrategyRun] = Field(min_length=1)
    reference_strategy: str | None = None
    config: dict


WHAT = {SavedStage: "a finished stage's state", RunResults: "the results of a cml run"}


def checked(model: type[BaseModel], value: Any, path) -> Any:
    """``value`` validated as ``model``, else a CMLError naming the file and the first bad key."""
    try:
        return model.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        raise CMLError(f"not {WHAT[model]} ({first['msg']})", file=path,
                       key=".".join(map(str, first["loc"])) or None) from None

"""The summary figures as table columns: labels, formats and which direction is better; and loading a run's
``results.json`` and its summary."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..evaluation.cml_metrics import REFERENCE_KEYS, SUMMARY_KEYS
from ..run_folder import RunFolder

MISSING = "–"


def points(value: float | None) -> str:
    """A fraction in points (x100), one decimal; MISSING for no value."""
    return MISSING if value is None else f"{100 * value:.1f}"


def signed_points(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:+.1f}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _signed_percent(value: float) -> str:
    return f"{100 * value:+.0f}%"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    render: Callable[[Any], str]
    better: Literal["high", "low"] | None = None

    def format(self, value: Any) -> str:
        return MISSING if value is None else self.render(value)


COLUMNS = (
    Column("n_languages", "langs", str),
    Column("n_improved", "improved", str, "high"),
    Column("n_degraded", "degraded", str, "low"),
    Column("n_significant_improved", "sig. improved", str, "high"),
    Column("n_significant_degraded", "sig. degraded", str, "low"),
    Column("mean_delta", "mean Δ (pt)", signed_points, "high"),
    Column("mean_loss_magnitude", "mean loss (pt)", points, "low"),
    Column("max_loss", "max loss (pt)", points, "low"),
    Column("aggregate_before", "before", points),
    Column("aggregate_after", "after", points, "high"),
    Column("negative_flip_rate", "neg. flips", _percent, "low"),
    Column("improved_share_gain_pp", "improved vs ref (pp)", lambda value: f"{value:+.1f}", "high"),
    Column("loss_magnitude_reduction", "loss reduction vs ref", _signed_percent, "high"),
)
COLUMN = {column.key: column for column in COLUMNS}
CATEGORY_COLUMNS = tuple(COLUMN[key] for key in ("n_languages", "n_improved", "n_degraded", "n_significant_degraded",
                                                  "mean_delta", "mean_loss_magnitude", "max_loss",
                                                  "negative_flip_rate"))
METRIC_COLUMNS = tuple(COLUMN[key] for key in ("n_languages", "n_improved", "n_degraded", "n_significant_improved",
                                                "n_significant_degraded", "mean_delta", "mean_loss_magnitude",
                                                "aggregate_before", "aggregate_after"))


def figures(stage: Mapping[str, Any]) -> dict[str, Any]:
    """The flat figures of a stage summary: the summary keys and the comparison with the reference."""
    versus = stage.get("vs_reference") or {}
    return {**{key: stage[key] for key in SUMMARY_KEYS}, **{key: versus.get(key) for key in REFERENCE_KEYS}}


def best_flags(values: Sequence[Any], better: Literal["high", "low"] | None) -> list[bool]:
    """Which values are the best of a column group; none when there is no direction, fewer than two values or no
    difference between them (a lone or unanimous "best" says nothing)."""
    present = [value for value in values if value is not None]
    if better is None or len(present) < 2 or len(set(present)) == 1:
        return [False] * len(values)
    best = max(present) if better == "high" else min(present)
    return [value == best for value in values]


def highlighted(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
                group: Callable[[Mapping[str, Any]], Any]) -> list[dict[str, bool]]:
    """Per row, {column key: best within the row's group} (rows of one stage compete with each other)."""
    flags: list[dict[str, bool]] = [{} for _ in rows]
    groups: dict[Any, list[int]] = {}
    for position, row in enumerate(rows):
        groups.setdefault(group(row), []).append(position)
    for members in groups.values():
        for column in columns:
            for position, flag in zip(members, best_flags([rows[i][column.key] for i in members], column.better)):
                flags[position][column.key] = flag
    return flags


def load_results(run_dir: Path) -> dict:
    """A finished run's ``results.json``, checked (``RunFolder.read_results``)."""
    return RunFolder(run_dir).read_results().model_dump(mode="json")


def load_summary(run_dir: Path) -> tuple[dict, dict]:
    """A run's ``results.json`` and its summary."""
    results = load_results(run_dir)
    return results, results["summary"]


def _stage_names(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(name for stages in summary.values() for name in stages))


def overview_rows(summary: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per update stage and strategy (stages in run order, strategies in run order within a stage)."""
    return [{"strategy": strategy, "stage": name, **figures(stages[name])}
            for name in _stage_names(summary) for strategy, stages in summary.items() if name in stages]


def metric_rows(summary: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per update stage, metric and strategy, from the summaries' ``metrics`` (the primary metric first)."""
    rows = []
    for name in _stage_names(summary):
        by_strategy = {strategy: stages[name] for strategy, stages in summary.items() if name in stages}
        metrics = dict.fromkeys(metric for stage in by_strategy.values() for metric in stage["metrics"])
        rows += [{"stage": name, "metric": metric, "strategy": strategy, **figures(stage["metrics"][metric])}
                 for metric in metrics for strategy, stage in by_strategy.items()
                 if metric in stage["metrics"]]
    return rows

"""What an update did to every language: per-language changes with paired bootstrap intervals, flip rates, and
summaries per strategy and stage (overall, by language category, against a reference strategy, across seeds).

Everything except :func:`summarize_run` (which reads prediction files and URIEL+) and :func:`typology_distance`
(URIEL+) is a pure function of numbers.

**Before and after.** For update stage *k* of strategy *S*, "before" is *S*'s deployed model after stage *k-1* and
"after" is *S* after stage *k*. ``before``/``after`` are the stage records' primary metric (the number every
table shows) and ``delta = after - before``, as a fraction in [-1, 1] (every metric is a fraction, chrF too).

**Every metric** (:func:`metric_changes`). The same changes and figures are computed for every metric the task
computes, each from its own per-language values and per-item scores: a run's summary keeps the primary metric's
at the top (the layout tables and benchmarks read) and every metric's under ``metrics``. :func:`metric_changes`
takes plain numbers, so it serves any before/after pair of models, inside a run folder or not.
:func:`metric_disagreements` names the metrics whose figures contradict the primary one's: a primary metric can
stay flat where another falls (exact match near 0 for every model on long outputs, while chrF halves).

**Intervals and flip rates** (:mod:`cml.bootstrap`): each change has its 95% paired bootstrap interval and its
negative and positive flip rates, over the test items, seeded per language.

**Language categories** (:func:`placement`). ``in_update``: trained on in the stage. ``neighbour``: the combined
URIEL+ distance (:mod:`cml.typology.uriel`, default kinds) to the nearest update language is below
``neighbour_threshold``. ``far``: everything else, including languages that cannot be placed in URIEL+ (they get
a ``note``). The default threshold, 0.4, sits in the gap between close relatives and the rest: pairs within one
branch or genus measure 0.09-0.38 (zsm-ind 0.09, spa-por 0.14, ukr-rus 0.21, nld-deu 0.25, amh-tir 0.31, swh-zul
0.31, eng-deu 0.35, yor-ibo 0.37, hin-mar 0.37), while pairs from different branches of one family or
different families start at about 0.46 (eng-fra 0.46, deu-rus 0.47, jpn-kor 0.48, hau-yor 0.50). 0.3 would
already call eng-deu, hin-mar or swh-zul far.

**Summaries** (:func:`summarize_languages`): counts of improved/degraded languages (``delta`` above/below zero,
and significantly so), means over languages (each language weighs the same, whatever its test size; the flip
rate too is a mean of per-language rates), and loss figures as positive magnitudes: ``mean_loss_magnitude`` is
the mean ``|delta|`` over degraded languages and ``max_loss`` the largest, both 0 when nothing degraded. Means
over no languages (an empty category) are ``None``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bootstrap import CONFIDENCE, RESAMPLES, language_change, language_seed
from ..errors import CMLError
from ..io import open_text
from ..run_folder import CATEGORIES, RunFolder

if TYPE_CHECKING:
    from ..typology.uriel import TypologyMatrix

log = logging.getLogger("cml.metrics")

REFERENCE = "full_finetune"
"""The strategy the others are compared against: a run's ``reference_strategy`` when it runs it (else its first
strategy), and the summaries' default."""
NEIGHBOUR_THRESHOLD = 0.4
SUMMARY_KEYS = ("n_languages", "n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded",
                "mean_delta", "mean_loss_magnitude", "max_loss", "aggregate_before", "aggregate_after",
                "negative_flip_rate")
REFERENCE_KEYS = ("improved_share_gain_pp", "loss_magnitude_reduction")


# ---------------------------------------------------------------------------------------------- categories

def placement(language: str, updated: Sequence[str], distance: Callable[[str, str], float | None],
              threshold: float = NEIGHBOUR_THRESHOLD) -> dict[str, Any]:
    """``category`` and ``distance_to_update`` (to the nearest update language; 0 for update languages) of one
    language; ``distance(a, b)`` returns None where URIEL+ cannot place a pair, which makes the language far with
    a ``note``."""
    if language in updated:
        return {"category": "in_update", "distance_to_update": 0.0}
    known = [d for d in (distance(language, other) for other in updated) if d is not None and math.isfinite(d)]
    if not known:
        return {"category": "far", "distance_to_update": None,
                "note": "no URIEL+ distance to any update language; counted as far"}
    nearest = min(known)
    return {"category": "neighbour" if nearest < threshold else "far", "distance_to_update": nearest}


def typology_distance(languages: Sequence[str]) -> tuple[Callable[[str, str], float | None], TypologyMatrix | None]:
    """A ``distance(a, b)`` over the languages URIEL+ can place (None for the others) and the matrix behind it
    (None when no language could be placed). Never raises: a missing typology only makes languages far."""
    from ..languages import parse_language
    from ..typology.uriel import typology_matrix, uriel_code

    placed = []
    for language in languages:
        try:
            uriel_code(parse_language(language))
            placed.append(language)
        except CMLError as error:
            log.warning("%s: cannot be placed in URIEL+ (%s); counted as far", language, error)
    matrix = None
    if placed:
        try:
            matrix = typology_matrix(placed)
        except CMLError as error:
            log.warning("no typology for this run (%s); every language not updated counts as far", error)
    by_code = {} if matrix is None else {language: matrix.index(language) for language in placed}

    def distance(a: str, b: str) -> float | None:
        if a not in by_code or b not in by_code:
            return None
        return float(matrix.distances[by_code[a], by_code[b]])

    return distance, matrix


# ---------------------------------------------------------------------------------------------- summaries

def summarize_languages(changes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The :data:`SUMMARY_KEYS` figures over languages' :func:`cml.bootstrap.language_change` records."""
    def column(key: str) -> np.ndarray:
        return np.array([change[key] for change in changes.values()], dtype=np.float64)

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if len(values) else None

    delta = column("delta")
    losses = -delta[delta < 0]
    return {
        "n_languages": len(delta),
        "n_improved": int((delta > 0).sum()),
        "n_degraded": int((delta < 0).sum()),
        "n_significant_improved": int((column("ci_low") > 0).sum()),
        "n_significant_degraded": int((column("ci_high") < 0).sum()),
        "mean_delta": mean(delta),
        "mean_loss_magnitude": float(losses.mean()) if len(losses) else 0.0,
        "max_loss": float(losses.max()) if len(losses) else 0.0,
        "aggregate_before": mean(column("before")),
        "aggregate_after": mean(column("after")),
        "negative_flip_rate": mean(column("negative_flip_rate")),
    }


def summarize_stage(changes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`summarize_languages` over all languages, plus ``by_category`` ({category: the same figures});
    each change needs a ``category``."""
    return {**summarize_languages(changes),
            "by_category": {category: summarize_languages({lang: change for lang, change in changes.items()
                                                           if change["category"] == category})
                            for category in CATEGORIES}}


def metric_changes(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]],
                   items: Mapping[str, Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]]],
                   *, placements: Mapping[str, Mapping[str, Any]] | None = None, resamples: int = RESAMPLES,
                   seed: int = 0) -> dict[str, dict[str, Any]]:
    """What one update did to every language in every metric: {metric: the :data:`SUMMARY_KEYS` figures and
    ``languages`` ({language: :func:`cml.bootstrap.language_change`})}.

    ``before`` and ``after`` are {metric: {language: value}} (every language of ``before[metric]`` needs a value in
    ``after[metric]``); ``items`` is {metric: {language: (before item scores, after item scores)}}, the same items
    in the same order on both sides. A metric that lacks values on either side or item scores is left out (a run
    written before per-metric item scores has the primary metric's alone); the others keep ``before``'s order.
    With ``placements`` ({language: :func:`placement`}) each change also carries its category and the figures add
    ``by_category`` (:func:`summarize_stage`).
    """
    summaries = {}
    for metric, values in before.items():
        if metric not in after or metric not in items:
            continue
        changes = {lang: language_change(value, after[metric][lang], *items[metric][lang], resamples=resamples,
                                         seed=language_seed(seed, lang))
                   for lang, value in values.items()}
        if placements is None:
            summaries[metric] = {**summarize_languages(changes), "languages": changes}
        else:
            changes = {lang: {**change, **placements[lang]} for lang, change in changes.items()}
            summaries[metric] = {**summarize_stage(changes), "languages": changes}
    return summaries


def metric_disagreements(figures: Mapping[str, Mapping[str, Any]], primary: str) -> dict[str, str]:
    """{metric: how it disagrees} for the metrics whose figures (:data:`SUMMARY_KEYS`, as :func:`metric_changes`
    gives them per metric) contradict the ``primary`` metric's at the same stage:

    ``"losses"``: some languages are significantly worse in it and none in the primary metric; ``"gains"``: the same
    for improvements; ``"direction"``: the mean deltas have opposite signs, and the metric's is backed by languages
    significantly changed that way. Agreeing metrics, and all when ``figures`` lacks the primary one, are left out.
    """
    if primary not in figures:
        return {}
    found = {}
    for metric, other in figures.items():
        kind = None if metric == primary else _disagreement(figures[primary], other)
        if kind:
            found[metric] = kind
    return found


def _disagreement(primary: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
    if other["n_significant_degraded"] and not primary["n_significant_degraded"]:
        return "losses"
    if other["n_significant_improved"] and not primary["n_significant_improved"]:
        return "gains"
    ours, theirs = primary["mean_delta"], other["mean_delta"]
    if ours is None or theirs is None or ours * theirs >= 0:
        return None
    backed = other["n_significant_degraded"] if theirs < 0 else other["n_significant_improved"]
    return "direction" if backed else None


def compare_to_reference(summary: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, float | None]:
    """How a strategy's stage summary compares to the reference strategy's for the same stage.

    ``improved_share_gain_pp``: percentage points of languages improved, minus the reference's.
    ``loss_magnitude_reduction``: ``1 - mean_loss_magnitude / reference's``; 1 means no loss left, negative means
    larger losses than the reference. When the reference lost nothing the ratio is undefined: 0.0 if the strategy
    lost nothing either (as good as the reference), None otherwise (any loss is worse than none, by no finite
    factor).
    """
    def improved_share(figures: Mapping[str, Any]) -> float | None:
        return 100 * figures["n_improved"] / figures["n_languages"] if figures["n_languages"] else None

    ours, theirs = improved_share(summary), improved_share(reference)
    loss, reference_loss = summary["mean_loss_magnitude"], reference["mean_loss_magnitude"]
    if reference_loss > 0:
        reduction = 1 - loss / reference_loss
    else:
        reduction = 0.0 if loss == 0 else None
    return {"improved_share_gain_pp": None if ours is None or theirs is None else ours - theirs,
            "loss_magnitude_reduction": reduction}


def aggregate_seeds(summaries: Sequence[Any]) -> Any:
    """Mean and standard deviation over runs with different seeds, of every number in equally shaped summaries
    (a stage summary, a strategy's, or a whole :func:`summarize_run` result).

    Each number becomes ``{"mean", "std", "n"}``: ``std`` is the sample standard deviation (ddof 1), None for a
    single value; ``None`` values (undefined figures) are left out and ``n`` counts the rest. Mappings keep the
    keys all summaries share; any other value is kept where all summaries agree on it, else None.
    """
    if not summaries:
        raise ValueError("no summaries to aggregate")
    first = summaries[0]
    if all(isinstance(summary, Mapping) for summary in summaries):
        return {key: aggregate_seeds([summary[key] for summary in summaries])
                for key in first if all(key in summary for summary in summaries)}
    if all(value is None or _is_number(value) for value in summaries) and any(map(_is_number, summaries)):
        values = np.array([value for value in summaries if value is not None], dtype=np.float64)
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
                "n": len(values)}
    return first if all(summary == first for summary in summaries) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------- a run

def read_metric_item_scores(path: Path, primary: str) -> dict[str, dict[str, dict[str, float]]]:
    """{metric: {language: {example id: score}}} of a prediction file, in file order: ``primary`` (the metric the
    lines' ``score`` holds) and every metric of the lines' ``scores``, which files written before per-metric item
    scores lack. Every line must score the same metrics."""
    if not path.is_file():
        raise CMLError("prediction file missing; cannot compare items", file=path)
    items: dict[str, dict[str, dict[str, float]]] = {primary: {}}
    for line_number, line in enumerate(open_text(path, "prediction file"), 1):
        try:
            row = json.loads(line)
            lang, example_id = str(row["lang"]), str(row["id"])
            scores = {str(metric): float(score) for metric, score in row.get("scores", {}).items()}
            scores[primary] = float(row["score"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError):
            raise CMLError("not a prediction line (a JSON object with lang, id, a numeric score and, if any, an "
                           "object of numeric scores)", file=path, line=line_number) from None
        if line_number > 1 and scores.keys() != items.keys():
            raise CMLError(f"scores {', '.join(sorted(scores))}; the lines before scored "
                           f"{', '.join(sorted(items))}", file=path, line=line_number)
        if example_id in items[primary].get(lang, {}):
            raise CMLError(f"example {lang}/{example_id} appears twice", file=path, line=line_number)
        for metric, score in scores.items():
            items.setdefault(metric, {}).setdefault(lang, {})[example_id] = score
    return items


def read_item_scores(path: Path) -> dict[str, dict[str, float]]:
    """{language: {example id: score}} of a prediction file's ``score`` fields (the run's primary metric)."""
    return read_metric_item_scores(path, "score")["score"]


def record_values(record: Mapping[str, Any], primary: str) -> dict[str, dict[str, float]]:
    """{metric: {language: value}} of a stage record: ``primary`` (the run's own) from its ``scores``, and every
    other metric with a number for each of those languages from its ``metrics`` (entries such as chrF's signature
    or seqeval's settings are no metric)."""
    values: dict[str, dict[str, float]] = {primary: dict(record["scores"])}
    for lang, metrics in (record.get("metrics") or {}).items():
        for metric, value in metrics.items():
            if metric != primary and _is_number(value):
                values.setdefault(metric, {})[lang] = float(value)
    return {metric: by_language for metric, by_language in values.items()
            if by_language.keys() == values[primary].keys()}


def paired_items(before: Mapping[str, float], after: Mapping[str, float], *,
                 where: str) -> tuple[np.ndarray, np.ndarray]:
    """Item scores before and after, matched by example id (in ``before``'s order)."""
    if not before and not after:
        raise CMLError(f"{where}: no test items in the prediction files")
    if before.keys() != after.keys():
        raise CMLError(f"{where}: the test items differ between stages ({len(before.keys() - after.keys())} only "
                       f"before, {len(after.keys() - before.keys())} only after)")
    ids = list(before)
    return (np.fromiter((before[i] for i in ids), np.float64, len(ids)),
            np.fromiter((after[i] for i in ids), np.float64, len(ids)))


def summarize_run(results: dict, run_dir: Path, *, reference: str = REFERENCE, primary_metric: str | None = None,
                  neighbour_threshold: float = NEIGHBOUR_THRESHOLD, resamples: int = RESAMPLES,
                  seed: int = 0) -> dict:
    """``results["summary"]``: {strategy: {update stage name: summary}} for a run's ``results.json`` content.

    A stage summary holds the :data:`SUMMARY_KEYS` figures, ``by_category`` (the same per category),
    ``vs_reference`` (:func:`compare_to_reference` against ``reference`` at the same stage; None when the run
    lacks that strategy), ``settings`` (what produced it) and ``languages``: {language: ``before``, ``after``,
    ``delta``, ``ci_low``, ``ci_high``, ``negative_flip_rate``, ``positive_flip_rate``, ``category``,
    ``distance_to_update`` and, where typology failed, ``note``}, all of the primary metric: ``primary_metric``,
    by default the run's own (``results["metric"]``, the one a run's ``evaluation.primary_metric`` chose).
    ``metrics`` holds the same (``by_category``, ``vs_reference``, ``languages``) for every metric that the stage
    records and prediction files score (:func:`metric_changes`). Items are matched by (language, id) between the
    prediction files of the two stages.
    """
    folder = RunFolder(run_dir)
    run_metric = results["metric"]
    metric = primary_metric or run_metric
    files: dict[str, dict[str, dict[str, dict[str, float]]]] = {}  # stage 0's file serves every strategy

    def items(record: dict) -> dict[str, dict[str, dict[str, float]]]:
        if record["predictions"] not in files:
            files[record["predictions"]] = read_metric_item_scores(folder.resolve(record["predictions"]), run_metric)
        return files[record["predictions"]]

    distance, _ = typology_distance(results["languages"])
    stage_metrics: dict[str, dict[str, dict[str, dict]]] = {}  # {strategy: {stage: {metric: figures}}}
    for strategy, entry in results["strategies"].items():
        stages = sorted(entry["stages"], key=lambda record: record["index"])
        stage_metrics[strategy] = {}
        for before, after in zip(stages, stages[1:]):
            where = f"{strategy}, stage {after['name']}"
            before_items, after_items = items(before), items(after)
            paired = {name: {lang: paired_items(before_items[name].get(lang, {}), after_items[name].get(lang, {}),
                                                where=f"{where}, {lang}")
                             for lang in results["languages"]}
                      for name in before_items if name in after_items}
            placements = {lang: placement(lang, after["updated_languages"], distance, neighbour_threshold)
                          for lang in results["languages"]}
            per_metric = metric_changes(record_values(before, run_metric), record_values(after, run_metric), paired,
                                        placements=placements, resamples=resamples, seed=seed)
            if metric not in per_metric:
                raise CMLError(f"{where}: no {metric} scores for every language and test item (files written "
                               "before per-metric item scores hold the run's own primary metric only)")
            stage_metrics[strategy][after["name"]] = per_metric
    settings = {"reference": reference, "neighbour_threshold": neighbour_threshold, "resamples": resamples,
                "seed": seed, "confidence": CONFIDENCE}

    def stage_summary(name: str, which: str, figures: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        theirs = stage_metrics.get(reference, {}).get(name, {}).get(which)
        return {**{key: value for key, value in figures.items() if key != "languages"},
                "vs_reference": None if theirs is None else compare_to_reference(figures, theirs), **extra,
                "languages": figures["languages"]}

    return {strategy: {name: {**stage_summary(name, metric, per_metric[metric], settings=dict(settings)),
                              "metrics": {which: stage_summary(name, which, figures)
                                          for which, figures in per_metric.items()}}
                       for name, per_metric in stages.items()}
            for strategy, stages in stage_metrics.items()}

"""One run's report: ``report.md`` (figures as PNG files in ``report_figures/``), a self-contained
``report.html`` and ``results.csv`` (one row per strategy × update stage × language), all in the run folder.

Everything comes from ``results.json`` (its summary included); the run's files stay the experiment's.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluation.cml_metrics import (CATEGORIES, NEIGHBOUR_THRESHOLD, REFERENCE, metric_disagreements,
                                      typology_distance)
from ..io import atomic_open, write_text
from .document import Block, Bullets, Cell, Heading, Image, Paragraph, Table, to_html, to_markdown
from .tables import (CATEGORY_COLUMNS, COLUMNS, METRIC_COLUMNS, MISSING, Column, highlighted, load_summary,
                     metric_rows, overview_rows)

if TYPE_CHECKING:
    from ..typology.grouping import Grouping

FIGURE_DIR = "report_figures"
CSV_FIELDS = ("strategy", "stage", "stage_index", "language", "category", "distance_to_update", "before", "after",
              "delta", "ci_low", "ci_high", "negative_flip_rate", "positive_flip_rate", "note")


def write_report(run_dir: Path) -> dict[str, Path]:
    """Write the report files of the run in ``run_dir``; returns {"markdown", "html", "csv", "figures"}: paths."""
    run_dir = Path(run_dir)
    results, summary = load_summary(run_dir)
    blocks = build_report(results, summary)
    figure_dir = run_dir / FIGURE_DIR
    images = [block for block in blocks if isinstance(block, Image)]
    for stale in figure_dir.glob("*.png"):  # figures of stages or strategies no longer in the run
        if stale.stem not in {image.name for image in images}:
            stale.unlink()
    for image in images:
        with atomic_open(figure_dir / f"{image.name}.png", "wb") as handle:
            handle.write(image.png)
    paths = {"markdown": run_dir / "report.md", "html": run_dir / "report.html", "csv": run_dir / "results.csv",
             "figures": figure_dir}
    write_text(paths["markdown"], to_markdown(blocks, lambda image: f"{FIGURE_DIR}/{image.name}.png"))
    write_text(paths["html"], to_html(blocks, f"CML report: {results['name']}"))
    write_text(paths["csv"], results_csv(results, summary))
    return paths


def results_csv(results: Mapping[str, Any], summary: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per strategy, update stage and language; scores, deltas and rates as fractions."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for strategy, stages in summary.items():
        index = {record["name"]: record["index"] for record in results["strategies"][strategy]["stages"]}
        for stage, stage_summary in stages.items():
            for language, change in stage_summary["languages"].items():
                writer.writerow({"strategy": strategy, "stage": stage, "stage_index": index[stage],
                                 "language": language, **{key: change.get(key) for key in CSV_FIELDS[4:]}})
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- content

def run_warnings(results: Mapping[str, Any]) -> list[str]:
    """Every stage's warnings (a stage that learned nothing), as "strategy, stage: warning" lines."""
    return [f"{strategy}, stage {record['name']}: {warning}" for strategy, entry in results["strategies"].items()
            for record in entry["stages"] for warning in record.get("warnings", [])
            if strategy == results.get("reference_strategy") or record["index"] > 0]


def _warnings(results: Mapping[str, Any]) -> list[Block]:
    lines = run_warnings(results)
    return [Heading(2, "Warnings"), Bullets(lines)] if lines else []


def disagreement_lines(summary: Mapping[str, Mapping[str, Any]], primary: str) -> list[str]:
    """One line per strategy, update stage and metric whose figures contradict the primary metric's
    (:func:`cml.evaluation.cml_metrics.metric_disagreements`)."""
    lines = []
    for strategy, stages in summary.items():
        for name, stage in stages.items():
            figures = stage["metrics"]
            for metric, kind in metric_disagreements(figures, primary).items():
                lines.append(f"{strategy}, stage {name}: "
                             + disagreement_words(kind, metric, figures[metric], primary, figures[primary]))
    return lines


def disagreement_words(kind: str, metric: str, other: Mapping[str, Any], primary: str,
                       ours: Mapping[str, Any]) -> str:
    def mean(figures: Mapping[str, Any]) -> str:
        return f"mean Δ {100 * figures['mean_delta']:+.1f} pt"

    if kind == "direction":
        count, way = ((other["n_significant_degraded"], "down") if other["mean_delta"] < 0
                      else (other["n_significant_improved"], "up"))
        return (f"{metric} went {way} ({mean(other)}, {count} of {other['n_languages']} languages significantly) "
                f"while {primary} went the other way ({mean(ours)}).")
    key, what = ("n_significant_degraded", "loss") if kind == "losses" else ("n_significant_improved", "gain")
    return (f"{metric} shows a significant {what} in {other[key]} of {other['n_languages']} languages "
            f"({mean(other)}) where {primary} shows none ({mean(ours)}).")


def _disagreement_warning(summary: Mapping[str, Mapping[str, Any]], primary: str) -> list[Block]:
    lines = disagreement_lines(summary, primary)
    if not lines:
        return []
    return [Heading(2, "Warning: the metrics disagree"),
            Paragraph(f"The summary and the tables below count {primary}, the primary metric "
                      "(evaluation.primary_metric sets it). Another metric the task computes tells a different "
                      "story; see \"Every metric\" before trusting the summary:"),
            Bullets(lines)]


def build_report(results: Mapping[str, Any], summary: Mapping[str, Mapping[str, Any]]) -> list[Block]:
    from . import plots

    metric = results["metric"]
    languages = results["languages"]
    settings = next((stage["settings"] for stages in summary.values() for stage in stages.values()), {})
    reference = settings.get("reference", REFERENCE)
    threshold = settings.get("neighbour_threshold", NEIGHBOUR_THRESHOLD)
    records = {strategy: sorted(entry["stages"], key=lambda record: record["index"])
               for strategy, entry in results["strategies"].items()}
    stage_names = list(dict.fromkeys(name for stages in summary.values() for name in stages))
    # {stage: {strategy: {language: change}}}, what the per-stage figures and tables show
    changes = {name: {strategy: stages[name]["languages"] for strategy, stages in summary.items() if name in stages}
               for name in stage_names}
    blocks: list[Block] = [
        Heading(1, f"CML report: {results['name']}"),
        Paragraph(f"Task {results['task']}, primary metric {metric}, seed {results['seed']}; "
                  f"{len(languages)} languages ({', '.join(languages)}); strategies {', '.join(summary)}; "
                  f"reference strategy {reference}."),
        *_warnings(results),
        *_disagreement_warning(summary, metric),
        Heading(2, "Summary")]
    for name in stage_names:
        updated = _updated_languages(results, name)
        blocks += [Paragraph(f"Stage {name}, trained on {', '.join(updated) or 'no language'}:"),
                   Bullets([plain_summary(strategy, stages[name], _metric_words(metric), reference)
                            for strategy, stages in summary.items() if name in stages])]
    blocks += _overview(summary, reference, threshold)
    blocks += _metric_overview(summary, metric)
    for position, name in enumerate(stage_names, 1):
        blocks += [Heading(2, f"Stage {name}: per language"),
                   Image(f"delta-{position}", plots.delta_chart(changes[name], languages, metric),
                         f"Per-language change in {metric} at stage {name}",
                         "Bars: change in points, coloured by category (blue: trained in the update, orange: "
                         "typological neighbour, grey: far); whiskers: 95% paired bootstrap interval. Update "
                         "languages are in bold."),
                   _language_table(changes[name], languages)]
    blocks += [Heading(2, "Scores by stage"),
               Image("scores", plots.score_heatmap(records, languages, metric), f"Stage × language {metric}",
                     f"Test {metric} (points) after every stage; outlined cells: languages the stage trained on.")]
    blocks += _typology(results, summary)
    blocks.append(Heading(2, "Change against typological distance"))
    for position, name in enumerate(stage_names, 1):
        blocks.append(Image(f"distance-{position}", plots.distance_scatter(changes[name], threshold, metric),
                            f"Change against URIEL+ distance at stage {name}",
                            f"Stage {name}: change in points (95% interval) against the distance to the nearest "
                            f"update language; dashed: the neighbour threshold {threshold:g}. Languages are named "
                            "at the first strategy's points."))
    return blocks


def _metric_words(metric: str) -> str:
    return metric.replace("_", " ")


def _updated_languages(results: Mapping[str, Any], stage: str) -> list[str]:
    return next((record["updated_languages"] for entry in results["strategies"].values()
                 for record in entry["stages"] if record["name"] == stage), [])


def plain_summary(strategy: str, stage: Mapping[str, Any], metric: str, reference: str) -> str:
    """One sentence on a strategy's stage: how many languages lost, the worst loss, the mean change, and how its
    losses compare with the reference's."""
    losses = sorted((change["delta"], language) for language, change in stage["languages"].items()
                    if change["delta"] < 0)
    if losses:
        significant = stage["n_significant_degraded"]
        worst_delta, worst = losses[0]
        text = (f"{len(losses)} of {stage['n_languages']} languages lost {metric} under {strategy} "
                f"({significant or 'none'} significantly), worst: {worst} {100 * worst_delta:+.1f} pt")
    else:
        text = f"No language lost {metric} under {strategy}"
    text += f"; mean change {100 * stage['mean_delta']:+.1f} pt"
    reduction = (stage.get("vs_reference") or {}).get("loss_magnitude_reduction")
    if strategy != reference and losses and reduction is not None:
        text += f"; mean loss {abs(reduction):.0%} {'smaller' if reduction >= 0 else 'larger'} than under {reference}"
    return text + "."


def _table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], columns: Sequence[Column],
           group: Sequence[str], caption: str) -> Table:
    best = highlighted(rows, columns, lambda row: tuple(row[key] for key in group))
    return Table([*keys, *(column.label for column in columns)],
                 [[*(Cell(str(row[key])) for key in keys),
                   *(Cell(column.format(row[column.key]), flags[column.key]) for column in columns)]
                  for row, flags in zip(rows, best)], caption, labels=len(keys))


def _overview(summary: Mapping[str, Mapping[str, Any]], reference: str, threshold: float) -> list[Block]:
    rows = overview_rows(summary)
    stages = list(dict.fromkeys(row["stage"] for row in rows))
    category_rows = [{"stage": stage, "category": category, "strategy": row["strategy"],
                      **summary[row["strategy"]][stage]["by_category"][category]}
                     for stage in stages for category in CATEGORIES for row in rows if row["stage"] == stage]
    return [
        Heading(2, "Overview"),
        _table(rows, ("stage", "strategy"), COLUMNS, ("stage",),
               "Per update stage and strategy, over languages (each weighs the same). Δ: after minus before, in "
               "points; before is the strategy's previous stage. Significant: the 95% paired bootstrap interval "
               "excludes 0. Losses are magnitudes over degraded languages. Neg. flips: mean share of test items "
               f"whose score dropped. Versus {reference}: improved-share gain in percentage points and "
               "1 - mean loss / its mean loss. Best per stage in bold."),
        Heading(2, "By language category"),
        _table(category_rows, ("stage", "category", "strategy"), CATEGORY_COLUMNS, ("stage", "category"),
               "in_update: trained on in the stage; neighbour: URIEL+ distance to the nearest update language below "
               f"{threshold:g}; far: the rest, and languages URIEL+ cannot place. Best per stage and category in "
               "bold."),
    ]


def _metric_overview(summary: Mapping[str, Mapping[str, Any]], primary: str) -> list[Block]:
    """Every metric's figures side by side, where the summary holds more metrics than the primary one."""
    rows = metric_rows(summary)
    if len({row["metric"] for row in rows}) < 2:
        return []
    for row in rows:
        row["metric"] += " (primary)" if row["metric"] == primary else ""
    return [Heading(2, "Every metric"),
            _table(rows, ("stage", "metric", "strategy"), METRIC_COLUMNS, ("stage", "metric"),
                   f"Per update stage, metric and strategy, as in the overview (which counts {primary}). Item "
                   "scores behind the intervals: 1/0 for accuracy and exact match, and standing in for macro-F1; "
                   "per sentence, the share of correct tags for token accuracy, its chrF for chrF, its own "
                   "entities' F1, precision and recall for the entity metrics. Best per stage and metric in bold.")]


def _language_table(changes: Mapping[str, Mapping[str, Mapping[str, Any]]], languages: Sequence[str]) -> Table:
    first = next(iter(changes.values()))
    header = ["language", "category", "distance"]
    for strategy in changes:
        header += [f"{strategy} Δ (pt)", "95% interval", "neg. flips"]
    rows = []
    for language in languages:
        distance = first[language]["distance_to_update"]
        row = [Cell(language), Cell(first[language]["category"]),
               Cell(MISSING if distance is None else f"{distance:.2f}")]
        for by_language in changes.values():
            change = by_language[language]
            row += [Cell(f"{100 * change['delta']:+.1f}"),
                    Cell(f"[{100 * change['ci_low']:+.1f}, {100 * change['ci_high']:+.1f}]"),
                    Cell(f"{100 * change['negative_flip_rate']:.1f}%")]
        rows.append(row)
    return Table(header, rows, "distance: URIEL+ distance to the nearest update language.", labels=2)


# ---------------------------------------------------------------------------------------------- typology

def _typology(results: Mapping[str, Any], summary: Mapping[str, Mapping[str, Any]]) -> list[Block]:
    """The URIEL+ tree of the run's languages with the groups used, and notes on languages it cannot place."""
    from . import plots

    blocks: list[Block] = [Heading(2, "Typology")]
    notes = sorted({f"{language}: {change['note']}" for stages in summary.values() for stage in stages.values()
                    for language, change in stage["languages"].items() if change.get("note")})
    _, matrix = typology_distance(results["languages"])
    if matrix is None or len(matrix.languages) < 2:
        blocks.append(Paragraph("No URIEL+ tree: fewer than two of the run's languages could be placed."))
    else:
        from ..typology.grouping import cluster

        # About a third of the languages, only to orient a reader where no strategy recorded its groups: one group
        # may do here, unlike LAFT-URIEL's default (cml.strategies.laft_uriel.default_group_count), which needs two.
        grouping = cluster(matrix, n_groups=max(1, round(len(matrix.languages) / 3)))
        updated = {language for entry in results["strategies"].values() for record in entry["stages"]
                   if record["index"] > 0 for language in record["updated_languages"]}
        for position, (title, group_of, cut) in enumerate(_groupings(results, grouping), 1):
            groups: dict[str, list[str]] = {}
            for language, group in group_of.items():
                groups.setdefault(group, []).append(language)
            blocks += [Paragraph(title + ": " + "; ".join(f"group {group}: {' '.join(members)}"
                                                           for group, members in groups.items()) + "."),
                       Image(f"dendrogram-{position}",
                             plots.dendrogram_chart(grouping.linkage, grouping.languages, group_of, updated, cut),
                             "URIEL+ dendrogram",
                             f"Average-linkage tree of URIEL+ distances ({', '.join(matrix.kinds)}); leaves "
                             "coloured by group, languages trained in an update stage in bold.")]
    if notes:
        blocks.append(Bullets(notes))
    return blocks


def _groupings(results: Mapping[str, Any], grouping: Grouping) -> list[tuple[str, dict[str, str], float | None]]:
    """(title, {language: group}, cut height or None) per distinct grouping the run's strategies used, else
    ``grouping`` (the tree cut into about n/3 groups) for orientation."""
    used: dict[str, list[str]] = {}
    for strategy, entry in results["strategies"].items():
        stated = entry.get("groups") or next((record["groups"] for record in reversed(entry["stages"])
                                              if record.get("groups")), None)
        if stated:
            used.setdefault(json.dumps(language_groups(stated), sort_keys=True), []).append(strategy)
    if used:
        return [(f"Groups used by {', '.join(strategies)}", json.loads(key), None) for key, strategies in used.items()]
    group_of = {language: str(label) for language, label in zip(grouping.languages, grouping.labels)}
    plural = "s" if grouping.n_groups != 1 else ""
    return [(f"{grouping.n_groups} group{plural} by average linkage (no strategy in this run records groups)", group_of,
             _cut_height(grouping.linkage, grouping.n_groups))]


def language_groups(stated: Mapping[str, Any]) -> dict[str, str]:
    """{language: group} from any form a run records groups in: a modular strategy's stage record
    ({language: group}), {group: [languages]}, or :meth:`Grouping.to_json` (whose ``groups`` is the latter)."""
    if isinstance(stated.get("groups"), Mapping):
        stated = stated["groups"]
    if all(isinstance(members, list) for members in stated.values()):
        return {language: str(group) for group, members in stated.items() for language in members}
    return {language: str(group) for language, group in stated.items()}


def _cut_height(linkage: np.ndarray, n_groups: int) -> float | None:
    """A height between the last merge made and the first not made when the tree is cut into ``n_groups``."""
    if n_groups < 2:
        return None
    heights = np.sort(linkage[:, 2])
    made = len(heights) + 1 - n_groups
    return float(((heights[made - 1] if made else 0.0) + heights[made]) / 2)

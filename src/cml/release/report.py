"""A release's report, ``report.md`` and ``report.html`` in its folder: the ship verdict first, then every
language (route, before, after, change with its 95% interval), then the other metrics' counts. The model card
of an export (:mod:`cml.release.export`) reuses its blocks.
"""

from __future__ import annotations

from pathlib import Path

from ..evaluation.cml_metrics import metric_disagreements
from ..io import write_text
from ..reports.document import Block, Bullets, Cell, Heading, Paragraph, Table, to_html, to_markdown
from ..reports.report import disagreement_words
from ..reports.tables import points, signed_points
from ..routing import route_name
from .manifest import BASE_ROUTE, ReleaseRecord


def verdict_blocks(record: ReleaseRecord) -> list[Block]:
    """The verdict in one line, and its failures (why it must not ship)."""
    if record.verdict is None:
        return [Paragraph(f"**Initial release**, trained with cml on {len(record.languages)} languages; "
                          "there is nothing before it to compare with.")]
    verdict = record.verdict
    criteria = (f"at most {verdict.max_significant_losses} significant {verdict.metric} losses (found "
                f"{len(verdict.significant_losses)}) and a mean change of at least "
                f"{signed_points(verdict.min_mean_delta)} points (found {signed_points(verdict.mean_delta)})")
    if verdict.ship:
        return [Paragraph(f"**Verdict: may ship.** Criteria met: {criteria}.")]
    return [Paragraph(f"**Verdict: must not ship.** Criteria: {criteria}."), Bullets(verdict.failures)]


def language_table(record: ReleaseRecord, metric: str | None = None) -> Table:
    """One row per language: how it is served, its score before and after, the change and its interval."""
    metric = metric or record.primary_metric
    rows = []
    for lang in record.languages:
        result = record.results[lang]
        change = result.changes.get(metric)
        flag = _flag(change)
        route = route_name(result.route, BASE_ROUTE)
        gate = (result.gate or {}).get("choice", "")
        rows.append([Cell(lang), Cell(route + (f" (gate: {gate})" if gate else "")), Cell("yes" if result.updated else ""),
                     Cell(str(result.train_examples)), Cell(str(result.test_examples)),
                     Cell(points(change.before if change else None)),
                     Cell(points(result.scores.get(metric))), Cell(signed_points(change.delta if change else None)),
                     Cell(f"[{signed_points(change.ci_low)}, {signed_points(change.ci_high)}]" if change else "–"),
                     Cell(flag, best=flag == "gain")])
    return Table(["language", "route", "updated", "train", "test", "before", "after", "change", "95% CI",
                  "significant"], rows, caption=f"{metric}, in points (x100); significant: the whole 95% paired "
                  "bootstrap interval is on one side of zero", labels=3)


def _flag(change) -> str:
    return "" if change is None else "loss" if change.significant_loss else "gain" if change.significant_gain else ""


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 'es' if what.endswith('s') else 's'}"


def _outcome(summary: dict, ship: bool) -> str:
    figures = summary or {}
    return (f"{_count(figures.get('n_significant_degraded', 0), 'significant loss')} and "
            f"{_count(figures.get('n_significant_improved', 0), 'significant gain')} (mean change "
            f"{signed_points(figures.get('mean_delta'))}): {'may ship' if ship else 'must not ship'}")


def references_blocks(record: ReleaseRecord) -> list[Block]:
    """The update beside the strategies it was compared with on the same parent and batch, language by
    language: what they would have changed, and whether they would have shipped (or why they were not applied)."""
    if not record.references:
        return []
    metric = record.primary_metric
    applied = [name for name, ref in record.references.items() if ref.skipped is None]
    lines = [f"this release (`{record.strategy.get('name') or record.strategy.get('method')}`): "
             + _outcome(record.summary.get(metric), record.verdict.ship)]
    for name, ref in record.references.items():
        lines.append(f"`{name}`: not applied ({ref.skipped})" if ref.skipped else
                     f"`{name}` would have made " + _outcome(ref.summary.get(metric), ref.verdict.ship))
    blocks: list[Block] = [Heading(2, "Against other strategies on the same batch"), Bullets(lines)]
    if applied:
        rows = []
        for lang in record.languages:
            ours = record.results[lang].changes.get(metric)
            cells = [Cell(lang), Cell("yes" if record.results[lang].updated else ""),
                     Cell(f"{signed_points(ours.delta)} {_flag(ours)}".strip() if ours else "–",
                          best=_flag(ours) == "gain")]
            for name in applied:
                theirs = record.references[name].changes.get(lang, {}).get(metric)
                cells.append(Cell(f"{signed_points(theirs.delta)} {_flag(theirs)}".strip() if theirs else "–"))
            rows.append(cells)
        blocks.append(Table(["language", "updated", "this release", *applied], rows,
                            caption=f"change in {metric} (points) from the parent; loss/gain: significant (95% "
                                    "interval)", labels=2))
    return blocks


def metrics_table(record: ReleaseRecord) -> Table:
    rows = [[Cell(metric + (" (primary)" if metric == record.primary_metric else "")),
             Cell(str(figures["n_significant_improved"])), Cell(str(figures["n_significant_degraded"])),
             Cell(str(figures["n_improved"])), Cell(str(figures["n_degraded"])),
             Cell(signed_points(figures["mean_delta"])),
             Cell(points(figures["mean_loss_magnitude"]))]
            for metric, figures in record.summary.items()]
    return Table(["metric", "significant gains", "significant losses", "improved", "degraded", "mean change",
                  "mean loss"], rows, caption="every metric the task computes, over languages")


def disagreements(record: ReleaseRecord) -> list[str]:
    """Secondary metrics that tell another story than the primary one (significant losses or gains it does not
    show, or a mean change of the other sign), in words."""
    primary = record.primary_metric
    return [disagreement_words(kind, metric, record.summary[metric], primary, record.summary[primary])
            for metric, kind in metric_disagreements(record.summary, primary).items()]


def report_blocks(record: ReleaseRecord) -> list[Block]:
    blocks: list[Block] = [Heading(1, f"Release {record.name}"), *verdict_blocks(record)]
    notes = disagreements(record)
    if notes:
        blocks += [Paragraph("**Warning: the metrics disagree.**"), Bullets(notes)]
    origin = record.origin.release or record.origin.name
    blocks += [Paragraph(f"{record.task.value} model, {len(record.languages)} languages; made by `cml "
                         f"{record.kind}` from {record.origin.kind} `{origin}` with {record.strategy.get('method')} "
                         f"on {sum(r.train_examples for r in record.results.values())} examples "
                         f"({', '.join(lang for lang in record.languages if record.results[lang].updated)})."),
               Heading(2, "Every language"), language_table(record), *references_blocks(record)]
    if record.summary:
        blocks += [Heading(2, "Every metric"), metrics_table(record)]
    if record.modules:
        groups = record.strategy_state.groups
        blocks += [Heading(2, "Modules"), Bullets([f"`{module}`: " + ", ".join(sorted(
            lang for lang, group in groups.items() if group == module)) for module in record.modules])]
    return blocks


def write_report(folder: Path, record: ReleaseRecord) -> None:
    blocks = report_blocks(record)
    write_text(folder / "report.md", to_markdown(blocks, lambda image: ""))
    write_text(folder / "report.html", to_html(blocks, f"cml release {record.name}"))

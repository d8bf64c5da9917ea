"""One run's ``results.json`` reduced to what the tables keep: a row of figures per strategy for its (single)
update stage, and stage 0's training curve."""

from __future__ import annotations

from cml.evaluation.cml_metrics import REFERENCE

FIGURES = ("n_languages", "n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded",
           "mean_delta", "mean_loss_magnitude", "max_loss", "aggregate_before", "aggregate_after",
           "negative_flip_rate", "improved_share_gain_pp", "loss_magnitude_reduction",
           "aggregate_after_vs_reference_pp", "train_seconds", "stage_seconds", "stage_cpu_seconds")
# What a stage cost (cml.experiment.StageCost): wall and CPU seconds of its update and test evaluation. Runs made
# before it was recorded lack it (None).
COST = ("stage_seconds", "stage_cpu_seconds")
# The figures of a metric that a named suite's row repeats for every metric the task computes.
SUMMARY_FIGURES = ("n_languages", "n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded",
                   "mean_delta", "mean_loss_magnitude", "aggregate_after")
TOTAL_LOSS = "total_loss"


def stream_rows(results: dict, references: list[str] | None = None) -> dict[str, dict]:
    """{strategy: figures} for the run's (single) update stage: the ``FIGURES``, None where undefined. With
    ``references`` (a named suite's) each row adds ``v2_extras``."""
    from cml.reports.tables import overview_rows

    summary = results["summary"]
    reference = results.get("reference_strategy", REFERENCE)
    stage = results["stages"][1]["name"]
    rows = {row["strategy"]: row for row in overview_rows(summary) if row["stage"] == stage}
    for strategy, row in rows.items():
        row["aggregate_after_vs_reference_pp"] = 100 * (row["aggregate_after"] - rows[reference]["aggregate_after"])
        updates = results["strategies"][strategy]["stages"][1:]
        row["train_seconds"] = sum(s["train"]["train_seconds"] for s in updates if s.get("train"))
        row.update(stage_cost(updates))
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
    """A named suite's additions to a strategy's row: the total loss, ``versus`` each reference, the primary
    metric's name, every metric's figures (``SUMMARY_FIGURES``, the total loss, and ``versus`` each reference,
    the reference's figures also at the top), and the languages significantly degraded (all, and those outside the
    update)."""
    ours = summary[strategy][stage]
    languages = ours["languages"]

    def metric_figures(metric: str) -> dict:
        figures = with_total_loss({key: ours["metrics"][metric][key] for key in SUMMARY_FIGURES})
        against = {reference: versus(ours["metrics"][metric], summary[reference][stage]["metrics"][metric])
                   for reference in references
                   if metric in summary.get(reference, {}).get(stage, {}).get("metrics", {})}
        return {**figures, **(against.get(REFERENCE) or {}), "versus": against}

    degraded = [lang for lang, change in languages.items() if change["ci_high"] < 0]
    return {TOTAL_LOSS: with_total_loss(ours)[TOTAL_LOSS],
            "versus": {reference: versus(ours, summary[reference][stage]) for reference in references
                       if reference in summary},
            "primary_metric": primary,
            "metrics": {metric: metric_figures(metric) for metric in ours.get("metrics", {})},
            "significantly_degraded": degraded,
            "significantly_degraded_outside_update": [lang for lang in degraded
                                                      if languages[lang].get("category") != "in_update"]}


def stage0_curve(results: dict) -> dict:
    """Stage 0's training as the run records it: the dev score (primary metric) after each epoch, the epochs
    run of those allowed, the best epoch and whether early stopping ended it (a plateau on dev)."""
    train = results["stages"][0].get("train") or {}
    allowed = results["config"]["training"]["epochs"]
    return {"metric": results["metric"], "dev_history": train.get("dev_history", []), **stage_cost(results["stages"][:1]),
            "epochs_run": train.get("epochs_run"), "epochs_allowed": allowed, "best_epoch": train.get("best_epoch"),
            "early_stopped": bool(train.get("epochs_run")) and train["epochs_run"] < allowed,
            "patience": results["config"]["training"].get("early_stopping_patience")}


def stage_cost(stages: list[dict]) -> dict[str, float | None]:
    """The ``COST`` figures summed over ``stages``, None where a stage did not record them."""
    return {key: (sum(stage[key] for stage in stages) if all(key in stage for stage in stages) else None)
            for key in COST}

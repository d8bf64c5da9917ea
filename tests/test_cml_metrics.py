"""CML metrics: golden values on hand-computed cases, bootstrap coverage, and a run summarised from its files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cml.bootstrap import flip_rates, language_change, language_seed, paired_bootstrap_interval
from cml.config import ModelConfig, load_config
from cml.data.examples import Example
from cml.errors import CMLError
from cml.evaluation.cml_metrics import (CATEGORIES, SUMMARY_KEYS, aggregate_seeds, compare_to_reference, metric_changes,
                                        metric_disagreements, paired_items, placement, read_item_scores,
                                        read_metric_item_scores, summarize_languages, summarize_run, summarize_stage)
from cml.task_family import TaskFamily
from cml.tasks import make_task

# ---------------------------------------------------------------------------------------------- a tiny run

STAGES = ("initial", "update1", "update2")
UPDATED = (["deu", "eng", "yor"], ["deu"], ["yor"])
# Item scores (4 test items per language) after each stage, per strategy; stage 0 is shared.
INITIAL = {"deu": [1, 1, 0, 0], "eng": [1, 0, 1, 0], "yor": [0, 0, 0, 1]}
ITEMS = {
    "full_finetune": [INITIAL,
                      {"deu": [1, 1, 1, 0], "eng": [0, 0, 1, 0], "yor": [0, 0, 0, 1]},
                      {"deu": [1, 0, 1, 0], "eng": [0, 0, 1, 1], "yor": [1, 0, 0, 1]}],
    "laft_uriel": [INITIAL,
                   {"deu": [1, 1, 1, 1], "eng": [1, 0, 1, 0], "yor": [0, 0, 0, 1]},
                   {"deu": [1, 1, 1, 1], "eng": [1, 0, 1, 1], "yor": [1, 1, 0, 1]}],
}


def write_run(run_dir: Path, items: dict = ITEMS, updated=UPDATED, stages=STAGES, *, task="classification",
              metric="accuracy", secondary: dict | None = None) -> dict:
    """A finished run folder: results.json (with its summary) and prediction files, scores the item means. ``secondary``
    ({metric: items shaped like ``items``}) adds per-metric item scores and values, as runs write them now;
    without it the files are as runs wrote them before (the primary metric only)."""
    languages = list(items[next(iter(items))][0])
    strategies = {}
    for strategy, per_stage in items.items():
        records = []
        for index, (name, scores, langs) in enumerate(zip(stages, per_stage, updated)):
            path = Path("predictions") / ("initial" if index == 0 else strategy) / f"{index}-{name}.jsonl"
            (run_dir / path).parent.mkdir(parents=True, exist_ok=True)
            others = {other: by_strategy[strategy][index] for other, by_strategy in (secondary or {}).items()}
            rows = [{"lang": lang, "id": f"{lang}-{i}", "prediction": "x", "score": float(score)}
                    | ({"scores": {metric: float(score), **{other: float(values[lang][i])
                                                             for other, values in others.items()}}}
                       if secondary else {})
                    for lang in languages for i, score in enumerate(scores[lang])]
            (run_dir / path).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
            records.append({"name": name, "index": index, "updated_languages": langs,
                            "train_examples": {lang: 10 for lang in langs}, "train": {},
                            "scores": {lang: float(np.mean(scores[lang])) for lang in languages},
                            "metrics": {lang: {metric: float(np.mean(scores[lang])), "signature": "x|y",
                                               **{other: float(np.mean(values[lang]))
                                                  for other, values in others.items()}}
                                        for lang in languages} if secondary else {},
                            "predictions": str(path), "warnings": []})
        strategies[strategy] = {"method": strategy, "stages": records}
    results = {"format_version": 1, "name": run_dir.name, "task": task, "metric": metric, "seed": 0,
               "languages": languages, "labels": [], "reference_strategy": "full_finetune",
               "stages": strategies[next(iter(items))]["stages"], "strategies": strategies, "config": {}, "versions": {}}
    results["summary"] = summarize_run(results, run_dir)
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return results


# A seq2seq-like run with long outputs: exact match is 0 for every item of every model, while chrF (item scores:
# sentence chrF) falls by more than half in fra and hin under full fine-tuning (an update on deu) and holds under
# laft_uriel.
NOTHING = {lang: [0] * 6 for lang in ("deu", "fra", "hin")}
CHRF_BEFORE = {"deu": [.24, .26, .3, .28, .25, .27], "fra": [.3, .28, .26, .29, .27, .3],
               "hin": [.25, .24, .27, .26, .28, .24]}
CHRF_ITEMS = {"full_finetune": [CHRF_BEFORE, {"deu": [.3, .31, .33, .3, .29, .32], "fra": [.12, .1, .14, .11, .13, .1],
                                              "hin": [.11, .12, .1, .14, .13, .12]}],
              "laft_uriel": [CHRF_BEFORE, {"deu": [.3, .31, .33, .3, .29, .32], "fra": [.3, .28, .26, .29, .27, .31],
                                           "hin": [.25, .24, .27, .26, .28, .24]}]}


def write_seq2seq_run(run_dir: Path) -> dict:
    return write_run(run_dir, {strategy: [NOTHING, NOTHING] for strategy in CHRF_ITEMS},
                     updated=(["deu", "fra", "hin"], ["deu"]), stages=("initial", "update"), task="seq2seq",
                     metric="exact_match", secondary={"chrf": CHRF_ITEMS})


@pytest.fixture(scope="module")
def run_summary(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    results = write_run(run_dir)
    return results, summarize_run(results, run_dir), run_dir


# ---------------------------------------------------------------------------------------------- bootstrap, flips

def test_bootstrap_constant_difference_has_no_width():
    assert paired_bootstrap_interval([0, 1, 0, 1], [1, 2, 1, 2]) == pytest.approx((1.0, 1.0))


@pytest.mark.parametrize("differences", [[0, 1], [-1, 0, 1]])
def test_bootstrap_extremes_are_in_the_interval_when_likelier_than_the_tail(differences):
    # Two items: the mean is 0 with probability 1/4 > 2.5%; three: -1 with probability 1/27 = 3.7% > 2.5%.
    low, high = paired_bootstrap_interval(np.zeros(len(differences)), differences)
    assert (low, high) == (min(differences), max(differences))


def test_bootstrap_is_seeded_and_resamples_pairs():
    before, after = np.random.default_rng(1).random((2, 50))
    first = paired_bootstrap_interval(before, after, seed=3)
    assert first == paired_bootstrap_interval(before, after, seed=3)
    assert first != paired_bootstrap_interval(before, after, seed=4)
    # Pairing: shifting every item by the same amount on both sides changes nothing.
    assert paired_bootstrap_interval(before + 5, after + 5, seed=3) == pytest.approx(first)


def test_bootstrap_blocks_do_not_change_the_answer(monkeypatch):
    from cml import bootstrap

    scores = np.random.default_rng(0).random((2, 30))
    whole = paired_bootstrap_interval(*scores, resamples=200)
    monkeypatch.setattr(bootstrap, "_BOOTSTRAP_BLOCK", 30 * 7)  # 7 resamples per block, the last one short
    assert paired_bootstrap_interval(*scores, resamples=200) == pytest.approx(whole, abs=0.05)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        paired_bootstrap_interval([], [])
    with pytest.raises(ValueError):
        paired_bootstrap_interval([1, 0], [1])
    with pytest.raises(ValueError):
        flip_rates([1, 0], [1])


def test_bootstrap_coverage_on_a_known_effect():
    """200 simulated test sets of 200 items: right before with p=0.7; right items turn wrong with p=0.1, wrong
    ones right with p=0.3, so the true delta is 0.7·0.9 + 0.3·0.3 - 0.7 = +0.02. The 95% interval should cover
    it about 95% of the time (binomial sd over 200 sets: 1.5 points)."""
    rng = np.random.default_rng(2024)
    true_delta = 0.7 * 0.9 + 0.3 * 0.3 - 0.7
    covered = 0
    for dataset in range(200):
        before = (rng.random(200) < 0.7).astype(float)
        flip = rng.random(200) < np.where(before == 1, 0.1, 0.3)
        after = np.where(flip, 1 - before, before)
        low, high = paired_bootstrap_interval(before, after, seed=dataset)
        covered += low <= true_delta <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_flip_rates_binary():
    assert flip_rates([1, 1, 0, 0, 1], [0, 1, 1, 0, 1]) == pytest.approx((0.2, 0.2))
    assert flip_rates([1, 1, 1, 1], [0, 0, 0, 1]) == pytest.approx((0.75, 0.0))


def test_flip_rates_tagging_count_sentences_whose_token_share_moved():
    before = [0.5, 1.0, 0.2, 0.8]
    after = [0.25, 1.0, 0.4, 0.6]
    assert flip_rates(before, after) == pytest.approx((0.5, 0.25))


def test_language_change_classification():
    change = language_change(0.6, 0.4, np.array([1, 1, 1, 0, 0.]), np.array([1, 0, 0, 0, 1.]), seed=0)
    assert change["before"] == 0.6 and change["after"] == 0.4
    assert change["delta"] == pytest.approx(-0.2)
    assert change["negative_flip_rate"] == pytest.approx(0.4)
    assert change["positive_flip_rate"] == pytest.approx(0.2)
    low, high = paired_bootstrap_interval([1, 1, 1, 0, 0], [1, 0, 0, 0, 1], seed=0)
    assert (change["ci_low"], change["ci_high"]) == pytest.approx((low, high))


def test_language_change_corpus_metric_keeps_the_interval_around_its_delta():
    # Item means move by +0.25 but the (corpus) metric by +0.4: the item interval is moved by +0.15.
    before, after = np.array([0.5, 0.5, 1.0, 0.0]), np.array([0.5, 1.0, 1.0, 0.5])
    change = language_change(0.3, 0.7, before, after, seed=1)
    low, high = paired_bootstrap_interval(before, after, seed=1)
    assert change["delta"] == pytest.approx(0.4)
    assert (change["ci_low"], change["ci_high"]) == pytest.approx((low + 0.15, high + 0.15))


# ---------------------------------------------------------------------------------------------- categories

DISTANCES = {("eng", "deu"): 0.35, ("fra", "deu"): 0.46, ("fra", "spa"): 0.2, ("yor", "deu"): 0.62,
             ("nld", "deu"): 0.4}


def fake_distance(a: str, b: str) -> float | None:
    return DISTANCES.get((a, b), DISTANCES.get((b, a)))


@pytest.mark.parametrize("language, updated, category, distance", [
    ("deu", ["deu"], "in_update", 0.0),
    ("eng", ["deu"], "neighbour", 0.35),
    ("fra", ["deu"], "far", 0.46),
    ("fra", ["deu", "spa"], "neighbour", 0.2),  # the nearest update language counts
    ("nld", ["deu"], "far", 0.4),  # "below the threshold" is strict
])
def test_placement(language, updated, category, distance):
    assert placement(language, updated, fake_distance, 0.4) == {"category": category, "distance_to_update": distance}


def test_placement_without_typology_is_far_with_a_note():
    placed = placement("zzz", ["deu"], fake_distance, 0.4)
    assert placed["category"] == "far" and placed["distance_to_update"] is None and "URIEL" in placed["note"]
    assert placement("eng", ["deu"], lambda a, b: math.nan, 0.4)["category"] == "far"


# ---------------------------------------------------------------------------------------------- summaries

CHANGES = {  # delta, interval and flips given directly; categories for the split
    "a": {"before": 0.5, "after": 0.6, "delta": 0.1, "ci_low": 0.02, "ci_high": 0.18, "negative_flip_rate": 0.1,
          "category": "in_update"},
    "b": {"before": 0.7, "after": 0.6, "delta": -0.1, "ci_low": -0.2, "ci_high": -0.01, "negative_flip_rate": 0.2,
          "category": "neighbour"},
    "c": {"before": 0.8, "after": 0.75, "delta": -0.05, "ci_low": -0.1, "ci_high": 0.0, "negative_flip_rate": 0.15,
          "category": "far"},
    "d": {"before": 0.4, "after": 0.4, "delta": 0.0, "ci_low": -0.05, "ci_high": 0.05, "negative_flip_rate": 0.05,
          "category": "far"},
}


def test_summary_figures():
    assert summarize_languages(CHANGES) == pytest.approx({
        "n_languages": 4, "n_improved": 1, "n_degraded": 2,
        "n_significant_improved": 1, "n_significant_degraded": 1,  # c's interval touches 0: not significant
        "mean_delta": -0.0125, "mean_loss_magnitude": 0.075, "max_loss": 0.1,
        "aggregate_before": 0.6, "aggregate_after": 0.5875, "negative_flip_rate": 0.125})


def test_summary_of_no_languages():
    assert summarize_languages({}) == {
        "n_languages": 0, "n_improved": 0, "n_degraded": 0, "n_significant_improved": 0,
        "n_significant_degraded": 0, "mean_delta": None, "mean_loss_magnitude": 0.0, "max_loss": 0.0,
        "aggregate_before": None, "aggregate_after": None, "negative_flip_rate": None}


def test_summary_by_category():
    summary = summarize_stage(CHANGES)
    assert set(summary) == {*SUMMARY_KEYS, "by_category"}
    assert list(summary["by_category"]) == list(CATEGORIES)
    assert summary["by_category"]["far"] == pytest.approx({
        "n_languages": 2, "n_improved": 0, "n_degraded": 1, "n_significant_improved": 0,
        "n_significant_degraded": 0, "mean_delta": -0.025, "mean_loss_magnitude": 0.05, "max_loss": 0.05,
        "aggregate_before": 0.6, "aggregate_after": 0.575, "negative_flip_rate": 0.1})
    assert summary["by_category"]["neighbour"]["n_significant_degraded"] == 1
    assert summary["by_category"]["in_update"]["n_significant_improved"] == 1


@pytest.mark.parametrize("ours, reference, expected", [
    ((3, 4, 0.02), (1, 4, 0.08), (50.0, 0.75)),
    ((1, 4, 0.12), (2, 4, 0.08), (-25.0, -0.5)),  # larger losses: a negative reduction
    ((1, 4, 0.0), (1, 4, 0.0), (0.0, 0.0)),  # neither lost anything: as good as the reference
    ((1, 4, 0.05), (1, 4, 0.0), (0.0, None)),  # the reference lost nothing, we did: undefined
    ((0, 0, 0.0), (1, 4, 0.08), (None, 1.0)),
])
def test_compare_to_reference(ours, reference, expected):
    def figures(n_improved, n_languages, loss):
        return {"n_improved": n_improved, "n_languages": n_languages, "mean_loss_magnitude": loss}

    result = compare_to_reference(figures(*ours), figures(*reference))
    assert (result["improved_share_gain_pp"], result["loss_magnitude_reduction"]) == pytest.approx(expected)


def test_aggregate_seeds():
    summaries = [{"n": 1, "mean": 0.5, "loss": None, "note": "x", "by": {"far": {"n": 0}}, "only_here": 1},
                 {"n": 2, "mean": 1.5, "loss": 0.2, "note": "x", "by": {"far": {"n": 2}}},
                 {"n": 3, "mean": 1.0, "loss": 0.4, "note": "y", "by": {"far": {"n": 4}}}]
    aggregated = aggregate_seeds(summaries)
    assert aggregated["n"] == pytest.approx({"mean": 2.0, "std": 1.0, "n": 3})
    assert aggregated["mean"] == pytest.approx({"mean": 1.0, "std": 0.5, "n": 3})
    assert aggregated["loss"] == pytest.approx({"mean": 0.3, "std": math.sqrt(0.02), "n": 2})
    assert aggregated["by"]["far"]["n"] == pytest.approx({"mean": 2.0, "std": 2.0, "n": 3})
    assert aggregated["note"] is None and "only_here" not in aggregated
    assert aggregate_seeds(summaries[:1])["n"] == {"mean": 1.0, "std": None, "n": 1}
    assert aggregate_seeds([{"loss": None}, {"loss": None}]) == {"loss": None}
    with pytest.raises(ValueError):
        aggregate_seeds([])


def test_aggregate_seeds_of_run_summaries(run_summary):
    _, summary, _ = run_summary
    aggregated = aggregate_seeds([summary, summary])
    stage = aggregated["laft_uriel"]["update1"]
    assert stage["mean_delta"] == pytest.approx({"mean": 0.5 / 3, "std": 0.0, "n": 2})
    assert stage["by_category"]["far"]["n_languages"]["mean"] == 1
    assert stage["languages"]["eng"]["category"] == "neighbour"


# ---------------------------------------------------------------------------------------------- a run

def test_read_and_pair_items(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"lang": "deu", "id": 2, "prediction": "a", "score": 1.0}\n'
                    '{"lang": "deu", "id": "1", "prediction": "b", "score": 0.0}\n', encoding="utf-8")
    items = read_item_scores(path)
    assert items == {"deu": {"2": 1.0, "1": 0.0}}
    before, after = paired_items(items["deu"], {"1": 1.0, "2": 1.0}, where="x")
    assert before.tolist() == [1.0, 0.0] and after.tolist() == [1.0, 1.0]  # matched by id, not position
    with pytest.raises(CMLError, match="differ"):
        paired_items(items["deu"], {"1": 1.0, "3": 1.0}, where="x")
    path.write_text(path.read_text() * 2, encoding="utf-8")
    with pytest.raises(CMLError, match="twice"):
        read_item_scores(path)
    with pytest.raises(CMLError, match="missing"):
        read_item_scores(tmp_path / "absent.jsonl")


def test_summarize_run_golden(run_summary):
    _, summary, _ = run_summary
    assert list(summary) == ["full_finetune", "laft_uriel"]
    assert list(summary["full_finetune"]) == ["update1", "update2"]
    first = summary["full_finetune"]["update1"]
    assert {key: first[key] for key in SUMMARY_KEYS} == pytest.approx({
        "n_languages": 3, "n_improved": 1, "n_degraded": 1, "n_significant_improved": 0,
        "n_significant_degraded": 0, "mean_delta": 0.0, "mean_loss_magnitude": 0.25, "max_loss": 0.25,
        "aggregate_before": 1.25 / 3, "aggregate_after": 1.25 / 3, "negative_flip_rate": 1 / 12})
    assert first["vs_reference"] == {"improved_share_gain_pp": 0.0, "loss_magnitude_reduction": 0.0}
    eng = first["languages"]["eng"]
    assert eng["category"] == "neighbour" and eng["distance_to_update"] == pytest.approx(0.345, abs=0.01)
    assert (eng["before"], eng["after"], eng["delta"]) == pytest.approx((0.5, 0.25, -0.25))
    assert (eng["negative_flip_rate"], eng["positive_flip_rate"]) == (0.25, 0.0)
    assert eng["ci_low"] <= eng["delta"] <= eng["ci_high"] == 0.0
    assert first["languages"]["deu"]["category"] == "in_update"
    assert first["languages"]["yor"]["category"] == "far"

    laft = summary["laft_uriel"]["update1"]
    assert (laft["n_improved"], laft["n_degraded"], laft["mean_delta"]) == pytest.approx((1, 0, 0.5 / 3))
    assert laft["vs_reference"] == pytest.approx({"improved_share_gain_pp": 0.0, "loss_magnitude_reduction": 1.0})
    assert laft["settings"]["neighbour_threshold"] == 0.4


def test_summarize_run_compares_with_the_strategys_previous_stage(run_summary):
    _, summary, _ = run_summary
    second = summary["laft_uriel"]["update2"]  # before is laft_uriel's update1, not stage 0
    assert {lang: change["before"] for lang, change in second["languages"].items()} == {
        "deu": 1.0, "eng": 0.5, "yor": 0.25}
    assert (second["n_improved"], second["n_degraded"], second["mean_delta"]) == pytest.approx((2, 0, 0.25))
    assert second["languages"]["yor"]["category"] == "in_update"
    assert second["by_category"]["far"]["n_languages"] == 2
    reference = summary["full_finetune"]["update2"]
    assert (reference["n_improved"], reference["n_degraded"], reference["mean_loss_magnitude"]) == (2, 1, 0.25)


def test_summarize_run_is_deterministic_and_uses_common_resamples(tmp_path):
    """Thirty items per language with scores in [0, 1] (sentence chrF-like), so that every seed gives another
    interval. eng changes by the same items under both strategies, deu by others: eng's interval is the same in
    both, and is the one eng's own seed gives; a shared stream of resamples, or a seed per strategy, would move it."""
    rng = np.random.default_rng(0)
    before = {lang: rng.random(30).round(3).tolist() for lang in ("deu", "eng", "yor")}
    eng_after = (np.array(before["eng"]) + rng.normal(0.05, 0.1, 30)).clip(0, 1).round(3).tolist()
    after = {strategy: {"deu": rng.random(30).round(3).tolist(), "eng": eng_after, "yor": before["yor"]}
             for strategy in ("full_finetune", "laft_uriel")}
    results = write_run(tmp_path, {strategy: [before, after[strategy]] for strategy in after},
                        updated=(["deu", "eng", "yor"], ["deu"]), stages=("initial", "update"))
    summary = summarize_run(results, tmp_path)
    assert summarize_run(results, tmp_path) == summary

    expected = paired_bootstrap_interval(before["eng"], eng_after, seed=language_seed(0, "eng"))
    delta = float(np.mean(eng_after) - np.mean(before["eng"]))
    assert expected[0] < delta < expected[1] and delta > 0.01
    for strategy in after:
        eng = summary[strategy]["update"]["languages"]["eng"]
        assert (eng["delta"], eng["ci_low"], eng["ci_high"]) == pytest.approx((delta, *expected))
    deu = [summary[strategy]["update"]["languages"]["deu"] for strategy in after]
    assert (deu[0]["ci_low"], deu[0]["ci_high"]) != (deu[1]["ci_low"], deu[1]["ci_high"])
    reseeded = summarize_run(results, tmp_path, seed=1)["laft_uriel"]["update"]["languages"]["eng"]
    assert (reseeded["ci_low"], reseeded["ci_high"]) != pytest.approx(expected)


def test_summarize_run_places_unknown_languages_far(tmp_path):
    items = {"full_finetune": [{"deu": [1, 0], "zzz": [1, 1]}, {"deu": [1, 1], "zzz": [1, 0]}]}
    results = write_run(tmp_path, items, updated=(["deu", "zzz"], ["deu"]), stages=("initial", "update"))
    zzz = summarize_run(results, tmp_path)["full_finetune"]["update"]["languages"]["zzz"]
    assert zzz["category"] == "far" and zzz["distance_to_update"] is None and zzz["note"]


def test_summarize_run_needs_matching_items(tmp_path):
    results = write_run(tmp_path)
    path = tmp_path / results["strategies"]["laft_uriel"]["stages"][1]["predictions"]
    path.write_text(path.read_text(encoding="utf-8").replace('"eng-3"', '"eng-9"'), encoding="utf-8")
    with pytest.raises(CMLError, match="laft_uriel, stage update1, eng"):
        summarize_run(results, tmp_path)


# ---------------------------------------------------------------------------------------------- every metric

@pytest.fixture(scope="module")
def seq2seq_summary(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seq2seq")
    results = write_seq2seq_run(run_dir)
    return results, summarize_run(results, run_dir), run_dir


def test_every_metric_is_summarised_beside_the_primary_one(seq2seq_summary):
    _, summary, _ = seq2seq_summary
    stage = summary["full_finetune"]["update"]
    assert list(stage["metrics"]) == ["exact_match", "chrf"]  # "signature" in the records is no metric
    exact = stage["metrics"]["exact_match"]
    assert {key: stage[key] for key in (*SUMMARY_KEYS, "by_category", "vs_reference", "languages")} == {
        key: exact[key] for key in (*SUMMARY_KEYS, "by_category", "vs_reference", "languages")}
    assert (stage["n_significant_degraded"], stage["mean_delta"]) == (0, 0.0)  # exact match: nothing happened
    chrf = stage["metrics"]["chrf"]
    assert (chrf["n_significant_degraded"], chrf["n_significant_improved"]) == (2, 1)
    fra = chrf["languages"]["fra"]
    assert (fra["before"], fra["after"]) == pytest.approx((np.mean(CHRF_BEFORE["fra"]), 0.1167), abs=1e-4)
    assert fra["ci_high"] < 0 and fra["category"] == "far"
    laft = summary["laft_uriel"]["update"]["metrics"]["chrf"]
    assert laft["n_significant_degraded"] == 0
    assert laft["vs_reference"]["loss_magnitude_reduction"] == pytest.approx(1.0)


def test_secondary_metrics_that_contradict_the_primary_one_are_named(seq2seq_summary):
    _, summary, _ = seq2seq_summary
    assert metric_disagreements(summary["full_finetune"]["update"]["metrics"], "exact_match") == {"chrf": "losses"}
    assert metric_disagreements(summary["laft_uriel"]["update"]["metrics"], "exact_match") == {"chrf": "gains"}
    assert metric_disagreements(summary["full_finetune"]["update"]["metrics"], "chrf") == {}  # EM has no sign


@pytest.mark.parametrize("primary, other, kind", [
    ((0, 0, 0.0), (2, 0, -0.05), "losses"),
    ((0, 0, 0.001), (0, 1, 0.02), "gains"),
    ((0, 1, -0.01), (0, 3, 0.04), "direction"),  # primary down, the other significantly up
    ((1, 0, 0.01), (3, 0, -0.02), "direction"),
    ((1, 0, -0.01), (3, 0, -0.06), None),  # both lost: they agree
    ((1, 0, -0.01), (1, 0, 0.02), None),  # opposite means, but the other's has no significant language behind it
    ((0, 0, 0.0), (0, 0, -0.03), None),
])
def test_metric_disagreements(primary, other, kind):
    def figures(degraded, improved, mean_delta):
        return {"n_significant_degraded": degraded, "n_significant_improved": improved, "mean_delta": mean_delta}

    found = metric_disagreements({"em": figures(*primary), "chrf": figures(*other)}, "em")
    assert found == ({"chrf": kind} if kind else {})
    assert metric_disagreements({"chrf": figures(*other)}, "em") == {}


def test_primary_metric_chooses_what_the_summary_counts(seq2seq_summary):
    results, summary, run_dir = seq2seq_summary
    stage = summarize_run(results, run_dir, primary_metric="chrf")["full_finetune"]["update"]
    chrf = summary["full_finetune"]["update"]["metrics"]["chrf"]
    assert {key: stage[key] for key in SUMMARY_KEYS} == {key: chrf[key] for key in SUMMARY_KEYS}
    assert stage["n_significant_degraded"] == 2 and stage["languages"] == chrf["languages"]
    assert stage["metrics"] == summary["full_finetune"]["update"]["metrics"]


def test_a_run_without_per_metric_scores_summarises_its_primary_metric(run_summary):
    results, summary, run_dir = run_summary
    assert all(list(stage["metrics"]) == ["accuracy"] for stages in summary.values() for stage in stages.values())
    with pytest.raises(CMLError, match="stage update1: no macro_f1 scores"):
        summarize_run(results, run_dir, primary_metric="macro_f1")


def test_metric_changes_of_a_model_pair_outside_a_run():
    before = {"accuracy": {"deu": 0.5, "fra": 0.75}, "macro_f1": {"deu": 0.4, "fra": 0.7}, "chrf": {"deu": 0.3}}
    after = {"accuracy": {"deu": 0.75, "fra": 0.75}, "macro_f1": {"deu": 0.7, "fra": 0.6}}
    items = {metric: {"deu": ([1, 0, 1, 0], [1, 1, 1, 0]), "fra": ([1, 1, 1, 0], [1, 1, 0, 1])}
             for metric in ("accuracy", "macro_f1")}
    changes = metric_changes(before, after, items, seed=3)
    assert list(changes) == ["accuracy", "macro_f1"]  # chrf has no after values
    assert set(changes["accuracy"]) == {*SUMMARY_KEYS, "languages"}
    assert changes["accuracy"]["languages"]["deu"] == language_change(0.5, 0.75, [1, 0, 1, 0], [1, 1, 1, 0],
                                                                       seed=[3, 2871402823])
    # macro-F1 borrows the correctness items: the same spread, moved to its own delta
    deu = changes["macro_f1"]["languages"]["deu"]
    assert deu["delta"] == pytest.approx(0.3)
    assert deu["ci_low"] - changes["accuracy"]["languages"]["deu"]["ci_low"] == pytest.approx(0.05)
    assert changes["macro_f1"]["mean_delta"] == pytest.approx(0.1)
    placed = metric_changes(before, after, items, placements={"deu": {"category": "in_update"},
                                                              "fra": {"category": "far"}})
    assert placed["accuracy"]["by_category"]["far"]["n_languages"] == 1


def test_read_metric_item_scores(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"lang": "deu", "id": 1, "prediction": "a", "score": 1.0, "scores": {"em": 1.0, "chrf": 0.9}}\n'
                    '{"lang": "fra", "id": 1, "prediction": "b", "score": 0.0, "scores": {"em": 0.0, "chrf": 0.4}}\n',
                    encoding="utf-8")
    assert read_metric_item_scores(path, "em") == {"em": {"deu": {"1": 1.0}, "fra": {"1": 0.0}},
                                                   "chrf": {"deu": {"1": 0.9}, "fra": {"1": 0.4}}}
    assert read_item_scores(path) == {"deu": {"1": 1.0}, "fra": {"1": 0.0}}
    for bad, message in (('"scores": {"em": 0.0}', "the lines before scored chrf, em"),
                         ('"scores": [0.0]', "not a prediction line"),
                         ('"scores": {"em": 0.0, "chrf": "high"}', "not a prediction line")):
        path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n"
                        + f'{{"lang": "fra", "id": 1, "prediction": "b", "score": 0.0, {bad}}}\n', encoding="utf-8")
        with pytest.raises(CMLError, match=message) as error:
            read_metric_item_scores(path, "em")
        assert error.value.line == 2


# ---------------------------------------------------------------------------------------------- item scores, settings

def test_each_family_scores_items_in_every_metric():
    classification = make_task(TaskFamily.classification, ["a", "b"], ModelConfig(name="unused"))
    examples = [Example(str(i), "deu", text="x", label=label) for i, label in enumerate("aab")]
    assert classification.item_metric_scores(examples, ["a", "b", "b"]) == {"accuracy": [1.0, 0.0, 1.0],
                                                                           "macro_f1": [1.0, 0.0, 1.0]}
    ner = make_task(TaskFamily.tagging, ["O", "B-PER", "I-PER", "B-LOC"], ModelConfig(name="unused"))
    sentences = [("B-PER", "I-PER", "O", "B-LOC"), ("O", "O"), ("O", "O"), ("B-LOC", "O")]
    predicted = [["B-PER", "I-PER", "O", "O"], ["O", "O"], ["B-LOC", "O"], ["B-PER"]]  # the last one cut short
    examples = [Example(str(i), "deu", tokens=("w",) * len(tags), tags=tags) for i, tags in enumerate(sentences)]
    scores = ner.item_metric_scores(examples, predicted)
    assert list(scores) == list(ner.metrics) == ["entity_f1", "entity_precision", "entity_recall", "token_accuracy"]
    assert scores["entity_f1"] == pytest.approx([2 / 3, 1.0, 0.0, 0.0])  # nothing to find and nothing found: right
    assert scores["entity_precision"] == [1.0, 1.0, 0.0, 0.0]
    assert scores["entity_recall"] == [0.5, 1.0, 1.0, 0.0]
    assert scores["token_accuracy"] == [0.75, 1.0, 0.5, 0.5]
    assert ner.item_scores(examples, predicted) == scores["entity_f1"]  # the primary metric's
    pos = make_task(TaskFamily.tagging, ["NOUN", "VERB"], ModelConfig(name="unused"))
    assert list(pos.item_metric_scores(examples[:1], [["NOUN"] * 4])) == ["token_accuracy"]


def test_primary_metric_setting_reaches_the_task():
    assert make_task(TaskFamily.seq2seq, None, ModelConfig(name="unused"), "chrf").primary_metric == "chrf"
    assert make_task(TaskFamily.seq2seq, None, ModelConfig(name="unused")).primary_metric == "exact_match"
    ner = make_task(TaskFamily.tagging, ["O", "B-X", "I-X"], ModelConfig(name="unused"), "token_accuracy")
    assert ner.primary_metric == "token_accuracy"
    with pytest.raises(CMLError, match="this tagging task computes token_accuracy, not 'entity_f1'") as error:
        make_task(TaskFamily.tagging, ["NOUN", "VERB"], ModelConfig(name="unused"), "entity_f1")
    assert error.value.key == "evaluation.primary_metric"


def test_an_unknown_primary_metric_names_the_setting(tmp_path):
    from helpers import write_config, write_sib_like

    write_sib_like(tmp_path / "data")
    path = write_config(tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
                        stream={"stages": [{"name": "initial", "amount": 10}]}, evaluation={"primary_metric": "bleu"})
    with pytest.raises(CMLError, match="unknown metric 'bleu'; one of accuracy, chrf") as error:
        load_config(path)
    assert (error.value.key, error.value.line) == (
        "evaluation.primary_metric", path.read_text().splitlines().index("  primary_metric: bleu") + 1)

    from cml.experiment import Experiment

    path.write_text(path.read_text().replace("primary_metric: bleu", "primary_metric: chrf"))
    with pytest.raises(CMLError, match="this classification task computes accuracy, macro_f1, not 'chrf'") as error:
        Experiment(load_config(path))
    assert (error.value.file, error.value.key, error.value.line) == (
        str(path), "evaluation.primary_metric", path.read_text().splitlines().index("  primary_metric: chrf") + 1)


def test_a_run_scores_every_metric_and_counts_the_chosen_one(tmp_path, tiny_backbone):
    from helpers import run_config

    from cml.experiment import Experiment

    config = load_config(run_config(tmp_path, tiny_backbone, epochs=2), ["evaluation.primary_metric=macro_f1"])
    results = Experiment(config).run()
    assert results["metric"] == "macro_f1"
    update = results["stages"][1]
    assert update["scores"] == {lang: metrics["macro_f1"] for lang, metrics in update["metrics"].items()}
    line = json.loads((tmp_path / "runs" / "t" / update["predictions"]).read_text().splitlines()[0])
    assert set(line["scores"]) == {"accuracy", "macro_f1"} and line["score"] == line["scores"]["macro_f1"]
    stage = results["summary"]["full_finetune"]["update"]
    assert list(stage["metrics"]) == ["macro_f1", "accuracy"]  # the primary metric first
    assert stage["mean_delta"] == stage["metrics"]["macro_f1"]["mean_delta"]
    with pytest.raises(CMLError, match="other primary_metric settings"):
        Experiment(load_config(tmp_path / "c.yaml", ["training.epochs=2"]), resume=True).run()

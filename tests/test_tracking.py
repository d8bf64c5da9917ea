"""Experiment trackers see the CML picture: a run with ``training.trackers: [tensorboard]``, read back from its
event files offline, has the whole resolved config, every training step's loss on one global step, every
language's dev and test score after every stage and the summary figures; and tracking changes no result."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import run_config

from cml.config import load_config
from cml.evaluation.cml_metrics import SUMMARY_KEYS
from cml.experiment import Experiment
from cml.training.tracking import flat_config

STRATEGIES = [{"method": "full_finetune"}, {"method": "laft_uriel"}]


def run(tmp_path, backbone, trackers):
    config = run_config(tmp_path, backbone, epochs=2, trackers=trackers)
    tree = yaml.safe_load(config.read_text(encoding="utf-8"))
    config.write_text(yaml.safe_dump({**tree, "strategies": STRATEGIES}), encoding="utf-8")
    experiment = Experiment(load_config(config))
    return experiment.run(), experiment.run_dir


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_backbone):
    return run(tmp_path_factory.mktemp("tracked"), tiny_backbone, ["tensorboard"])


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "t"), size_guidance={"scalars": 0})  # <run folder>/<run name>
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_one_global_step_runs_through_every_stage_and_strategy(tracked):
    results, run_dir = tracked
    logged = scalars(run_dir)
    steps = {"initial": results["stages"][0]["train"]["steps"]}
    steps.update({name: entry["stages"][1]["train"]["steps"] for name, entry in results["strategies"].items()})
    assert all(steps.values())
    losses = [step for name in ("initial", "full_finetune", "laft_uriel") for step, _ in logged[f"{name}/train/loss"]]
    assert losses == list(range(1, sum(steps.values()) + 1))  # in the order the run trains, never restarting
    assert [step for step, _ in logged["laft_uriel/train/lr"]] == [step for step, _ in logged["laft_uriel/train/loss"]]
    ends = {"initial": steps["initial"], "full_finetune": steps["initial"] + steps["full_finetune"],
            "laft_uriel": sum(steps.values())}
    for name, end in ends.items():  # a stage's scores sit at the step its training ended
        assert [step for step, _ in logged[f"{name}/test/hin"]] == [end]
        assert [step for step, _ in logged[f"{name}/dev/deu"]] == [end]


def test_every_language_scores_after_every_stage(tracked):
    results, run_dir = tracked
    logged = scalars(run_dir)
    records = {"initial": results["stages"][0],
               **{name: entry["stages"][1] for name, entry in results["strategies"].items()}}
    for name, record in records.items():
        for lang in results["languages"]:
            (_, test), = logged[f"{name}/test/{lang}"]
            assert test == pytest.approx(record["scores"][lang], abs=1e-6)
            (_, dev), = logged[f"{name}/dev/{lang}"]
            assert 0.0 <= dev <= 1.0


def test_the_summary_figures_are_logged_at_their_stage(tracked):
    results, run_dir = tracked
    logged = scalars(run_dir)
    for name, stages in results["summary"].items():
        figures = stages["update"]
        (step, _), = logged[f"{name}/test/deu"]
        for key in SUMMARY_KEYS:
            if figures[key] is not None:
                assert logged[f"{name}/summary/{key}"] == [(step, pytest.approx(figures[key], abs=1e-6))]
    assert logged["laft_uriel/summary/loss_magnitude_reduction"]  # against the reference, full_finetune


def test_the_whole_resolved_config_is_the_hyperparameters(tracked):
    results, run_dir = tracked
    [stored] = (run_dir / "t").glob("*/hparams.yml")  # TensorBoard's hyperparameters, as Accelerate keeps them
    hyperparameters = yaml.safe_load(stored.read_text(encoding="utf-8"))
    assert hyperparameters == flat_config(results["config"])
    assert hyperparameters["strategies.1.method"] == "laft_uriel"
    assert hyperparameters["training.trackers"] == json.dumps(["tensorboard"])
    assert hyperparameters["training.epochs"] == 2


def test_tracking_changes_no_result(tracked, tmp_path, tiny_backbone):
    untracked, _ = run(tmp_path, tiny_backbone, [])
    timing = ("seconds", "per_second", "stored_bytes")

    def records(results):
        return {name: [{key: value for key, value in record.items() if not key.endswith(timing)}
                       | {"train": {key: value for key, value in (record.get("train") or {}).items()
                                    if not key.endswith(timing)}}
                       for record in entry["stages"]] for name, entry in results["strategies"].items()}

    assert records(untracked) == records(tracked[0])
    assert untracked["summary"] == tracked[0]["summary"]

"""Training defaults per task family: the code's values are the measured choices, and the benchmark that measures
them (benchmarks/train_defaults.py) runs end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_benchmark
from tiny import write_topic_data

from cml.task_family import TaskFamily
from cml.training.defaults import FAMILY_TRAINING_DEFAULTS, training_defaults

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "benchmarks" / "results" / "train-defaults.json"


def test_defaults_are_the_measured_choices():
    """A re-measurement that chooses another point fails here until defaults.py follows it (and the reverse)."""
    report = json.loads(MEASURED.read_text(encoding="utf-8"))
    assert set(report["families"]) == {family.value for family in TaskFamily}
    for family, summary in report["families"].items():
        assert training_defaults(TaskFamily(family)) == summary["chosen"], family
        # The chosen point is the best mean dev score of the family's grid; the old default was measured beside it.
        assert summary["chosen_dev"] == max(point["dev"] for point in summary["grid"])
        assert "old_default_dev" in summary and summary["chosen_dev"] >= summary["old_default_dev"]
        for name in summary["datasets"]:
            measured = [{key: p[key] for key in summary["chosen"]} for p in report["datasets"][name]["points"]]
            assert summary["chosen"] in measured
    assert set(FAMILY_TRAINING_DEFAULTS) == set(TaskFamily)


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("train_defaults").main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_choice_averages_dev_over_a_family_and_breaks_ties_low():
    script = load_benchmark("train_defaults")

    def dataset(family, devs):
        return {"setting": {"family": family, "epochs": 3}, "wall_seconds": 1.0, "cpu_seconds": 2.0,
                "points": [{"learning_rate": lr, "new_parameters_lr_scale": scale, "epochs": epochs, "dev": dev,
                            "test": dev / 2} for (lr, scale, epochs), dev in devs.items()]}

    report = script.summarize({"datasets": {
        # POS prefers 1e-4 a little, the NER-like set needs the faster head: the family mean picks the latter
        "pos": dataset("tagging", {(5e-5, 1.0, 3): 0.80, (1e-4, 1.0, 3): 0.86, (1e-4, 10.0, 3): 0.85}),
        "ner": dataset("tagging", {(5e-5, 1.0, 3): 0.00, (1e-4, 1.0, 3): 0.10, (1e-4, 10.0, 3): 0.40,
                                   (1e-4, 10.0, 10): 0.9}),  # not measured on pos: not a candidate
        "cls": dataset("classification", {(5e-5, 1.0, 3): 0.7, (1e-4, 1.0, 3): 0.7, (1e-4, 10.0, 3): 0.6,
                                          (5e-5, 1.0, 10): 0.7})}})
    tagging, classification = report["families"]["tagging"], report["families"]["classification"]
    assert tagging["chosen"] == {"learning_rate": 1e-4, "new_parameters_lr_scale": 10.0, "epochs": 3}
    assert tagging["chosen_dev"] == pytest.approx(0.625) and tagging["old_default_dev"] == pytest.approx(0.40)
    assert tagging["chosen_test"] == {"pos": 0.425, "ner": 0.2}
    # a tie goes to the lower rate, then to fewer epochs
    assert classification["chosen"] == {"learning_rate": 5e-5, "new_parameters_lr_scale": 1.0, "epochs": 3}
    assert classification["old_default_dev"] == 0.7
    assert report["seconds"] == {"wall": 3.0, "cpu": 6.0}
    assert [p["epochs"] for p in report["families"]["tagging"]["grid"]] == [3, 3, 3]


def test_quick_run_writes_the_table_and_reuses_measured_points(tmp_path, tiny_backbone, capsys):
    write_topic_data(tmp_path / "data" / "sib200")
    output = tmp_path / "results" / "train-defaults-quick.json"
    argv = ["--quick", "--datasets", "sib200", "--languages", "deu", "hin", "--model", tiny_backbone,
            "--data-root", str(tmp_path / "data"), "--output", str(output), "--threads", "1"]
    script = load_benchmark("train_defaults")
    assert script.main(argv) == 0
    report = json.loads(output.read_text())
    found = report["datasets"]["sib200"]
    assert found["setting"]["languages"] == ["deu", "hin"] and found["setting"]["epochs"] == 1
    assert found["train_examples"] == {"deu": 16, "hin": 16}
    assert [(p["learning_rate"], p["new_parameters_lr_scale"], p["epochs"]) for p in found["points"]] == [
        (5e-5, 1.0, 1), (5e-4, 10.0, 1)]
    for point in found["points"]:
        assert 0 <= point["dev"] <= 1 and len(point["dev_history"]) == 1
        assert set(point["test_per_language"]) == {"deu", "hin"} and point["cpu_seconds"] > 0
    family = report["families"]["classification"]
    assert family["datasets"] == ["sib200"] and family["chosen"]["epochs"] == 1
    assert set(family) >= {"grid", "chosen", "chosen_dev", "chosen_test", "old_default_dev", "old_default_test",
                           "seconds"}
    assert not list((tmp_path / "results").glob("*.tmp*"))

    # Measured points with the same setting are kept, not run again; other settings are measured anew.
    capsys.readouterr()
    assert script.main(argv) == 0
    assert capsys.readouterr().out.count("(measured before)") == 2
    assert json.loads(output.read_text())["datasets"]["sib200"]["points"] == found["points"]

    assert script.main(["--show", "--markdown", "--output", str(output)]) == 0
    shown = capsys.readouterr().out
    assert "| classification | sib200: deu, hin | 2 x 16 | accuracy |" in shown
    assert "**sib200: dev accuracy per point**" in shown


def test_show_without_measurements_is_a_user_error(tmp_path):
    from cml.errors import CMLError

    with pytest.raises(CMLError, match="no measured table"):
        load_benchmark("train_defaults").main(["--show", "--output", str(tmp_path / "none.json")])

"""benchmarks/cml_quality.py end to end on a tiny suite: two update kinds sharing stage 0, two seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import load_benchmark, write_config
from tiny import write_topic_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the script's parts: the quality package beside it

from quality.figures import FIGURES, TOTAL_LOSS, stream_rows  # noqa: E402
from quality.ledger import Ledger, merged_stream, table_path  # noqa: E402
from quality.streams import (  # noqa: E402
    PROBLEM_MIN_LOSSES, aggregate, all_languages_check, problem, stream_table, targets)
from quality.suite import SUITE_V2, load_suite, run_config  # noqa: E402


def test_quality_benchmark_aggregates_seeds_and_checks_targets(tmp_path, tiny_backbone, capsys):
    write_topic_data(tmp_path / "data", n=(72, 12, 12))
    write_config(tmp_path / "tiny.yaml", data={"format": "sib200", "path": "data"},
                 model={"name": tiny_backbone, "max_length": 32, "freeze_embeddings": False},
                 training={"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0},
                 stream={"stages": [{"name": "initial", "amount": 40}, {"name": "subset", "languages": ["hin"],
                                                                         "amount": 20}]},
                 strategies=[{"method": "full_finetune"},
                             {"method": "laft_uriel", "n_groups": 2, "gate": False,
                              "lora": {"r": 2, "alpha": 4, "target_modules": ["query", "value"]}},
                             {"method": "lora_shared", "name": "laft_uriel_like",  # a variant by name: checked too
                              "lora": {"r": 2, "alpha": 4, "target_modules": ["query", "value"]}}])
    suite = {"benchmarks": {"tiny": {"config": "tiny.yaml", "update_kinds": {
        "subset": {}, "all": {"stream.stages.1": {"name": "all", "languages": "all", "amount": 10}}}}},
        "quick": {"benchmarks": ["tiny"], "update_kinds": ["subset"], "strategies": ["full_finetune"]}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    script = load_benchmark("cml_quality")
    argv = ["--suite", str(tmp_path / "suite.yaml"), "--output-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results")]
    # The seeds run one at a time, as the full benchmark does over sessions: the second run adds its rows.
    assert script.main([*argv, "--seeds", "0"]) == 0
    assert script.main([*argv, "--seeds", "1"]) == 0

    report = json.loads((tmp_path / "results" / "tiny-full.json").read_text())
    assert [(s["update_kind"], s["seeds"]) for s in report["streams"]] == [("subset", [0, 1]), ("all", [0, 1])]
    subset, every = report["streams"]
    assert set(subset["strategies"]) == {"full_finetune", "laft_uriel", "laft_uriel_like"}
    reference = subset["strategies"]["full_finetune"]
    assert reference["improved_share_gain_pp"] == {"mean": 0.0, "std": 0.0, "n": 2}
    assert reference["aggregate_after_vs_reference_pp"]["mean"] == 0.0
    # Each figure is the mean and std over the two seeds' own results.json, whose rows the table keeps.
    runs = [json.loads((tmp_path / "runs" / f"tiny-subset-full-seed{seed}" / "results.json").read_text())
            for seed in (0, 1)]
    degraded = [r["summary"]["laft_uriel"]["subset"]["n_degraded"] for r in runs]
    assert [subset["per_seed"][seed]["laft_uriel"]["n_degraded"] for seed in ("0", "1")] == degraded
    assert set(subset["per_seed"]["0"]["laft_uriel"]) == set(FIGURES)
    assert subset["strategies"]["laft_uriel"]["n_degraded"]["mean"] == sum(degraded) / 2
    assert [run["strategies"] for run in subset["runs"]] == [{"0": list(subset["strategies"])},
                                                             {"1": list(subset["strategies"])}]
    for strategy in ("laft_uriel", "laft_uriel_like"):
        assert {c["figure"] for c in subset["targets"] if c["strategy"] == strategy} == {
            "aggregate_after_vs_reference_pp", "improved_share_gain_pp", "loss_magnitude_reduction"}
        assert {c["figure"] for c in every["targets"] if c["strategy"] == strategy} == {
            "aggregate_after_vs_reference_pp", "n_degraded"}
    assert {c["strategy"] for c in subset["targets"]} == {"laft_uriel", "laft_uriel_like"}
    # The "all" runs reused the "subset" runs' stage 0: the same stage-0 scores, not a retrained model.
    all_run = json.loads((tmp_path / "runs" / "tiny-all-full-seed0" / "results.json").read_text())
    assert all_run["stages"][0]["scores"] == runs[0]["stages"][0]["scores"]
    assert "train" in runs[0]["stages"][0] and "train" in all_run["stages"][0]
    assert "laft_uriel" in capsys.readouterr().out

    # A later run of some strategies over both seeds keeps the rows of the others (same reference: the saved stages
    # are reused, so full fine-tuning's figures are the same).
    assert script.main([*argv, "--seeds", "0", "1", "--kinds", "subset", "--strategies", "full_finetune",
                        "laft_uriel"]) == 0
    partial = json.loads((tmp_path / "results" / "tiny-full.json").read_text())
    assert partial["streams"][1] == every
    assert partial["streams"][0]["strategies"] == subset["strategies"]
    assert [run["strategies"] for run in partial["streams"][0]["runs"]] == [
        {"0": ["laft_uriel_like"]}, {"1": ["laft_uriel_like"]},
        {"0": ["full_finetune", "laft_uriel"], "1": ["full_finetune", "laft_uriel"]}]


def test_quality_benchmark_refuses_to_merge_into_an_unreadable_table(tmp_path):
    from cml.errors import CMLError

    table = tmp_path / "tiny-full.json"
    table.write_text("{not json", encoding="utf-8")
    with pytest.raises(CMLError, match="cannot merge") as info:
        Ledger.read(table)
    assert str(table) in str(info.value)
    assert table.read_text(encoding="utf-8") == "{not json"


def test_quality_benchmark_runs_a_chosen_set_of_strategies(tmp_path):
    from cml.errors import CMLError

    write_config(tmp_path / "tiny.yaml", data={"format": "sib200", "path": "data"}, model={"name": "tiny"},
                 stream={"stages": [{"name": "initial", "amount": 40}]},
                 strategies=[{"method": "full_finetune"}, {"method": "replay"},
                             {"method": "laft_uriel", "name": "laft_uriel_c90", "gate_confidence": 0.9}])
    suite = {"folder": tmp_path, "quick": {"strategies": ["full_finetune"]}}
    bench = {"name": "tiny", "config": "tiny.yaml", "update_kinds": {"subset": {}}}

    def labels(**kwargs):
        config = run_config(bench, "subset", 0, suite=suite, output_dir=tmp_path / "runs", **kwargs)
        return [s.label for s in config.strategies]

    assert labels(quick=False) == ["full_finetune", "replay", "laft_uriel_c90"]
    assert labels(quick=True) == ["full_finetune"]
    assert labels(quick=False, strategies=["laft_uriel_c90", "full_finetune"]) == ["full_finetune", "laft_uriel_c90"]
    for wrong in (["laft_uriel_c90"], ["full_finetune", "ewc"]):  # no reference; not in the config
        with pytest.raises(CMLError, match="--strategies must name full_finetune"):
            labels(quick=False, strategies=wrong)
    # a suite's list runs everywhere; a stream's own list (its variants) only there; a misspelled label is refused
    suite["strategies"] = ["full_finetune", "replay"]
    assert labels(quick=False) == ["full_finetune", "replay"]
    bench["strategies"] = ["full_finetune", "laft_uriel_c90"]
    assert labels(quick=False) == ["full_finetune", "laft_uriel_c90"]
    bench["strategies"] = ["full_finetune", "laft_uriel_c9"]
    with pytest.raises(CMLError, match="only strategies of this config"):
        labels(quick=False)


def test_quality_benchmark_output_dir_on_the_command_line_is_relative_to_where_it_is_run(tmp_path, monkeypatch):
    # A config resolves its own relative output_dir against its folder; --output-dir runs/probes did too, and the
    # runs went under configs/benchmarks/ (where no later invocation or stage-0 copy looked for them).
    (tmp_path / "configs").mkdir()
    write_config(tmp_path / "configs" / "tiny.yaml", data={"format": "sib200", "path": "data"}, model={"name": "tiny"},
                 stream={"stages": [{"name": "initial", "amount": 40}]}, strategies=[{"method": "full_finetune"}])
    suite = {"folder": tmp_path / "configs", "quick": {"strategies": ["full_finetune"]}}
    bench = {"name": "tiny", "config": "tiny.yaml", "update_kinds": {"subset": {}}}
    monkeypatch.chdir(tmp_path)
    config = run_config(bench, "subset", 0, False, suite, Path("runs/probes"))
    assert Path(config.output_dir) == tmp_path / "runs" / "probes"


@pytest.mark.parametrize("text, message", [
    ("benchmarks: [\n", "suite.yaml:2: invalid YAML"),
    ("benchmarks:\n  tiny: {config: tiny.yaml}\nquick: {benchmarks: [tiny], update_kinds: [subset], strategies: []}\n",
     "suite.yaml:2: benchmarks.tiny.update_kinds: required setting is missing"),
    ("benchmarks:\n  tiny: {config: tiny.yaml, update_kinds: {subset: {}}}\n"
     "quick: {benchmarks: [tin], update_kinds: [subset], strategies: []}\n",
     "suite.yaml:3: quick: benchmarks ['tin'] are not in this suite's benchmarks"),
])
def test_quality_benchmark_names_the_line_of_a_bad_suite(tmp_path, text, message):
    (tmp_path / "suite.yaml").write_text(text, encoding="utf-8")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cml_quality.py"), "--suite",
                             str(tmp_path / "suite.yaml"), "--results-dir", str(tmp_path / "results")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


ORDER = ["full_finetune", "ewc", "replay"]


def seed_rows(reference_after: float, **others: float) -> dict[str, dict]:
    """One seed's rows: full fine-tuning's aggregate after the update (its train time and cost vary with the row
    count, as times do between runs), and the other strategies'."""
    return {"full_finetune": {"aggregate_after": reference_after, "train_seconds": 1.0 + len(others),
                              "stage_seconds": 2.0 + len(others), "stage_cpu_seconds": 3.0 + len(others)},
            **{k: {"aggregate_after": v} for k, v in others.items()}}


def run_stream(per_seed: dict[str, dict], kind: str = "all") -> dict:
    """A stream as one run measured it: ``per_seed`` and the run's record of them."""
    return stream_table(kind, "c.yaml", per_seed, [{"command": "c", "strategies": {
        seed: list(r) for seed, r in per_seed.items()}}], ORDER)


def test_quality_benchmark_merges_seed_by_seed_against_the_same_reference():
    earlier = run_stream({"0": seed_rows(0.8, replay=0.9, ewc=0.7), "1": seed_rows(0.7, replay=0.8, ewc=0.6)})
    assert list(earlier["strategies"]) == ORDER and earlier["seeds"] == [0, 1]
    assert earlier["strategies"]["ewc"]["aggregate_after"] == pytest.approx({"mean": 0.65, "std": 0.0707, "n": 2},
                                                                            abs=1e-4)

    # Seed 0 again, some strategies, same reference (train time may differ): its other rows and seed 1 are kept.
    kept = merged_stream(earlier, run_stream({"0": seed_rows(0.8, replay=0.95)}), ORDER)
    assert kept["per_seed"]["0"] == {**earlier["per_seed"]["0"], **seed_rows(0.8, replay=0.95)}
    assert kept["per_seed"]["1"] == earlier["per_seed"]["1"]
    assert kept["strategies"]["replay"]["aggregate_after"]["mean"] == pytest.approx(0.875)
    assert [run["strategies"] for run in kept["runs"]] == [
        {"0": ["ewc"], "1": ["full_finetune", "replay", "ewc"]}, {"0": ["full_finetune", "replay"]}]

    # Seed 0 again against another reference: seed 0's earlier rows go, ewc stands on seed 1 alone.
    changed = merged_stream(earlier, run_stream({"0": seed_rows(0.81, replay=0.95)}), ORDER)
    assert changed["per_seed"]["0"] == seed_rows(0.81, replay=0.95)
    assert changed["strategies"]["ewc"]["aggregate_after"] == {"mean": 0.6, "std": None, "n": 1}
    assert [run["strategies"] for run in changed["runs"]] == [{"1": ["full_finetune", "replay", "ewc"]},
                                                              {"0": ["full_finetune", "replay"]}]

    # A new seed adds its rows.
    added = merged_stream(earlier, run_stream({"2": seed_rows(0.9, replay=1.0, ewc=0.8)}), ORDER)
    assert added["seeds"] == [0, 1, 2] and added["strategies"]["ewc"]["aggregate_after"]["mean"] == pytest.approx(0.7)
    assert merged_stream(None, earlier, ORDER) == earlier


def test_quality_benchmark_ledger_keeps_every_seed_once(tmp_path):
    """A run that repeats seed 1 (some strategies, same reference) and adds seed 2, recorded in a table of seeds 0
    and 1: each seed's rows are there once, each row is accounted for by one run record, the other update kind
    is kept whole, and the file holds what ``record`` returns."""
    from cml.io import write_json

    path = tmp_path / "tiny-full.json"
    subset = run_stream({"0": seed_rows(0.8, replay=0.9, ewc=0.7), "1": seed_rows(0.7, replay=0.8, ewc=0.6)},
                        "subset")
    every = run_stream({"0": seed_rows(0.6, replay=0.5, ewc=0.4)})
    write_json(path, {"benchmark": "tiny", "mode": "full", "streams": [subset, every]})
    ledger = Ledger.read(path)
    assert ledger.header == {"benchmark": "tiny", "mode": "full"} and list(ledger.streams) == ["subset", "all"]

    run = run_stream({"1": seed_rows(0.7, replay=0.85), "2": seed_rows(0.9, replay=1.0, ewc=0.8)}, "subset")
    table = ledger.record({"benchmark": "tiny", "mode": "full"}, {"subset": run}, ["subset", "all"], ORDER)
    assert json.loads(path.read_text(encoding="utf-8")) == table == Ledger.read(path).report()
    merged, kept = table["streams"]
    assert kept == every
    assert merged["seeds"] == [0, 1, 2] and list(merged["per_seed"]) == ["0", "1", "2"]
    assert merged["per_seed"]["0"] == subset["per_seed"]["0"]
    assert merged["per_seed"]["1"] == {**subset["per_seed"]["1"], **seed_rows(0.7, replay=0.85)}
    assert merged["strategies"]["ewc"]["aggregate_after"]["n"] == 3

    # Two runs that read the table before either recorded (two seeds run at once): the second to record keeps the
    # first's rows, since it merges into the table as it is then, not as it read it.
    early, late = Ledger.read(path), Ledger.read(path)
    early.record({"benchmark": "tiny", "mode": "full"}, {"subset": run_stream({"3": seed_rows(0.5)}, "subset")},
                 ["subset", "all"], ORDER)
    both = late.record({"benchmark": "tiny", "mode": "full"}, {"subset": run_stream({"4": seed_rows(0.4)}, "subset")},
                       ["subset", "all"], ORDER)
    assert both["streams"][0]["seeds"] == [0, 1, 2, 3, 4]
    accounted = [(seed, strategy) for record in merged["runs"] for seed, strategies in record["strategies"].items()
                 for strategy in strategies]
    assert sorted(accounted) == sorted((seed, strategy) for seed, strategies in merged["per_seed"].items()
                                       for strategy in strategies)


def test_quality_benchmark_refuses_a_table_without_per_seed_rows(tmp_path):
    from cml.errors import CMLError

    table = tmp_path / "tiny-full.json"
    table.write_text(json.dumps({"streams": [{"update_kind": "all", "seeds": [0], "strategies": {}}]}),
                     encoding="utf-8")
    with pytest.raises(CMLError, match=r"streams \['all'\] have no per-seed rows"):
        Ledger.read(table)


def test_quality_benchmark_marks_a_target_undefined_where_the_reference_lost_nothing():
    rows = {"0": {"full_finetune": {"n_degraded": 0, "improved_share_gain_pp": 0.0, "loss_magnitude_reduction": None,
                                    "aggregate_after_vs_reference_pp": 0.0},
                  "laft_uriel": {"n_degraded": 1, "improved_share_gain_pp": 10.0, "loss_magnitude_reduction": None,
                                 "aggregate_after_vs_reference_pp": -0.2}}}
    strategies = aggregate(rows)
    assert "loss_magnitude_reduction" not in strategies["laft_uriel"]  # undefined in every seed: left out
    assert strategies["laft_uriel"]["n_degraded"] == {"mean": 1.0, "std": None, "n": 1}
    checks = {c["figure"]: c for c in targets("subset", strategies)}
    assert checks["loss_magnitude_reduction"]["value"] is None and checks["loss_magnitude_reduction"]["met"] is None
    assert checks["improved_share_gain_pp"]["met"] is False and checks["aggregate_after_vs_reference_pp"]["met"]


def show_argv(tmp_path: Path, kinds: list[str]) -> list[str]:
    """A one-benchmark suite ("tiny", update kinds ``kinds``) and the arguments that show its table in
    ``tmp_path / "results"``."""
    (tmp_path / "tiny.yaml").write_text("{}", encoding="utf-8")
    suite = {"benchmarks": {"tiny": {"config": "tiny.yaml", "update_kinds": {kind: {} for kind in kinds}}},
             "quick": {"benchmarks": ["tiny"], "update_kinds": kinds[:1], "strategies": ["full_finetune"]}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    return ["--suite", str(tmp_path / "suite.yaml"), "--results-dir", str(tmp_path / "results"), "--output-dir",
            str(tmp_path / "runs"), "--show"]


def test_quality_benchmark_shows_a_measured_table_without_training(tmp_path, capsys):
    from cml.errors import CMLError

    script = load_benchmark("cml_quality")
    figures = dict.fromkeys(FIGURES, 0.0)
    per_seed = {seed: {"full_finetune": {**figures, "n_improved": 4, "train_seconds": 100.0},
                       "laft_uriel": {**figures, "n_improved": improved, "loss_magnitude_reduction": reduction,
                                      "aggregate_after_vs_reference_pp": gap, "train_seconds": 90.0}}
                for seed, improved, reduction, gap in (("0", 5, 0.8, 0.1), ("1", 7, 1.0, 0.3))}
    stream = stream_table("subset", "tiny.yaml", per_seed, [], ["full_finetune", "laft_uriel"])
    argv = show_argv(tmp_path, ["subset"])
    results = tmp_path / "results"
    with pytest.raises(CMLError, match="no full table for tiny") as info:
        script.main(argv)
    assert str(results / "tiny-full.json") in str(info.value)

    results.mkdir()
    (results / "tiny-full.json").write_text(json.dumps({"benchmark": "tiny", "mode": "full", "streams": [stream]}))
    assert script.main([*argv, "--markdown"]) == 0
    out = capsys.readouterr().out
    # improved 6 ± 1.4; loss reduction 90% ± 14%; after - FT +0.20 ± 0.14; the reference's "vs FT" cells are "—".
    assert "| laft_uriel | 0 1 | 6.0 ± 1.4 | 0.0 ± 0.0 | 0.0 ± 0.0 | +0.0 ± 0.0 | +90% ± 14% |" in out
    assert "| +0.20 ± 0.14 | 90 ± 0 |" in out
    assert "| full_finetune | 0 1 | 4.0 ± 0.0 | 0.0 ± 0.0 | 0.0 ± 0.0 | — | — |" in out
    assert not (tmp_path / "runs").exists()  # nothing trained
    with pytest.raises(SystemExit):
        script.main([*argv, "--seeds", "0"])


def test_quality_benchmark_draws_a_measured_table(tmp_path, capsys):
    script = load_benchmark("cml_quality")
    figures = dict.fromkeys(FIGURES, 0.0)
    per_seed = {seed: {"full_finetune": {**figures, "n_improved": 4},
                       "laft_uriel": {**figures, "n_degraded": degraded, "aggregate_after_vs_reference_pp": gap}}
                for seed, degraded, gap in (("0", 1, -0.7), ("1", 0, 0.3))}
    per_seed["1"]["replay"] = {**figures, "aggregate_after_vs_reference_pp": None}  # one seed, figure undefined
    streams = [stream_table(kind, "tiny.yaml", per_seed, [], ["full_finetune", "laft_uriel", "replay"])
               for kind in ("subset", "all")]
    argv = show_argv(tmp_path, ["subset", "all"])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "tiny-full.json").write_text(json.dumps({"benchmark": "tiny", "mode": "full",
                                                                     "streams": streams}))
    chart = tmp_path / "img" / "tiny-full.png"
    assert script.main([*argv, "--plot", str(tmp_path / "img")]) == 0
    first = chart.read_bytes()
    assert first.startswith(b"\x89PNG")
    assert script.main([*argv, "--markdown", "--plot", str(tmp_path / "img")]) == 0
    assert chart.read_bytes() == first  # the same table draws the same bytes
    assert sorted(p.name for p in chart.parent.iterdir()) == ["tiny-full.png"]  # no temporary left beside it
    capsys.readouterr()
    with pytest.raises(SystemExit):
        script.main(argv[:-1] + ["--plot", str(tmp_path / "img")])  # --plot without --show
    assert "--plot go with --show" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the benchmark, v2

def v2_suite(tmp_path: Path, tiny_backbone: str, **suite_options) -> list[str]:
    """A tiny named suite (one benchmark, "subset": new data for hin only) with both references and laft_uriel;
    the arguments that run it into ``tmp_path``."""
    write_topic_data(tmp_path / "data", n=(72, 12, 12))
    write_config(tmp_path / "tiny.yaml", data={"format": "sib200", "path": "data"},
                 model={"name": tiny_backbone, "max_length": 32, "freeze_embeddings": False},
                 training={"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0,
                           "early_stopping_patience": 1},
                 update_training={"epochs": 2, "early_stopping_patience": None},
                 stream={"stages": [{"name": "initial", "amount": 40}, {"name": "subset", "languages": ["hin"],
                                                                         "amount": 20}]},
                 strategies=[{"method": "full_finetune"}, {"method": "no_update"},
                             {"method": "laft_uriel", "n_groups": 2, "gate": False,
                              "lora": {"r": 2, "alpha": 4, "target_modules": ["query", "value"]}}])
    suite = {"name": "v2", "references": ["full_finetune", "no_update"], "default_strategy": "laft_uriel",
             "added_after_results": ["laft_uriel"], "strategies": ["full_finetune", "no_update", "laft_uriel"],
             "benchmarks": {"tiny": {"config": "tiny.yaml", "update_kinds": {"subset": {}},
                                     "quick": {"training.epochs": 2}}},
             "quick": {"benchmarks": ["tiny"], "update_kinds": ["subset"],
                       "strategies": ["full_finetune", "no_update"]}, **suite_options}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return ["--suite", str(tmp_path / "suite.yaml"), "--output-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results")]


V2_KEYS = {"n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded", "mean_loss_magnitude",
           "aggregate_after", "improved_share_gain_pp", "loss_magnitude_reduction"}


def test_v2_writes_one_table_per_stream_with_both_references_and_every_figure(tmp_path, tiny_backbone, capsys):
    script = load_benchmark("cml_quality")
    argv = v2_suite(tmp_path, tiny_backbone)
    code = script.main([*argv, "--seeds", "0"])
    report = json.loads((tmp_path / "results" / "v2-tiny.json").read_text())
    assert not (tmp_path / "results" / "tiny-full.json").exists()
    assert (report["suite"], report["benchmark"], report["mode"]) == ("v2", "tiny", "full")
    assert report["default_strategy"] == "laft_uriel" and report["references"] == ["full_finetune", "no_update"]
    assert report["added_after_results"] == ["laft_uriel"] and report["primary_metric"] == "accuracy"
    (stream,) = report["streams"]
    assert stream["update_kind"] == "subset" and list(stream["strategies"]) == ["full_finetune", "no_update",
                                                                               "laft_uriel"]
    for strategy, row in stream["per_seed"]["0"].items():
        assert V2_KEYS <= set(row) and TOTAL_LOSS in row
        assert set(row["versus"]) == {"full_finetune", "no_update"}
        assert set(row["metrics"]) >= {"accuracy"} and V2_KEYS <= set(row["metrics"]["accuracy"])
        assert row["total_loss"] == pytest.approx(row["mean_loss_magnitude"] * row["n_degraded"])
        assert row["versus"]["no_update"]["aggregate_after_pp"] == pytest.approx(100 * row["mean_delta"])
        assert row["stage_cpu_seconds"] > 0 and row["stage_seconds"] > 0  # what tables.py v2-cost adds up
    # The problem check reads full fine-tuning's significant losses, and the exit code says whether it holds.
    naive = stream["per_seed"]["0"]["full_finetune"]
    assert stream["problem"]["per_seed"]["0"]["n_significant_degraded"] == naive["n_significant_degraded"]
    assert code == (0 if stream["problem"]["present"] else 1)
    assert stream["problem"]["present"] == (naive["n_significant_degraded"] >= PROBLEM_MIN_LOSSES)
    # Stage 0 trained with early stopping: its per-epoch dev curve is recorded.
    curve = stream["stage0"]["0"]
    assert curve["metric"] == "accuracy" and len(curve["dev_history"]) == curve["epochs_run"] <= 3
    assert curve["epochs_allowed"] == 3 and curve["patience"] == 1
    assert curve["stage_cpu_seconds"] > 0 and curve["stage_seconds"] > 0
    assert (tmp_path / "runs" / "v2-tiny-subset-full-seed0" / "results.json").is_file()

    capsys.readouterr()
    assert script.main([*argv, "--show", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "Languages full_finetune degraded significantly" in out and "Stage-0 dev accuracy per epoch" in out
    assert "| full_finetune (reference) | 0 |" in out and "| no_update (reference) | 0 |" in out
    assert "| **laft_uriel** † (default) | 0 |" in out
    assert "after - no_update (pt)" in out

    # The suite retires laft_uriel and recommends another: --restamp carries that into the table, rows untouched.
    suite = yaml.safe_load((tmp_path / "suite.yaml").read_text())
    suite.update({"strategies": ["full_finetune", "no_update"], "retired": ["laft_uriel"],
                  "default_strategy": "no_update"})
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    assert script.main([*argv, "--restamp"]) == 0
    restamped = json.loads((tmp_path / "results" / "v2-tiny.json").read_text())
    assert restamped == {**report, "retired": ["laft_uriel"], "default_strategy": "no_update"}
    capsys.readouterr()
    assert script.main([*argv, "--show", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| laft_uriel † (retired) | 0 |" in out and "| **no_update** (reference, default) | 0 |" in out
    assert "Retired: no longer run by a full run" in out


def test_no_update_keeps_the_previous_model_and_its_figures_are_zero(tmp_path, tiny_backbone):
    script = load_benchmark("cml_quality")
    argv = v2_suite(tmp_path, tiny_backbone)
    code = script.main([*argv, "--quick"])
    report = json.loads((tmp_path / "results" / "v2-quick.json").read_text())
    (stream,) = report["streams"]
    assert report["mode"] == "quick" and list(stream["strategies"]) == ["full_finetune", "no_update"]
    assert code == (0 if stream["problem"]["present"] else 1)
    assert stream["problem"]["present"] == bool(stream["per_seed"]["0"]["full_finetune"][
        "significantly_degraded_outside_update"])
    row = stream["per_seed"]["0"]["no_update"]
    assert {key: row[key] for key in ("n_improved", "n_degraded", "n_significant_improved", "n_significant_degraded",
                                      "mean_delta", "mean_loss_magnitude", "total_loss", "train_seconds")} == {
        "n_improved": 0, "n_degraded": 0, "n_significant_improved": 0, "n_significant_degraded": 0,
        "mean_delta": 0.0, "mean_loss_magnitude": 0.0, "total_loss": 0.0, "train_seconds": 0}
    assert row["aggregate_after"] == row["aggregate_before"]
    assert row["versus"]["no_update"] == {"improved_share_gain_pp": 0.0, "loss_magnitude_reduction": 0.0,
                                          "aggregate_after_pp": 0.0}

    run_dir = tmp_path / "runs" / "v2-tiny-subset-quick-seed0"
    results = json.loads((run_dir / "results.json").read_text())
    initial, after = results["strategies"]["no_update"]["stages"]
    assert after["scores"] == initial["scores"] and after["metrics"] == initial["metrics"]
    assert after["trained"] is False and "train" not in after
    from cml.training.checkpoint import load_tensors

    assert load_tensors(run_dir / "stages" / "no_update" / "1-subset" / "model.safetensors") == {}  # stores nothing
    # Resumed, the finished stage is reused and scores the same.
    from cml.experiment import Experiment

    suite = load_suite(tmp_path / "suite.yaml")
    config = run_config({"name": "tiny", **suite["benchmarks"]["tiny"]}, "subset", 0, True, suite, tmp_path / "runs")
    again = stream_rows(Experiment(config, resume=True).run(), ["full_finetune", "no_update"])
    assert again["no_update"] == row


def test_v2_rows_give_every_metric_against_both_references():
    """A seq2seq run's rows: exact match (primary) and chrF each with the figures against both references."""

    def stage(deltas: dict[str, float], updated=("fra",)) -> dict:
        languages = {lang: {"delta": d, "ci_low": d - 0.01, "ci_high": d + 0.01 if d < 0 else d + 0.05, "before": 0.5,
                            "after": 0.5 + d, "category": "in_update" if lang in updated else "far"}
                     for lang, d in deltas.items()}
        values = list(deltas.values())
        losses = [-d for d in values if d < 0]
        figures = {"n_languages": len(values), "n_improved": sum(d > 0 for d in values),
                   "n_degraded": len(losses), "n_significant_improved": sum(d - 0.01 > 0 for d in values),
                   "n_significant_degraded": sum(d + 0.01 < 0 for d in values),
                   "mean_delta": sum(values) / len(values), "mean_loss_magnitude": sum(losses) / len(losses) if losses
                   else 0.0, "max_loss": max(losses, default=0.0), "aggregate_before": 0.5,
                   "aggregate_after": 0.5 + sum(values) / len(values), "negative_flip_rate": 0.0}
        return {**figures, "vs_reference": None, "languages": languages}

    def summary(deltas: dict[str, float]) -> dict:
        primary = stage(deltas)
        return {"subset": {**primary, "metrics": {"exact_match": primary,
                                                  "chrf": stage({k: v / 2 for k, v in deltas.items()})}}}

    results = {"metric": "exact_match", "reference_strategy": "full_finetune",
               "stages": [{"name": "initial"}, {"name": "subset"}],
               "strategies": {s: {"stages": [{}, {"train": {"train_seconds": 1.0}}]}
                              for s in ("full_finetune", "no_update", "laft_uriel")},
               "summary": {"full_finetune": summary({"fra": 0.2, "deu": -0.1, "fin": -0.3}),
                           "no_update": summary({"fra": 0.0, "deu": 0.0, "fin": 0.0}),
                           "laft_uriel": summary({"fra": 0.1, "deu": 0.0, "fin": -0.1})}}
    for name, entry in results["summary"].items():  # the reference comparison the run's summary holds
        for figures in (entry["subset"], *entry["subset"]["metrics"].values()):
            figures["vs_reference"] = None
    rows = stream_rows(results, ["full_finetune", "no_update"])
    laft = rows["laft_uriel"]
    assert laft["primary_metric"] == "exact_match" and set(laft["metrics"]) == {"exact_match", "chrf"}
    assert laft["significantly_degraded"] == ["fin"] and laft["significantly_degraded_outside_update"] == ["fin"]
    assert rows["full_finetune"]["significantly_degraded"] == ["deu", "fin"]
    chrf = laft["metrics"]["chrf"]
    assert V2_KEYS <= set(chrf)
    assert chrf["total_loss"] == pytest.approx(0.05)
    assert chrf["loss_magnitude_reduction"] == pytest.approx(1 - 0.05 / 0.1)  # against full fine-tuning's chrF
    assert chrf["versus"]["no_update"]["aggregate_after_pp"] == pytest.approx(100 * 0.0 / 3)
    assert laft["versus"]["full_finetune"]["aggregate_after_pp"] == pytest.approx(100 * (0.0 - (0.2 - 0.1 - 0.3) / 3))
    check = problem({"0": rows}, quick=False)
    assert check["per_seed"]["0"]["n_significant_degraded"] == 2 and check["present"] is False
    assert problem({"0": rows}, quick=True)["present"] is True  # deu and fin lie outside the update
    assert check["required"] is True
    # an update of every language need not show the problem: it is counted, not required
    every = problem({"0": rows}, quick=False, kind="all")
    assert every["present"] is False and every["required"] is False


def test_a_stream_that_need_not_show_the_problem_does_not_fail_the_run(monkeypatch, tmp_path):
    from quality import run

    def report(required):
        return {"streams": [{"update_kind": "subset", "problem": {"present": True, "required": True}},
                            {"update_kind": "all", "problem": {"present": False, "required": required,
                                                               "rule": "r"}}]}
    request = run.Request(suite={"benchmarks": {"b": {}}}, seeds=[0], quick=False, output_dir=tmp_path,
                          results_dir=tmp_path, command="c")
    monkeypatch.setattr(run, "run_benchmark", lambda request, bench: report(False))
    assert run.run_benchmarks(request, ["b"]) == 0
    monkeypatch.setattr(run, "run_benchmark", lambda request, bench: report(True))
    assert run.run_benchmarks(request, ["b"]) == 1


def test_the_all_languages_bar_is_no_more_degraded_than_full_fine_tuning_and_within_0_3_pt():
    def strategies(degraded, gap):
        return {"full_finetune": {"n_degraded": {"mean": 2.0}},
                "laft": {"n_degraded": {"mean": degraded},
                         "versus": {"full_finetune": {"aggregate_after_pp": {"mean": gap}}}}}
    assert all_languages_check(strategies(2.0, -0.3), "laft")["met"] is True
    assert all_languages_check(strategies(3.0, +1.0), "laft")["met"] is False  # one more language degraded
    assert all_languages_check(strategies(0.0, -0.31), "laft")["met"] is False  # too far below
    assert all_languages_check(strategies(0.0, 0.0), "other") is None


def test_the_v2_suite_is_valid_and_every_stream_runs_both_references():
    suite = load_suite(SUITE_V2)
    assert suite["name"] == "v2" and suite["references"] == ["full_finetune", "no_update"]
    # the recommended strategy runs on every stream (each names its own strategies)
    assert all(suite["default_strategy"] in (spec["strategies"] or suite["strategies"])
               for spec in suite["benchmarks"].values())
    assert suite["quick"]["benchmarks"] == ["ud_pos"]
    for name, spec in suite["benchmarks"].items():
        bench = {"name": name, **spec}
        for quick in (False, True):
            if quick and name not in suite["quick"]["benchmarks"]:
                continue
            config = run_config(bench, "subset", 0, quick, suite, ROOT / "runs" / "benchmarks")
            labels = [s.label for s in config.strategies]
            assert labels[:2] == ["full_finetune", "no_update"], (name, quick)
            assert config.name == f"v2-{name}-subset-{'quick' if quick else 'full'}-seed0"
            # Stage 0 trains to a dev plateau on every stream; updates train their fixed epochs.
            assert config.training.early_stopping_patience and config.training.select_best, name
            from cml.experiment import stage_training_config

            assert stage_training_config(config, 1).early_stopping_patience is None, name
    assert table_path(Path("r"), suite, "ud_pos", "full") == Path("r") / "v2-ud_pos.json"
    assert table_path(Path("r"), suite, "ud_pos", "quick") == Path("r") / "v2-quick.json"


@pytest.mark.parametrize("change, message", [
    ({"quick": {"benchmarks": ["tiny"], "update_kinds": ["subset"], "strategies": ["full_finetune"]}},
     "quick.strategies must run every reference; it lacks ['no_update']"),
    ({"references": ["no_update"]}, "references must start with full_finetune"),
    ({"default_strategy": "ewc"}, "default_strategy must be among the strategies run"),
    ({"added_after_results": ["ewc"]}, "added_after_results among those run or retired; ['ewc'] are not"),
    ({"retired": ["laft_uriel"]}, "retired strategies are not run, but ['laft_uriel'] are"),
    ({"name": "../x"}, "name: String should match pattern"),
])
def test_v2_suite_errors_name_the_setting(tmp_path, change, message):
    argv = v2_suite(tmp_path, "tiny", **change)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cml_quality.py"), *argv],
                            capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()


def test_the_v2_ud_pos_stream_reads_its_treebanks():
    """The ud_pos stream's data: the treebanks' own splits, capped per split (skipped without the shared data)."""
    suite = load_suite(SUITE_V2)
    config = run_config({"name": "ud_pos", **suite["benchmarks"]["ud_pos"]}, "subset", 0, False, suite,
                               ROOT / "runs" / "benchmarks")
    if not Path(config.data.path).is_dir():
        pytest.skip("../shared/data/ud_treebanks is absent")
    from cml.data.readers import read_dataset
    from cml.data.stream import build_stream

    stream = build_stream(read_dataset(config.data, config.task), config.stream, config.stream_seed)
    assert len(stream.languages) == 14
    assert all(100 <= len(stream.test[lang]) <= 600 for lang in stream.languages)  # spa's test file has 127
    assert sum(len(stream.test[lang]) == 600 for lang in stream.languages) >= 7  # most treebanks reach the cap
    assert all(len(stream.dev[lang]) == 100 for lang in stream.languages)
    update = stream.stages[1]
    assert sorted(update.languages) == ["fin", "por", "spa", "swe"]
    for lang in update.languages:  # the update's sentences are new: never in stage 0
        assert not {e.id for e in update.train[lang]} & {e.id for e in stream.stages[0].train[lang]}


def test_an_update_of_every_language_shows_the_default_s_bar_instead_of_the_problem(monkeypatch):
    from quality import tables

    monkeypatch.setattr(tables, "v2_table", lambda report, stream, metric: [])
    strategies = {"full_finetune": {"n_degraded": {"mean": 2.0}},
                  "laft": {"n_degraded": {"mean": 1.0},
                           "versus": {"full_finetune": {"aggregate_after_pp": {"mean": -0.1}}}}}
    problem_record = {"rule": "r", "present": False, "required": False,
                      "per_seed": {"0": {"n_significant_degraded": 1, "languages": ["deu"], "outside_update": []}}}
    report = {"suite": "v2", "benchmark": "b", "mode": "full", "primary_metric": "accuracy", "default_strategy": "laft",
              "streams": [{"update_kind": "all", "seeds": [0], "strategies": strategies, "runs": [],
                           "problem": problem_record}]}
    text = "\n".join(tables.v2_lines(report))
    assert "no problem is required here" in text and "ABSENT" not in text
    assert "The default `laft` (bar: no more languages degraded than full_finetune, an aggregate within 0.3 pt of " \
           "it): 1.0 degraded against 2.0, after - FT -0.10 pt: met." in text

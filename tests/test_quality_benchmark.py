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
    assert set(subset["per_seed"]["0"]["laft_uriel"]) == set(script.FIGURES)
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
        load_benchmark("cml_quality").earlier_streams(table)
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
    script = load_benchmark("cml_quality")

    def labels(**kwargs):
        config = script.run_config(bench, "subset", 0, suite=suite, output_dir=tmp_path / "runs", **kwargs)
        return [s.label for s in config.strategies]

    assert labels(quick=False) == ["full_finetune", "replay", "laft_uriel_c90"]
    assert labels(quick=True) == ["full_finetune"]
    assert labels(quick=False, strategies=["laft_uriel_c90", "full_finetune"]) == ["full_finetune", "laft_uriel_c90"]
    for wrong in (["laft_uriel_c90"], ["full_finetune", "ewc"]):  # no reference; not in the config
        with pytest.raises(CMLError, match="--strategies must name full_finetune"):
            labels(quick=False, strategies=wrong)


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


def test_quality_benchmark_merges_seed_by_seed_against_the_same_reference():
    script = load_benchmark("cml_quality")

    def rows(reference_after, **others):
        return {"full_finetune": {"aggregate_after": reference_after, "train_seconds": 1.0 + len(others)},
                **{k: {"aggregate_after": v} for k, v in others.items()}}

    def stream(per_seed):
        return script.stream_table("all", "c.yaml", per_seed, [{"command": "c", "strategies": {
            seed: list(r) for seed, r in per_seed.items()}}], order)

    order = ["full_finetune", "ewc", "replay"]
    earlier = stream({"0": rows(0.8, replay=0.9, ewc=0.7), "1": rows(0.7, replay=0.8, ewc=0.6)})
    assert list(earlier["strategies"]) == order and earlier["seeds"] == [0, 1]
    assert earlier["strategies"]["ewc"]["aggregate_after"] == pytest.approx({"mean": 0.65, "std": 0.0707, "n": 2},
                                                                            abs=1e-4)

    # Seed 0 again, some strategies, same reference (train time may differ): its other rows and seed 1 are kept.
    kept = script.merged_stream(earlier, stream({"0": rows(0.8, replay=0.95)}), order)
    assert kept["per_seed"]["0"] == {**earlier["per_seed"]["0"], **rows(0.8, replay=0.95)}
    assert kept["per_seed"]["1"] == earlier["per_seed"]["1"]
    assert kept["strategies"]["replay"]["aggregate_after"]["mean"] == pytest.approx(0.875)
    assert [run["strategies"] for run in kept["runs"]] == [
        {"0": ["ewc"], "1": ["full_finetune", "replay", "ewc"]}, {"0": ["full_finetune", "replay"]}]

    # Seed 0 again against another reference: seed 0's earlier rows go, ewc stands on seed 1 alone.
    changed = script.merged_stream(earlier, stream({"0": rows(0.81, replay=0.95)}), order)
    assert changed["per_seed"]["0"] == rows(0.81, replay=0.95)
    assert changed["strategies"]["ewc"]["aggregate_after"] == {"mean": 0.6, "std": None, "n": 1}
    assert [run["strategies"] for run in changed["runs"]] == [{"1": ["full_finetune", "replay", "ewc"]},
                                                              {"0": ["full_finetune", "replay"]}]

    # A new seed adds its rows.
    added = script.merged_stream(earlier, stream({"2": rows(0.9, replay=1.0, ewc=0.8)}), order)
    assert added["seeds"] == [0, 1, 2] and added["strategies"]["ewc"]["aggregate_after"]["mean"] == pytest.approx(0.7)
    assert script.merged_stream(None, earlier, order) == earlier


def test_quality_benchmark_refuses_a_table_without_per_seed_rows(tmp_path):
    from cml.errors import CMLError

    table = tmp_path / "tiny-full.json"
    table.write_text(json.dumps({"streams": [{"update_kind": "all", "seeds": [0], "strategies": {}}]}),
                     encoding="utf-8")
    with pytest.raises(CMLError, match=r"streams \['all'\] have no per-seed rows"):
        load_benchmark("cml_quality").earlier_streams(table)


def test_quality_benchmark_marks_a_target_undefined_where_the_reference_lost_nothing():
    script = load_benchmark("cml_quality")
    rows = {"0": {"full_finetune": {"n_degraded": 0, "improved_share_gain_pp": 0.0, "loss_magnitude_reduction": None,
                                    "aggregate_after_vs_reference_pp": 0.0},
                  "laft_uriel": {"n_degraded": 1, "improved_share_gain_pp": 10.0, "loss_magnitude_reduction": None,
                                 "aggregate_after_vs_reference_pp": -0.2}}}
    strategies = script.aggregate(rows)
    assert "loss_magnitude_reduction" not in strategies["laft_uriel"]  # undefined in every seed: left out
    assert strategies["laft_uriel"]["n_degraded"] == {"mean": 1.0, "std": None, "n": 1}
    checks = {c["figure"]: c for c in script.targets("subset", strategies)}
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
    figures = dict.fromkeys(script.FIGURES, 0.0)
    per_seed = {seed: {"full_finetune": {**figures, "n_improved": 4, "train_seconds": 100.0},
                       "laft_uriel": {**figures, "n_improved": improved, "loss_magnitude_reduction": reduction,
                                      "aggregate_after_vs_reference_pp": gap, "train_seconds": 90.0}}
                for seed, improved, reduction, gap in (("0", 5, 0.8, 0.1), ("1", 7, 1.0, 0.3))}
    stream = script.stream_table("subset", "tiny.yaml", per_seed, [], ["full_finetune", "laft_uriel"])
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
    figures = dict.fromkeys(script.FIGURES, 0.0)
    per_seed = {seed: {"full_finetune": {**figures, "n_improved": 4},
                       "laft_uriel": {**figures, "n_degraded": degraded, "aggregate_after_vs_reference_pp": gap}}
                for seed, degraded, gap in (("0", 1, -0.7), ("1", 0, 0.3))}
    per_seed["1"]["replay"] = {**figures, "aggregate_after_vs_reference_pp": None}  # one seed, figure undefined
    streams = [script.stream_table(kind, "tiny.yaml", per_seed, [], ["full_finetune", "laft_uriel", "replay"])
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

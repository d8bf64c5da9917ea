"""benchmarks/tune.py: fair tuning on dev for the benchmark v2 (issue 30, item 4), on a tiny suite whose stage 0 is
trained once for the module. The grids are checked, the choice is the best mean dev (first on ties), no test set is
ever scored, the benchmark's run folder is only read, and measured points are kept across invocations."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import load_benchmark, snapshot
from tiny import write_topic_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the script's parts: the quality package beside it

from quality.suite import load_suite, run_config  # noqa: E402

from cml.errors import CMLError  # noqa: E402

tune = load_benchmark("tune")

GRID = {"full_finetune": {"training.learning_rate": [1e-3, 3e-3]},
        "laft_uriel": {"gate_confidence": [0.9, None]}}
STAGE0_RUN = "v2-tiny-subset-full-seed0"


def write_stream(folder: Path, backbone: str) -> None:
    """A tiny named suite: stream "tiny" (deu, fra, hin; its "subset" update brings hin) with both references,
    full_finetune, laft_uriel and replay, and a grid file of two points per tuned strategy."""
    write_topic_data(folder / "data", n=(72, 12, 12))
    lora = {"r": 2, "alpha": 4, "target_modules": ["query", "value"]}
    config = {"name": "tiny", "task": "classification", "seed": 0, "output_dir": "runs",
              "data": {"format": "sib200", "path": "data"},
              "model": {"name": backbone, "max_length": 32, "freeze_embeddings": False},
              "training": {"epochs": 5, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0},
              "update_training": {"epochs": 1},
              "stream": {"stages": [{"name": "initial", "amount": 40},
                                    {"name": "subset", "languages": ["hin"], "amount": 20}]},
              "strategies": [{"method": "full_finetune"}, {"method": "no_update"},
                             {"method": "laft_uriel", "n_groups": 2, "lora": lora},
                             {"method": "replay", "per_language": 4}]}
    suite = {"name": "v2", "references": ["full_finetune", "no_update"], "default_strategy": "laft_uriel",
             "strategies": ["full_finetune", "no_update", "laft_uriel", "replay"],
             "benchmarks": {"tiny": {"config": "tiny.yaml", "update_kinds": {"subset": {}},
                                     "quick": {"training.epochs": 1}}},
             "quick": {"benchmarks": ["tiny"], "update_kinds": ["subset"],
                       "strategies": ["full_finetune", "no_update", "laft_uriel"]}}
    for name, content in (("tiny.yaml", config), ("suite.yaml", suite),
                          ("grid.yaml", {"suite": "suite.yaml", "streams": {"tiny": GRID}})):
        (folder / name).write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: a tiny model's small matrices gain nothing from more, and on shared cores two threads
    spin against each other (and against other jobs) many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def suite_folder(tmp_path_factory, tiny_backbone) -> Path:
    """The tiny suite's files (``write_stream``)."""
    folder = tmp_path_factory.mktemp("tuning")
    write_stream(folder, tiny_backbone)
    return folder


@pytest.fixture(scope="module")
def stream(suite_folder, tmp_path_factory) -> Path:
    """The tiny suite's folder, with stage 0 of seed 0 finished in ``runs/`` as ``cml_quality.py --v2`` leaves it."""
    from cml.experiment import Experiment

    suite = load_suite(suite_folder / "suite.yaml")
    config = run_config({"name": "tiny", **suite["benchmarks"]["tiny"]}, "subset", 0, False, suite,
                        suite_folder / "runs", ["full_finetune", "no_update"])
    logger = logging.getLogger("cml")
    handlers = list(logger.handlers)
    with pytest.MonkeyPatch.context() as patch:  # the module's fixture runs before the per-test cache isolation
        patch.setenv("CML_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cml-cache"))
        Experiment(config, resume=True).run()
    # The benchmark runs in a process of its own: its run.log handler, which a run leaves on the "cml" logger,
    # must not catch the tuning's lines here.
    for handler in set(logger.handlers) - set(handlers):
        handler.close()
    logger.handlers = handlers
    return suite_folder


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    """``benchmarks/tune.py`` in a process of its own, at one torch thread."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune.py"), *arguments], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def argv(stream: Path, tmp_path: Path, *more: str) -> list[str]:
    return ["--grid", str(stream / "grid.yaml"), "--output-dir", str(stream / "runs"),
            "--results-dir", str(tmp_path / "results"), *more]


def results(tmp_path: Path, name: str = "v2-tuning-tiny.json") -> dict:
    return json.loads((tmp_path / "results" / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- the grid file

def write_grid(suite_folder: Path, tmp_path: Path, strategies: dict) -> Path:
    path = tmp_path / "grid.yaml"
    grid = {"suite": str(suite_folder / "suite.yaml"), "streams": {"tiny": strategies}}
    path.write_text(yaml.safe_dump(grid, sort_keys=False), encoding="utf-8")
    return path


def test_grids_of_different_sizes_are_refused(suite_folder, tmp_path):
    path = write_grid(suite_folder, tmp_path, {**GRID, "replay": {"per_language": [4, 8, 16]}})
    with pytest.raises(CMLError, match="same size; here full_finetune has 2 points, laft_uriel has 2 points, "
                                       "replay has 3 points") as info:
        tune.load_grids(path)
    assert info.value.file == str(path) and info.value.line is not None and info.value.key == "streams.tiny"


@pytest.mark.parametrize("strategies, key, message", [
    ({"ewc": {"ewc_lambda": [1e3, 1e6]}}, "streams.tiny.ewc",
     "tiny runs no strategy 'ewc'; it runs ['full_finetune', 'laft_uriel', 'no_update', 'replay']"),
    ({"no_update": {"training.learning_rate": [1e-4, 2e-4]}}, "streams.tiny.no_update", "nothing to tune"),
    ({"laft_uriel": {"gate_confidance": [0.9, None]}}, "streams.tiny.laft_uriel.gate_confidance",
     "0.9 does not fit laft_uriel: unknown setting"),
    ({"laft_uriel": {"lora.rank": [2, 4]}}, "streams.tiny.laft_uriel.lora.rank", "unknown setting"),
    ({"laft_uriel": {"gate_confidence": [0.9, 0.3]}}, "streams.tiny.laft_uriel.gate_confidence",
     "0.3 does not fit laft_uriel: Input should be greater than 0.5"),
    ({"replay": {"name": ["a", "b"]}}, "streams.tiny.replay", "'name' is no setting to tune"),
    ({"replay": {"per_language": [4, 4]}}, "streams.tiny.replay", "per_language lists a value twice"),
    ({"replay": {"per_language": ["2020-01-01", 4]}}, "streams.tiny.replay", "not a number, string, boolean or null"),
])
def test_a_grid_names_the_strategy_or_setting_it_gets_wrong(suite_folder, tmp_path, strategies, key, message):
    path = write_grid(suite_folder, tmp_path, strategies)
    # an unquoted date in YAML is a date, not a string
    path.write_text(path.read_text(encoding="utf-8").replace("'2020-01-01'", "2020-01-01"), encoding="utf-8")
    with pytest.raises(CMLError) as info:
        tune.load_grids(path)
    assert info.value.file == str(path) and info.value.line is not None
    assert info.value.key == key and message in info.value.message, str(info.value)


def test_the_v2_tuning_grid_is_valid_and_fair():
    """The committed grids: the v2 suite's streams, each strategy's grid of the same size as its stream's others."""
    grids = tune.load_grids(tune.GRID)
    assert set(grids.grid.streams) == {"ud_pos", "pud_pos", "lemmatization"}
    for name in grids.grid.streams:
        sizes = {label: grid.size for label, grid in grids.of(name).items()}
        assert set(sizes.values()) == {4} and "no_update" not in sizes and "laft_uriel" in sizes, name
        # every strategy the benchmark runs there is tuned (all or none: a fair comparison)
        runs = tune.stream_config(grids, name, 0, quick=False, output_dir=ROOT, strategies=False).strategies
        assert set(sizes) == {s.label for s in runs if s.method != "no_update"}, name


# ---------------------------------------------------------------------------------------------- the choice

def point(mean_dev: float, lr: float) -> tune.MeasuredPoint:
    return tune.MeasuredPoint(overrides={"training.learning_rate": lr}, fingerprint="f", mean_dev=mean_dev,
                              dev={"deu": mean_dev}, train_seconds=1.0, cpu_seconds=1.0, eval_seconds=0.1)


def test_the_choice_is_the_best_mean_dev_and_the_first_point_on_ties():
    assert tune.choose([point(0.7, 1e-4), point(0.8, 2e-4), point(0.75, 4e-4)]).overrides == {
        "training.learning_rate": 2e-4}
    assert tune.choose([point(0.7, 1e-4), point(0.8, 2e-4), point(0.8, 4e-4)]).overrides == {
        "training.learning_rate": 2e-4}  # a tie keeps the earlier, more conservative point
    grid = tune.StrategyGrid({"training.learning_rate": [1e-4, 2e-4, 4e-4]})
    partial = tune.strategy_tuning("full_finetune", grid, [point(0.7, 1e-4), point(0.8, 2e-4)])
    assert partial.chosen is None and partial.chosen_mean_dev is None  # a partial grid chooses nothing
    whole = tune.strategy_tuning("full_finetune", grid, [point(0.7, 1e-4), point(0.8, 2e-4), point(0.8, 4e-4)])
    assert whole.chosen == {"training.learning_rate": 2e-4} and whole.chosen_mean_dev == 0.8


def test_a_pick_at_the_grid_s_edge_is_shown_as_one():
    grid = tune.StrategyGrid({"training.learning_rate": [1e-4, 2e-4, 4e-4]})
    top = tune.strategy_tuning("full_finetune", grid, [point(0.7, 1e-4), point(0.8, 2e-4), point(0.9, 4e-4)])
    inside = tune.strategy_tuning("full_finetune", grid, [point(0.7, 1e-4), point(0.9, 2e-4), point(0.8, 4e-4)])
    bottom = tune.strategy_tuning("full_finetune", grid, [point(0.9, 1e-4), point(0.8, 2e-4), point(0.8, 4e-4)])
    assert tune.grid_edges(top) == ["the grid's highest training.learning_rate"]
    assert tune.grid_edges(bottom) == ["the grid's lowest training.learning_rate"]
    assert tune.grid_edges(inside) == []
    title, _, _ = tune.strategy_table("full_finetune", top, ["deu"])
    assert title == ("full_finetune: chosen: training.learning_rate=4e-4 (the grid's highest training.learning_rate: "
                     "a better value may lie beyond it)")
    assert "beyond" not in tune.strategy_table("full_finetune", inside, ["deu"])[0]
    two = tune.StrategyGrid({"training.learning_rate": [5e-5, 1e-4], "per_language": [32, 16]})
    replay = tune.strategy_tuning("replay", two, [
        tune.MeasuredPoint(overrides=dict(zip(two.root, values)), fingerprint="f", mean_dev=0.5 + i / 10,
                           dev={"deu": 0.5}, train_seconds=1.0, cpu_seconds=1.0, eval_seconds=0.1)
        for i, values in enumerate(itertools.product(*two.root.values()))])
    assert tune.grid_edges(replay) == []  # with two values, both are edges: nothing to say
    partial = tune.strategy_tuning("full_finetune", grid, [point(0.7, 1e-4)])
    assert tune.grid_edges(partial) == []


# ---------------------------------------------------------------------------------------------- tuning

def test_tuning_end_to_end_through_the_command_line(stream, tmp_path, capsys):
    result = run_script("--stream", "tiny", "--seed", "0", *argv(stream, tmp_path))
    assert result.returncode == 0, result.stderr
    report = results(tmp_path)
    assert report["format_version"] == 1 and (report["suite"], report["stream"], report["mode"]) == ("v2", "tiny",
                                                                                                     "full")
    assert report["seed"] == 0 and report["update_kind"] == "subset" and report["test_used"] is False
    assert report["primary_metric"] == "accuracy" and "mean over languages" in report["objective"]
    assert report["stage0_run"].endswith(STAGE0_RUN) and report["config"].endswith("tiny.yaml")
    assert list(report["strategies"]) == ["full_finetune", "laft_uriel"]
    for label, tuning in report["strategies"].items():
        assert tuning["grid"] == GRID[label]
        (key, values), = GRID[label].items()
        assert [p["overrides"] for p in tuning["points"]] == [{key: value} for value in values]
        for measured in tuning["points"]:
            assert set(measured["dev"]) == {"deu", "fra", "hin"}
            assert measured["mean_dev"] == pytest.approx(sum(measured["dev"].values()) / 3)
            assert measured["train_seconds"] > 0
        best = max(p["mean_dev"] for p in tuning["points"])
        first_best = next(p for p in tuning["points"] if p["mean_dev"] == best)
        assert tuning["chosen"] == first_best["overrides"] and tuning["chosen_mean_dev"] == best
    assert result.stdout.count("mean dev accuracy") == 4 and "written: " in result.stdout  # a line per point

    assert tune.main(["--show", "--markdown", *argv(stream, tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tuning of `tiny` (full, seed 0)" in out and "Test sets not used" in out
    assert "| chosen | gate_confidence | mean dev | deu | fra | hin | train s |" in out
    chosen = report["strategies"]["laft_uriel"]["chosen"]["gate_confidence"]
    assert f"| yes | {'null' if chosen is None else chosen} |" in out


def test_tuning_never_scores_a_test_set(stream, tmp_path, monkeypatch):
    """The experiment's test sets are gone once it is built, and its test evaluation fails: tuning still runs."""
    import cml.experiment
    from cml.experiment import Experiment

    built = Experiment.__init__

    def without_test_sets(self, *args, **kwargs):
        built(self, *args, **kwargs)
        self.test = self.stream.test = None  # any use of a test set fails

    def no_test_evaluation(*args, **kwargs):
        raise AssertionError("a test set was scored")

    monkeypatch.setattr(Experiment, "__init__", without_test_sets)
    monkeypatch.setattr(Experiment, "evaluate", no_test_evaluation)
    monkeypatch.setattr(cml.experiment, "predict", no_test_evaluation)
    assert tune.main(["--stream", "tiny", "--strategies", "laft_uriel", *argv(stream, tmp_path)]) == 0
    tuning = results(tmp_path)["strategies"]["laft_uriel"]
    assert len(tuning["points"]) == 2 and tuning["chosen"] is not None


def test_tuning_leaves_the_stage0_run_folder_as_it_was(stream, tmp_path):
    run = stream / "runs" / STAGE0_RUN
    before = snapshot(stream / "runs")
    assert (run / "stages" / "initial").is_dir() and (run / ".cml.lock").is_file()
    assert tune.main(["--stream", "tiny", "--strategies", "full_finetune", *argv(stream, tmp_path)]) == 0
    assert snapshot(stream / "runs") == before  # no checkpoint, lock, log or new run written there
    assert len(results(tmp_path)["strategies"]["full_finetune"]["points"]) == 2


def test_a_second_invocation_keeps_the_points_measured_with_the_same_settings(stream, tmp_path, monkeypatch):
    arguments = ["--stream", "tiny", "--strategies", "full_finetune", *argv(stream, tmp_path)]
    assert tune.main(arguments) == 0
    first = results(tmp_path)
    measured = []
    real = tune.measure_point

    def counted(experiment, stage0, planned):
        measured.append(planned.overrides)
        return real(experiment, stage0, planned)

    monkeypatch.setattr(tune, "measure_point", counted)
    assert tune.main(arguments) == 0
    assert measured == [] and results(tmp_path)["strategies"] == first["strategies"]

    # A point lost (an interrupted tuning) and one measured under other settings are measured again; the rest kept.
    path = tmp_path / "results" / "v2-tuning-tiny.json"
    report = tune.TuningReport.read(path)
    points = report.strategies["full_finetune"].points
    report.strategies["full_finetune"].points = [points[0].model_copy(update={"fingerprint": "stale"})]
    report.write(path, tune.file_stamp(path))
    assert tune.main(arguments) == 0
    assert measured == [{"training.learning_rate": 1e-3}, {"training.learning_rate": 3e-3}]
    assert results(tmp_path)["strategies"]["laft_uriel"]["points"] == []  # not asked for: its grid, nothing measured


def test_tuning_without_a_finished_stage0_names_the_command_that_trains_it(stream, tmp_path):
    result = run_script("--stream", "tiny", "--seed", "1", *argv(stream, tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "stage 0 of v2-tiny-subset-full-seed1 is not finished; train it first: python benchmarks/cml_quality.py " \
           "--v2 --benchmarks tiny --seeds 1" in result.stderr
    assert not (stream / "runs" / "v2-tiny-subset-full-seed1").exists()  # nothing trained, no folder made
    with pytest.raises(CMLError, match=r"train it first: python benchmarks/cml_quality.py --v2 --quick --seeds 0"):
        tune.main(["--quick", *argv(stream, tmp_path)])
    assert not (stream / "runs" / "v2-tiny-subset-quick-seed0").exists()


def test_tuning_refuses_to_overwrite_another_seeds_results(stream, tmp_path):
    (tmp_path / "results").mkdir()
    earlier = tune.TuningReport(
        format_version=1, suite="v2", stream="tiny", mode="full", seed=0, update_kind="subset", config="tiny.yaml",
        grid_file="grid.yaml", stage0_run=STAGE0_RUN, primary_metric="accuracy", objective=tune.OBJECTIVE,
        test_used=False, command="c", strategies={})
    earlier.write(tmp_path / "results" / "v2-tuning-tiny.json", tune.file_stamp(tmp_path / "results" / "v2-tuning-tiny.json"))
    with pytest.raises(CMLError, match="holds the full tuning of tiny, seed 0; pass --replace"):
        tune.main(["--stream", "tiny", "--seed", "1", *argv(stream, tmp_path)])


def test_each_points_setting_reaches_the_training(stream, tmp_path, monkeypatch):
    """The learning rate the trainer gets is the point's, and replay trains on its point's memory."""
    import cml.strategies.full_finetune as full_finetune

    trained = []
    real = full_finetune.train

    def spy(model, task, features, config, **kwargs):
        trained.append((config.learning_rate, len(features)))
        return real(model, task, features, config, **kwargs)

    monkeypatch.setattr(full_finetune, "train", spy)  # replay trains through full fine-tuning's update
    grid = {"full_finetune": {"training.learning_rate": [1e-3, 3e-3]}, "replay": {"per_language": [1, 8]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"suite": str(stream / "suite.yaml"), "streams": {"tiny": grid}}), encoding="utf-8")
    assert tune.main(["--stream", "tiny", "--grid", str(path), "--output-dir", str(stream / "runs"),
                      "--results-dir", str(tmp_path / "results"), "--strategies", "full_finetune", "replay"]) == 0
    (lr_low, update), (lr_high, same), (_, replay_small), (_, replay_large) = trained
    assert (lr_low, lr_high) == (1e-3, 3e-3) and update == same
    assert replay_large - replay_small == 7 * 3  # memory of 8 instead of 1 stage-0 examples, for each of 3 languages


def test_points_are_measured_again_when_stage0_was_retrained(stream, tmp_path, monkeypatch):
    """Kept points belong to the stage 0 they started from: the same settings retrained (other weights) are a new
    stage 0, whose points are measured again."""
    from safetensors.torch import load_file, save_file

    arguments = ["--stream", "tiny", *argv(stream, tmp_path), "--strategies", "full_finetune"]
    assert tune.main(arguments) == 0
    measured = []
    real = tune.measure_point
    monkeypatch.setattr(tune, "measure_point", lambda e, s, p: measured.append(p.overrides) or real(e, s, p))
    assert tune.main(arguments) == 0 and measured == []
    weights = next((stream / "runs" / STAGE0_RUN / "stages" / "initial").glob("0-*/model.safetensors"))
    original = weights.read_bytes()
    tensors = load_file(weights)
    name = next(key for key in tensors if tensors[key].is_floating_point())
    tensors[name] = tensors[name] + 0.01
    try:
        save_file(tensors, weights)
        tune.main(arguments)
    finally:  # the module's other tests start from the stage 0 as trained
        weights.write_bytes(original)
    assert measured == [{"training.learning_rate": 1e-3}, {"training.learning_rate": 3e-3}]


def test_a_results_file_another_process_changed_is_not_overwritten(tmp_path):
    report = tune.TuningReport(
        format_version=1, suite="v2", stream="tiny", mode="full", seed=0, update_kind="subset", config="tiny.yaml",
        grid_file="grid.yaml", stage0_run=STAGE0_RUN, primary_metric="accuracy", objective=tune.OBJECTIVE,
        test_used=False, command="c", strategies={})
    path = tmp_path / "v2-tuning-tiny.json"
    stamp = report.write(path, None)
    stamp = report.write(path, stamp)  # this process's own writes follow each other
    path.write_text(path.read_text() + "\n")  # another tuning's
    with pytest.raises(CMLError, match="changed by another process"):
        report.write(path, stamp)
    with pytest.raises(CMLError, match="changed by another process"):
        report.write(tmp_path / "absent-then-made.json", stamp)


@pytest.mark.parametrize("edit, message", [
    (lambda data: data["strategies"]["full_finetune"]["points"][0]["dev"].pop("fra"), "score different languages"),
    (lambda data: data["strategies"]["full_finetune"].update(chosen={"training.learning_rate": 7.0}),
     "none of its measured points"),
    (lambda data: data.update(format_version=True), "format true"),
])
def test_a_hand_edited_results_file_is_refused_by_name(stream, tmp_path, edit, message):
    arguments = ["--stream", "tiny", *argv(stream, tmp_path), "--strategies", "full_finetune"]
    path = tmp_path / "results" / "v2-tuning-tiny.json"
    if not path.exists():
        assert tune.main(arguments) == 0
    data = results(tmp_path)
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    result = run_script("--show", *argv(stream, tmp_path), "--stream", "tiny")
    assert result.returncode == 2 and "Traceback" not in result.stderr and message in result.stderr, result.stderr
    assert str(path) in result.stderr or path.name in result.stderr

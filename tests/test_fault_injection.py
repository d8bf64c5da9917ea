"""Fault injection: SIGKILL a tiny ``cml run`` at precise points (tests/faults.py), then ``cml run --resume``.
Every time, the resumed run must end bit-identical to one uninterrupted run: the same scores and metrics in
results.json for every strategy and stage, the same tensors in every stage's model.safetensors, the same bytes in
every predictions file, and no ``.cml-*`` temporary left behind.

The run: stage 0 on three languages (18 optimizer steps per epoch, 2 epochs, best-epoch selection on), then
one update on Hindi (3 steps per epoch, 4 epochs, select_best off so that any divergence after the kill shows
in the final weights) by two strategies, full fine-tuning and a shared LoRA module; a checkpoint every 2 steps
and at each epoch end. The optimizer steps of one process are therefore numbered 1-36 (stage 0), 37-48
(full_finetune's update) and 49-60 (lora_shared's update). ``FAULTS_TRACE=1 python tests/faults.py POINT 999
-- run ...`` lists every occurrence of a point with its number.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import write_config
from safetensors.torch import load_file
from tiny import write_topic_data

FAULTS = Path(__file__).resolve().parent / "faults.py"
STRATEGIES = ("full_finetune", "lora_shared")
UPDATE_STEPS_PER_EPOCH = 3
INITIAL_STEPS_PER_EPOCH = 18


def _tail(process: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The end of a process's stderr, progress bars' carriage returns made lines."""
    text = process.stderr.replace("\r", "\n")
    lines = [line for line in text.splitlines() if line.strip() and "it/s" not in line and "s/it" not in line]
    return f"exit status {process.returncode}; stderr ends:\n" + "\n".join(lines)[-chars:]


class Scenario:
    def __init__(self, root: Path, backbone: str):
        self.root = root
        write_topic_data(root / "data", n=(72, 12, 12))
        self.config = write_config(
            root / "c.yaml", data={"format": "sib200", "path": "data"},
            model={"name": backbone, "max_length": 32, "freeze_embeddings": False},
            training={"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0,
                      "checkpoint_every_steps": 2},
            update_training={"epochs": 4, "select_best": False},
            strategies=[{"method": "full_finetune"}, {"method": "lora_shared"}],
            stream={"stages": [{"name": "initial", "amount": 48},
                               {"name": "update", "languages": ["hin"], "amount": 24}]})
        # One thread per process (the tiny model gains nothing from more; every process gets the same setting),
        # so that two runs at a time fit the machine's two cores.
        self.env = {**os.environ, "CML_CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1"}

    def run_dir(self, name: str) -> Path:
        return self.root / "runs" / name

    def cml(self, *args: str, faults: tuple[str, int] | None = None, name: str) -> subprocess.CompletedProcess:
        launcher = [str(FAULTS), faults[0], str(faults[1]), "--"] if faults else ["-m", "cml.cli"]
        return subprocess.run([sys.executable, *launcher, "run", str(self.config), "--set", f"name={name}", *args],
                              cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, tiny_backbone):
    scenario = Scenario(tmp_path_factory.mktemp("faults"), tiny_backbone)
    reference = scenario.cml(name="reference")
    assert reference.returncode == 0, _tail(reference)
    return scenario


def _stage_weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.relative_to(run_dir)): load_file(p) for p in sorted((run_dir / "stages").rglob("model.safetensors"))}


def _without_timings(value):
    """A record without its wall-clock figures (``*seconds``, ``*per_second``), the one thing a resume changes."""
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items()
                if not key.endswith(("seconds", "per_second"))}
    return value


def assert_same_run(reference: Path, resumed: Path) -> None:
    """``resumed`` holds bit for bit the models, scores and predictions of ``reference``."""
    expected = json.loads((reference / "results.json").read_text(encoding="utf-8"))
    got = json.loads((resumed / "results.json").read_text(encoding="utf-8"))
    assert set(got["strategies"]) == set(expected["strategies"]) == set(STRATEGIES)
    for strategy, run in expected["strategies"].items():
        stages = got["strategies"][strategy]["stages"]
        assert len(stages) == len(run["stages"]) == 2, strategy
        for index, (mine, theirs) in enumerate(zip(stages, run["stages"])):
            assert mine["scores"] == theirs["scores"], f"{strategy} stage {index}: scores differ"
            assert mine["metrics"] == theirs["metrics"], f"{strategy} stage {index}: metrics differ"
            # the whole record (training history, epoch losses, stored bytes, warnings), timings aside
            assert _without_timings(mine) == _without_timings(theirs), f"{strategy} stage {index}: record differs"
    assert [s["scores"] for s in got["stages"]] == [s["scores"] for s in expected["stages"]]

    weights, reference_weights = _stage_weights(resumed), _stage_weights(reference)
    assert set(weights) == set(reference_weights) and len(weights) == 1 + len(STRATEGIES)
    for path, tensors in reference_weights.items():
        assert set(weights[path]) == set(tensors), f"{path}: other tensor names"
        differ = [key for key, tensor in tensors.items() if not torch.equal(weights[path][key], tensor)]
        assert not differ, f"{path}: {len(differ)} of {len(tensors)} tensors differ, e.g. {differ[:3]}"

    predictions = sorted(p.relative_to(reference) for p in (reference / "predictions").rglob("*.jsonl"))
    assert predictions == sorted(p.relative_to(resumed) for p in (resumed / "predictions").rglob("*.jsonl"))
    assert len(predictions) == 1 + len(STRATEGIES)  # stage 0 once, then each strategy's update
    for path in predictions:
        assert (resumed / path).read_bytes() == (reference / path).read_bytes(), f"{path} differs"

    left = sorted(str(p.relative_to(resumed)) for p in resumed.rglob(".cml-*"))
    assert not left, f"temporaries left after the resume: {left}"
    assert not (resumed / "checkpoints").exists()


def _latest(run_dir: Path, strategy: str, index: int) -> dict:
    return json.loads((run_dir / "checkpoints" / strategy / str(index) / "latest" / "state.json").read_text())


def _temporaries(folder: Path, target: str, suffix: str = ".tmp") -> list[Path]:
    return [p for p in folder.glob(f".cml-{target}.*") if p.name.endswith(suffix)]


def _mid_epoch(strategy: str, index: int, steps: int, epoch: int, batches_done: int):
    """The kill fell after an optimizer step, and the last checkpoint is the mid-epoch one given."""
    per_epoch = INITIAL_STEPS_PER_EPOCH if index == 0 else UPDATE_STEPS_PER_EPOCH

    def check(run_dir: Path) -> None:
        state = _latest(run_dir, strategy, index)
        assert (state["result"]["steps"], state["epoch"], state["batches_done"]) == (steps, epoch, batches_done)
        assert 0 < batches_done < per_epoch
    return check


def _written_not_renamed(folder: str, target: str, latest: tuple | None = None):
    """A ``.cml-<target>.*.tmp`` folder holds model.safetensors (and no state.json yet); the checkpoint it
    would replace, if any, is still whole (``latest``: its strategy, stage, steps, epoch and batches done)."""
    def check(run_dir: Path) -> None:
        temporaries = _temporaries(run_dir / folder, target)
        assert len(temporaries) == 1, temporaries
        assert (temporaries[0] / "model.safetensors").is_file()
        assert not (temporaries[0] / "state.json").exists()
        if latest:
            strategy, index, *where = latest
            state = _latest(run_dir, strategy, index)
            assert [state["result"]["steps"], state["epoch"], state["batches_done"]] == where
    return check


def _mid_swap(folder: str, target: str):
    """The old checkpoint was renamed aside (``.cml-<target>.old``), the new one not yet into place."""
    def check(run_dir: Path) -> None:
        assert not (run_dir / folder / target).exists()
        assert (run_dir / folder / f".cml-{target}.old" / "state.json").is_file()
        assert len(_temporaries(run_dir / folder, target)) == 1
    return check


def _results_written_not_renamed(run_dir: Path) -> None:
    assert len(_temporaries(run_dir, "results.json")) == 1
    for strategy in STRATEGIES:
        assert (run_dir / "stages" / strategy / "1-update" / "state.json").is_file()


def _stages_saved(*saved: str, missing: tuple[str, ...] = ()):
    def check(run_dir: Path) -> None:
        for stage in saved:
            assert json.loads((run_dir / "stages" / stage / "state.json").read_text())["complete"]
        for stage in missing:
            assert not (run_dir / "stages" / stage).exists()
        assert not list((run_dir / "stages").rglob(".cml-*"))
    return check


# (point, N, a part of the path the kill line names, what the run folder must hold after the kill)
CASES = [
    # optimizer step 5 of stage 0's first epoch; the last checkpoint is step 4's
    ("mid-epoch", 5, "AdamW.step", _mid_epoch("initial", 0, 4, 0, 4)),
    # full_finetune's update, step 5 = epoch 2, batch 2 of 3; resumes from step 4 (epoch 2, batch 1)
    ("mid-epoch", 41, "AdamW.step", _mid_epoch("full_finetune", 1, 4, 1, 1)),
    # the same inside the LoRA update, and in its last epoch (step 11: epoch 4, batch 2)
    ("mid-epoch", 53, "AdamW.step", _mid_epoch("lora_shared", 1, 4, 1, 1)),
    ("mid-epoch", 59, "AdamW.step", _mid_epoch("lora_shared", 1, 10, 3, 1)),
    # stage 0's epoch-1 end checkpoint, half written; the last one is step 18's, taken after the epoch's last batch
    ("checkpoint-write:latest", 10, "checkpoints/initial/0/.cml-latest.",
     _written_not_renamed("checkpoints/initial/0", "latest", ("initial", 0, 18, 0, 18))),
    # the same at stage 0's last epoch end: its last step (36) is checkpointed, its dev score and best epoch are not
    ("checkpoint-write:latest", 20, "checkpoints/initial/0/.cml-latest.",
     _written_not_renamed("checkpoints/initial/0", "latest", ("initial", 0, 36, 1, 18))),
    # the LoRA update's step-4 checkpoint, half written over the epoch-1 end one
    ("checkpoint-write:latest", 33, "checkpoints/lora_shared/1/.cml-latest.",
     _written_not_renamed("checkpoints/lora_shared/1", "latest", ("lora_shared", 1, 3, 1, 0))),
    # full_finetune's finished update stage, half written (its training checkpoints are already removed)
    ("checkpoint-write:1-update", 1, "stages/full_finetune/.cml-1-update.",
     _written_not_renamed("stages/full_finetune", "1-update")),
    # between the two renames that replace stage 0's best-epoch weights (epoch 2 beat epoch 1): after step 36's
    # checkpoint, before the epoch-end one
    ("checkpoint-swap", 19, "checkpoints/initial/0/best", _mid_swap("checkpoints/initial/0", "best")),
    # between the two renames of a LoRA-update checkpoint
    ("checkpoint-swap", 34, "checkpoints/lora_shared/1/latest", _mid_swap("checkpoints/lora_shared/1", "latest")),
    # results.json written to its temporary, not renamed
    ("results-write", 1, "results.json", _results_written_not_renamed),
    # right after stage 0 was saved; right after full_finetune's update was saved
    ("between-stages", 1, "stages/initial/0-initial",
     _stages_saved("initial/0-initial", missing=("full_finetune", "lora_shared"))),
    ("between-stages", 2, "stages/full_finetune/1-update",
     _stages_saved("initial/0-initial", "full_finetune/1-update", missing=("lora_shared",))),
]


@dataclass
class Outcome:
    killed: subprocess.CompletedProcess
    kill_error: BaseException | None = None  # what the killed run left was not what the case expects
    resumed: subprocess.CompletedProcess | None = None


def kill_and_resume(scenario: Scenario, point: str, n: int, where: str, check) -> Outcome:
    """Run with the fault, check where it struck and what it left, then ``cml run --resume``."""
    name = f"{point.replace(':', '-')}-{n}"
    run_dir = scenario.run_dir(name)
    outcome = Outcome(scenario.cml(faults=(point, n), name=name))
    try:
        killed = outcome.killed
        assert killed.returncode == -signal.SIGKILL, f"{point} #{n} never came: {_tail(killed)}"
        kill_line = re.search(rf"faults: SIGKILL at {re.escape(point)} #{n} \((.*)\)", killed.stderr)
        assert kill_line and where in kill_line[1], f"killed elsewhere: {kill_line}\n{_tail(killed)}"
        assert not (run_dir / "results.json").exists()
        check(run_dir)
    except Exception as err:  # noqa: BLE001 (raised again by the case's test)
        outcome.kill_error = err
        return outcome
    outcome.resumed = scenario.cml("--resume", name=name)
    return outcome


@pytest.fixture(scope="module")
def outcomes(request, scenario) -> dict[tuple[str, int], Outcome]:
    """The kill and resume of every selected case, two at a time (each process uses one core; the runs share
    nothing but the cache, which the reference run filled)."""
    selected = {(item.callspec.params["point"], item.callspec.params["n"]) for item in request.session.items
                if getattr(item, "function", None) is test_killed_run_resumes_bit_identical}
    cases = [case for case in CASES if case[:2] in selected]
    workers = max(1, min(2, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip([case[:2] for case in cases], pool.map(lambda case: kill_and_resume(scenario, *case), cases)))


@pytest.mark.parametrize(("point", "n"), [case[:2] for case in CASES], ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_killed_run_resumes_bit_identical(scenario, outcomes, point, n):
    outcome = outcomes[point, n]
    if outcome.kill_error is not None:
        raise outcome.kill_error
    resumed = outcome.resumed
    assert resumed.returncode == 0, f"the resume after {point} #{n} failed: {_tail(resumed)}"
    assert_same_run(scenario.run_dir("reference"), scenario.run_dir(f"{point.replace(':', '-')}-{n}"))

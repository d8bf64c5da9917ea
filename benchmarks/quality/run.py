"""The run program: each benchmark's update kinds run over seeds (resumed where they stopped, stage 0 shared by
the update kinds), and their rows added to the benchmark's results table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cml.errors import CMLError

from .figures import stage0_curve, stream_rows
from .ledger import Ledger, table_path
from .streams import stream_table
from .suite import benchmarks_of, run_config, suite_header
from .tables import render


@dataclass(frozen=True)
class Request:
    """What one invocation of the run program asks for."""

    suite: dict
    seeds: list[int]
    quick: bool
    output_dir: Path  # the run folders' parent
    results_dir: Path  # the results tables' folder
    command: str  # the command line, recorded with the rows it measured
    kinds: list[str] | None = None  # update kinds; default: each benchmark's all, or the quick mode's
    strategies: list[str] | None = None  # labels; default: the suite's (``run_config``)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    @property
    def references(self) -> list[str] | None:
        """A named suite's references: its rows add the v2 figures (``figures.v2_extras``) against each."""
        return self.suite["references"] if self.suite.get("name") else None

    def config(self, bench: dict, kind: str, seed: int, strategies: list[str] | None = None):
        """The run's experiment config (``run_config``); ``strategies`` None: all the suite runs, as the table
        orders them and as another update kind's run that may lend its stage 0 is named."""
        return run_config(bench, kind, seed, self.quick, self.suite, self.output_dir, strategies)


def run_benchmarks(request: Request, names: list[str]) -> int:
    """Run the benchmarks ``names`` and add their rows to their tables; 1 where a named suite's stream lacks the
    problem it must show on some seed (``streams.problem``), else 0."""
    benchmarks = benchmarks_of(request.suite)
    failed = False
    for name in names:
        report = run_benchmark(request, benchmarks[name])
        absent = [stream for stream in report["streams"]
                  if (check := stream.get("problem", {})).get("required", True) and not check.get("present", True)]
        if absent:
            print(f"the problem is absent on {name} kinds {[stream['update_kind'] for stream in absent]}: "
                  f"{absent[0]['problem']['rule']} fails on some seed", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def run_benchmark(request: Request, bench: dict) -> dict:
    """Run one benchmark's update kinds, merge their streams into its table and print it; returns the table."""
    kinds = request.kinds or (request.suite["quick"]["update_kinds"] if request.quick else list(bench["update_kinds"]))
    if set(kinds) - set(bench["update_kinds"]):
        raise CMLError(f"{bench['name']} has the update kinds {list(bench['update_kinds'])}, not "
                       f"{sorted(set(kinds) - set(bench['update_kinds']))}", file=request.suite["file"])
    ledger = Ledger.read(table_path(request.results_dir, request.suite, bench["name"], request.mode))
    labels = [s.label for s in request.config(bench, kinds[0], request.seeds[0]).strategies]
    streams, primary = {}, None
    for kind in kinds:
        streams[kind], primary = measure_stream(request, bench, kind, labels)
    header = {"benchmark": bench["name"], "mode": request.mode}
    if request.references:
        header.update({**suite_header(request.suite), "primary_metric": primary})
    report = ledger.record(header, streams, list(bench["update_kinds"]), labels, request.quick)
    render(report)
    wall = sum(stream["runs"][-1]["wall_seconds"] for stream in streams.values())
    print(f"wall time {wall:.0f} s; table: {ledger.path}")
    return report


def measure_stream(request: Request, bench: dict, kind: str, labels: list[str]) -> tuple[dict, str]:
    """One update kind of a benchmark run over the seeds: its stream (``stream_table``, strategies in ``labels``'
    order, this run's record in ``runs``) and the task's primary metric."""
    import torch

    from cml.experiment import Experiment

    started, cpu_started = time.perf_counter(), time.process_time()
    per_seed, stage0 = {}, {}
    for seed in request.seeds:
        config = request.config(bench, kind, seed, request.strategies)
        # Another update kind of this benchmark and seed may already have trained the same stage 0.
        reuse_stage0(config, [request.config(bench, other, seed) for other in bench["update_kinds"] if other != kind])
        print(f"== {config.name}: {len(config.strategies)} strategies", flush=True)
        results = Experiment(config, resume=True).run()
        per_seed[str(seed)] = stream_rows(results, request.references)
        stage0[str(seed)] = stage0_curve(results)
    run = {"command": request.command,
           "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                       "torch_threads": torch.get_num_threads()},  # what each stage's CPU seconds were measured at
           "wall_seconds": time.perf_counter() - started,
           "cpu_seconds": time.process_time() - cpu_started,  # all threads: the cost on a shared machine
           "strategies": {seed: list(rows) for seed, rows in per_seed.items()}}
    stream = stream_table(kind, bench["config"], per_seed, [run], labels, stage0 if request.references else None,
                          request.quick)
    return stream, results["metric"]


def stage0_model(experiment, command: str):
    """The stream's finished stage 0, loaded from the benchmark's run folder (read only: the benchmark may be
    running in it), for the scripts that start updates from it (tuning, speed). Checked before ``initial_stage``,
    which would train a missing stage 0 and write it into that folder; ``command`` is the one that trains it."""
    from cml.routing import RoutedModel
    from cml.run_folder import INITIAL
    from cml.training.checkpoint import load_model_state

    stage_dir = experiment.stage_dir(INITIAL, 0)
    if experiment.finished(stage_dir, 0, experiment.settings(0)) is None:
        raise CMLError(f"stage 0 of {experiment.config.name} is not finished; train it first: {command}",
                       file=stage_dir)
    model = RoutedModel(experiment.task.seeded_model(experiment.config.seed), experiment.stream.languages)
    load_model_state(model, stage_dir)  # never experiment.initial_stage: it trains and saves a stage it cannot read
    return model


def stage0_fingerprint(config) -> str:
    """What stage 0 depends on (its examples, the model, the training settings, the seed): the settings a
    resumed run checks, so a copied stage 0 is one that run accepts."""
    from cml.data.examples import stable_hash
    from cml.data.readers import read_dataset
    from cml.data.stream import build_stream
    from cml.experiment import stage_settings

    stream = build_stream(read_dataset(config.data, config.task), config.stream, config.stream_seed)
    return stable_hash(json.dumps(stage_settings(config, stream, 0), sort_keys=True))


def reuse_stage0(config, donors: list) -> None:
    """Copy a finished stage 0 from another run of the same benchmark and seed whose stage 0 is identical.
    Reading the data to compare fingerprints happens only when there is something to reuse."""
    from cml.run_folder import RunFolder

    parts = RunFolder.of(config.output_dir, config.name).stage0_parts()
    if parts[0].exists():
        return
    fingerprint = None
    for donor in donors:
        donor_parts = RunFolder.of(donor.output_dir, donor.name).stage0_parts()
        if not all(part.is_dir() for part in donor_parts):
            continue
        fingerprint = fingerprint or stage0_fingerprint(config)
        if stage0_fingerprint(donor) == fingerprint:
            for theirs, ours in zip(donor_parts, parts):
                shutil.copytree(theirs, ours, dirs_exist_ok=True)
            return

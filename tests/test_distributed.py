"""`accelerate launch` with 2 CPU processes (gloo) gives the metrics of one process, on a tiny model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from helpers import write_config
from tiny import build_tiny_backbone, write_topic_data

from cml.typology.uriel import typology_matrix

# Exact equality is not expected: each process pads and runs its own half of every batch, and the
# all-reduce adds the two halves' gradients in another order than one process's backward pass sums them,
# so the weights drift apart by float rounding (measured: at most 1e-4 in any weight after stage 0).
# With the global batch kept equal (each batch of 8 is split 4 + 4) and dropout off, that is all that
# differs: the mean epoch losses agree to 2e-6 and the test scores are identical (measured). Tolerances:
# a loss within LOSS_TOLERANCE, a score within one test example of 12 (a prediction whose logits tie to
# within rounding could flip; none did).
SCORE_TOLERANCE = 1 / 12 + 1e-9
LOSS_TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_metrics_of_one(tmp_path):
    backbone = build_tiny_backbone(tmp_path / "bert")
    # Dropout off: each process draws its own masks for its half of a batch, so with dropout the two runs
    # would differ like two seeds do (by several test examples, in a trial), not by rounding.
    config_file = tmp_path / "bert" / "config.json"
    model_config = json.loads(config_file.read_text())
    model_config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config_file.write_text(json.dumps(model_config))
    write_topic_data(tmp_path / "data", n=(72, 12, 12))
    # Stage sizes (48 x 3 and 24 x 2 examples) are multiples of the batch: no short batch to fill up.
    config = write_config(
        tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
        model={"name": backbone, "max_length": 32, "freeze_embeddings": False},
        training={"epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "warmup_ratio": 0.0},
        stream={"stages": [{"name": "initial", "amount": 48},
                           {"name": "update", "languages": ["deu", "hin"], "amount": 24}]},
        # Stage 0 fine-tunes every parameter; the update trains two LoRA modules at once (URIEL groups
        # {deu, fra} and {hin}), so a process's half-batch may lack one module's rows (unused parameters).
        strategies=[{"method": "laft_uriel", "n_groups": 2, "gate": False, "lora": {"r": 4, "dropout": 0.0}}])
    # Fill the typology cache (this test session's) once here, rather than in each of the three processes.
    typology_matrix(["deu", "fra", "hin"])
    # Offline, one thread per process, CPUs only even where a GPU is visible, and no user Accelerate config.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(tmp_path / "hf")}
    run = [sys.executable, "-m", "cml.cli", "run", str(config)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), "-m", "cml.cli", "run", str(config)]
    # Both runs at once, their output to files (progress bars would fill a pipe and stall a run).
    processes = {}
    try:
        for name, command in (("two", launch), ("one", run)):
            with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
                processes[name] = subprocess.Popen([*command, "--set", f"name={name}"], env=env, stdout=out,
                                                   stderr=err, start_new_session=True)
        for name, process in processes.items():
            assert process.wait(timeout=300) == 0, f"{name}:\n{(tmp_path / f'{name}.err').read_text()[-3000:]}"
    finally:  # a failed or hung run: stop it with the processes it started (the launcher's workers)
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    # The main process alone prints (and writes files).
    assert (tmp_path / "two.out").read_text().count("results:") == 1

    one, two = (json.loads((tmp_path / "runs" / name / "results.json").read_text()) for name in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["strategies"].keys() == two["strategies"].keys() == {"laft_uriel"}
    for strategy in one["strategies"]:
        for a, b in zip(one["strategies"][strategy]["stages"], two["strategies"][strategy]["stages"], strict=True):
            where = f"{strategy}, stage {a['name']}"
            # The same optimizer steps over the same examples: batches were split, not dealt out.
            counts = [(stage["train"]["steps"], stage["train"]["examples_seen"]) for stage in (a, b)]
            assert counts[0] == counts[1], (where, counts)
            for x, y in zip(a["train"]["epoch_losses"], b["train"]["epoch_losses"], strict=True):
                assert abs(x - y) <= LOSS_TOLERANCE, (where, a["train"]["epoch_losses"], b["train"]["epoch_losses"])
            assert a["scores"].keys() == b["scores"].keys() == {"deu", "fra", "hin"}
            for lang in a["scores"]:
                assert abs(a["scores"][lang] - b["scores"][lang]) <= SCORE_TOLERANCE, (where, lang, a["scores"],
                                                                                       b["scores"])


def test_split_batches_lose_no_example():
    """Accelerate splits each batch across the processes and takes only the last batch to be short (a short
    batch elsewhere would be dropped): the bucket sampler puts its short batch last."""
    from accelerate.data_loader import BatchSamplerShard

    from cml.data.batching import BucketBatchSampler

    lengths = [i % 7 for i in range(203)]  # 25 batches of 8 and one of 3
    sampler = BucketBatchSampler(lengths, 8, shuffle=True, seed=0, multiplier=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert [len(batch) for batch in sampler.batches()] == [8] * 25 + [3]
        shards = [list(BatchSamplerShard(sampler, 2, rank, split_batches=True)) for rank in (0, 1)]
        assert len(shards[0]) == len(shards[1]) == len(sampler)
        assert {i for shard in shards for batch in shard for i in batch} == set(range(203))

import json
import shutil

import pytest
import torch
from helpers import Interrupted, interrupt_run, run_config
from safetensors.torch import load_file

from cml.config import ExperimentConfig, ModelConfig, TrainingConfig, load_config
from cml.data.batching import BucketBatchSampler
from cml.data.examples import Example
from cml.errors import CMLError
from cml.experiment import Experiment
from cml.tasks import make_task
from cml.tasks.tagging import IGNORE, first_subword_labels
from cml.training.trainer import make_accelerator, train


def test_first_subword_alignment():
    # [CLS] w0 w0 w1 [SEP] w2
    assert first_subword_labels([None, 0, 0, 1, None, 2], [5, 6, 7]) == [IGNORE, 5, IGNORE, 6, IGNORE, 7]


def test_bucket_sampler_is_seeded_and_covers_everything():
    lengths = [i % 17 for i in range(200)]
    a = BucketBatchSampler(lengths, 8, shuffle=True, seed=1, multiplier=4)
    b = BucketBatchSampler(lengths, 8, shuffle=True, seed=1, multiplier=4)
    assert a.batches() == b.batches()
    a.set_epoch(1)
    assert a.batches() != b.batches()
    assert sorted(i for batch in a for i in batch) == list(range(200))
    # within a batch lengths are close: sorted inside chunks of 32
    assert max(max(lengths[i] for i in bt) - min(lengths[i] for i in bt) for bt in a) < 17


def test_bucket_sampler_with_groups_keeps_each_group_in_its_own_batches():
    lengths = [i % 17 for i in range(200)]
    groups = ["abc"[i % 3] for i in range(200)]
    plain = BucketBatchSampler(lengths, 8, shuffle=True, seed=1, multiplier=4)
    grouped = BucketBatchSampler(lengths, 8, shuffle=True, seed=1, multiplier=4, groups=groups)
    batches = grouped.batches()
    assert sorted(i for batch in batches for i in batch) == list(range(200))
    assert len(batches) == len(plain.batches()) == len(grouped)

    def boundaries(batches):  # how many group changes fall inside batches
        return sum(len({groups[i] for i in batch}) - 1 for batch in batches)

    # sorted by group within each chunk of 32: only a chunk's 2 boundaries between its 3 groups mix a batch
    assert boundaries(batches) <= 2 * 7 < 3 * 7 < boundaries(plain.batches())
    assert batches == BucketBatchSampler(lengths, 8, shuffle=True, seed=1, multiplier=4, groups=groups).batches()
    with pytest.raises(ValueError, match="199 groups for 200 examples"):
        BucketBatchSampler(lengths, 8, shuffle=True, groups=groups[:199])


def test_run_lowers_loss_learns_and_is_deterministic(tmp_path, tiny_backbone):
    config = load_config(run_config(tmp_path, tiny_backbone))
    first = Experiment(config).run()
    initial = first["stages"][0]
    assert initial["train"]["epoch_losses"][-1] < initial["train"]["epoch_losses"][0]
    assert min(initial["scores"].values()) > 0.6  # chance is 1/3
    assert set(first["stages"][1]["scores"]) == {"deu", "fra", "hin"}
    predictions = (tmp_path / "runs" / "t" / first["stages"][1]["predictions"]).read_text().splitlines()
    assert len(predictions) == 36 and {"lang", "id", "prediction", "score"} <= set(json.loads(predictions[0]))
    assert first["versions"]["torch"] and first["config"]["seed"] == 0
    again = Experiment(config.model_copy(update={"name": "t2"})).run()
    assert [s["scores"] for s in again["stages"]] == [s["scores"] for s in first["stages"]]

    # --resume redoes a stage whose folder is gone, on stage 0's weights read back from its folder: the same
    # weights, scores and predictions as the run that trained both stages at once
    run_dir = tmp_path / "runs" / "t"
    update_dir = run_dir / "stages" / "full_finetune" / "1-update"
    weights = load_file(update_dir / "model.safetensors")
    predictions_file = run_dir / first["stages"][1]["predictions"]
    written = predictions_file.read_bytes()
    shutil.rmtree(update_dir)
    predictions_file.unlink()
    resumed = Experiment(config, resume=True).run()
    assert resumed["stages"][1]["scores"] == first["stages"][1]["scores"]
    assert predictions_file.read_bytes() == written
    retrained = load_file(update_dir / "model.safetensors")
    assert retrained.keys() == weights.keys() and all(torch.equal(retrained[k], weights[k]) for k in weights)

    # --resume reuses finished stages only if they were run with the config's settings
    path = tmp_path / "c.yaml"
    for override, changed in (("update_training={epochs: 1}", "training"),
                              ("stream.stages.1.amount=12", "stage_data"),
                              ('strategies=[{method: full_finetune, training: {learning_rate: 0.1}}]', "strategy")):
        with pytest.raises(CMLError, match=f"other {changed} settings") as error:
            Experiment(load_config(path, [override]), resume=True).run()
        assert error.value.file.endswith("stages/full_finetune/1-update/state.json")  # stage 0 was still fine


def test_resume_after_interruption_gives_the_same_result(tmp_path, tiny_backbone):
    path = run_config(tmp_path, tiny_backbone, checkpoint_every_steps=2)
    reference = Experiment(load_config(path, ["name=reference"])).run()
    interrupt_run(path, "full_finetune/update", 7, ["name=resumed"])
    checkpoints = tmp_path / "runs" / "resumed" / "checkpoints" / "full_finetune" / "1" / "latest"
    assert json.loads((checkpoints / "state.json").read_text())["result"]["steps"] == 6
    resumed = Experiment(load_config(path, ["name=resumed"]), resume=True).run()
    assert [s["scores"] for s in resumed["stages"]] == [s["scores"] for s in reference["stages"]]
    assert not checkpoints.exists()
    # every stage records its cost (update and evaluation), but a stage resumed in another process saw only
    # part of it and records none (benchmarks/tables.py v2-cost counts it as not recorded)
    for stage in reference["stages"]:
        assert stage["stage_cpu_seconds"] > 0 and stage["stage_seconds"] > 0
    assert "stage_cpu_seconds" in resumed["stages"][0]
    assert "stage_cpu_seconds" not in resumed["stages"][1] and "stage_seconds" not in resumed["stages"][1]
    # killed before its first checkpoint, the stage starts over in the next process, which sees its whole cost
    interrupt_run(path, "full_finetune/update", 1, ["name=early"])
    assert not (tmp_path / "runs" / "early" / "checkpoints" / "full_finetune" / "1" / "latest").exists()
    again = Experiment(load_config(path, ["name=early"]), resume=True).run()
    assert again["stages"][1]["stage_cpu_seconds"] > 0
    assert [s["scores"] for s in again["stages"]] == [s["scores"] for s in reference["stages"]]


def test_a_laft_uriel_update_killed_midway_resumes_to_the_same_modules_and_routes(tmp_path, tiny_backbone):
    """Killed inside the LoRA training of a hierarchical LAFT-URIEL update (a shared module and a group module
    training, the gate after them) and resumed from the mid-update checkpoint: the same module weights, gate
    record, routes, scores and predictions as an uninterrupted run."""
    path = run_config(tmp_path, tiny_backbone, checkpoint_every_steps=2, epochs=2)
    strategies = "strategies=[{method: laft_uriel, n_groups: 2, hierarchical: true, " \
                 "lora: {r: 4, target_modules: [query, value]}}]"
    reference = Experiment(load_config(path, ["name=reference", strategies])).run()
    interrupt_run(path, "laft_uriel/update", 5, ["name=resumed", strategies], "cml.strategies.modular.strategy")
    checkpoints = tmp_path / "runs" / "resumed" / "checkpoints" / "laft_uriel" / "1" / "latest"
    assert json.loads((checkpoints / "state.json").read_text())["result"]["steps"] == 4
    resumed = Experiment(load_config(path, ["name=resumed", strategies]), resume=True).run()

    stages = [run["strategies"]["laft_uriel"]["stages"][1] for run in (reference, resumed)]
    assert "shared" in stages[0]["modules"] and len(stages[0]["modules"]) == 2 and stages[0]["gate"]
    for key in ("modules", "routes", "gate", "scores", "metrics"):
        assert stages[1][key] == stages[0][key], key
    folders = [tmp_path / "runs" / name / "stages" / "laft_uriel" / "1-update" for name in ("reference", "resumed")]
    weights = [load_file(folder / "model.safetensors") for folder in folders]
    assert weights[1].keys() == weights[0].keys() and any("lora_" in k for k in weights[0])
    assert all(torch.equal(weights[1][k], weights[0][k]) for k in weights[0])
    predictions = [(tmp_path / "runs" / name / stage["predictions"]).read_bytes()
                   for name, stage in zip(("reference", "resumed"), stages)]
    assert predictions[1] == predictions[0]
    assert not checkpoints.exists()


def test_a_resume_after_the_early_stopping_checkpoint_trains_no_further(tmp_path, tiny_backbone, monkeypatch):
    """Killed between the epoch-end checkpoint that meets the early-stopping patience and the stop itself, a
    resumed run stops too (it once trained an epoch more)."""
    import cml.training.trainer as trainer
    from tiny import TOPICS, words

    examples = [Example(str(i), "deu", text=" ".join([words("deu", TOPICS[i % 3])[i % 4], f"deuw{i % 6}"]),
                        label=TOPICS[i % 3]) for i in range(16)]
    task = make_task(ExperimentConfig.model_fields["task"].annotation("classification"), list(TOPICS),
                     ModelConfig(name=tiny_backbone))
    torch.manual_seed(0)
    model = task.build_model()
    features = task.encode(examples)
    # a rate too small to move the dev score: epoch 2 is no better than epoch 1, and patience 1 stops there
    config = TrainingConfig(epochs=5, batch_size=8, learning_rate=1e-12, warmup_ratio=0.0, early_stopping_patience=1)
    dev = {"deu": (examples[:6], task.encode(examples[:6]))}

    original = trainer.save_checkpoint

    def save_then_die(folder, model_state, state, **kwargs):
        original(folder, model_state, state, **kwargs)
        if folder.name == "latest" and state.get("epoch") == 2 and state.get("batches_done") == 0:
            raise Interrupted

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        train(model, task, features, config, accelerator=make_accelerator(config), seed=0, dev=dev,
              checkpoint_dir=tmp_path / "ck")
    monkeypatch.setattr(trainer, "save_checkpoint", original)
    result = train(model, task, features, config, accelerator=make_accelerator(config), seed=0, dev=dev,
                   checkpoint_dir=tmp_path / "ck", resume=True)
    assert (result.epochs_run, len(result.dev_history), result.bad_epochs) == (2, 2, 1)


def topic_examples(n: int = 24) -> list[Example]:
    """German examples of the tiny vocabulary's topics, labelled both ways (topic; a tag per token)."""
    from tiny import TOPICS, words
    examples = []
    for i in range(n):
        topic = TOPICS[i % 3]
        tokens = (words("deu", topic)[i % 4], f"deuw{i % 6}", words("deu", topic)[(i + 1) % 4])
        examples.append(Example(str(i), "deu", text=" ".join(tokens), label=topic, tokens=tokens,
                                tags=("X", "O", "X")))
    return examples


@pytest.mark.parametrize("family", ["classification", "tagging"])
def test_each_family_lowers_the_loss(tiny_backbone, family):
    from tiny import TOPICS
    examples = topic_examples()
    labels = list(TOPICS) if family == "classification" else ["O", "X"]
    task = make_task(ExperimentConfig.model_fields["task"].annotation(family), labels,
                     ModelConfig(name=tiny_backbone))
    torch.manual_seed(0)
    model = task.build_model()
    features = task.encode(examples)
    config = TrainingConfig(epochs=12, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0)
    result = train(model, task, features, config, accelerator=make_accelerator(config), seed=0)
    assert result.epoch_losses[-1] < 0.8 * result.epoch_losses[0]



def test_training_without_dropout_trains_as_every_dropout_at_zero_would_and_puts_them_back(tmp_path, tiny_backbone):
    """``dropout: false`` gives the weights of the same model trained with every dropout probability at 0
    (attention's, which the model reads from its dropout module's probability, included), and leaves the
    probabilities as they were; with dropout on, the same seed trains to other weights (dropout draws here)."""
    from tiny import TOPICS

    from cml.experiment import training_settings

    task = make_task(ExperimentConfig.model_fields["task"].annotation("classification"), list(TOPICS),
                     ModelConfig(name=tiny_backbone))
    features = task.encode(topic_examples())
    on = TrainingConfig(epochs=2, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0)
    off = on.model_copy(update={"dropout": False})

    def trained(probability: float, config: TrainingConfig) -> torch.nn.Module:
        torch.manual_seed(0)
        model = task.build_model()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = probability
        train(model, task, features, config, accelerator=make_accelerator(config), seed=0)
        return model

    def same(a, b) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    without = trained(0.3, off)
    probabilities = {module.p for module in without.modules() if isinstance(module, torch.nn.Dropout)}
    assert probabilities == {0.3}
    assert same(without, trained(0.0, on))
    assert not same(without, trained(0.3, on))
    # on (the default) it is not in a stage's settings: stages saved before the option existed stay reusable
    assert "dropout" not in training_settings(on) and training_settings(off)["dropout"] is False
    config = load_config(run_config(tmp_path, tiny_backbone))
    assert "dropout" not in Experiment(config).settings(0)["training"]
    config.training = off
    assert Experiment(config).settings(0)["training"]["dropout"] is False


def test_the_optimizer_steps_fused_and_trains_as_torch_s_default_loop_would(tiny_backbone, monkeypatch):
    """AdamW steps with torch's fused kernel (on CPU torch's default steps each tensor one elementwise op at a time:
    about 5% of a full fine-tuning step of the embedded model with its embeddings frozen, far more with them
    trainable); the weights it trains equal the loop's to float rounding."""
    from tiny import TOPICS

    from cml.training import trainer

    task = make_task(ExperimentConfig.model_fields["task"].annotation("classification"), list(TOPICS),
                     ModelConfig(name=tiny_backbone))
    features = task.encode(topic_examples())
    config = TrainingConfig(epochs=3, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0, weight_decay=0.01)

    def trained() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = task.build_model()
        train(model, task, features, config, accelerator=make_accelerator(config), seed=0)
        return model.state_dict()

    assert trainer._optimizer(task.build_model(), config, frozenset()).defaults["fused"] is True
    fused = trained()
    monkeypatch.setattr(trainer, "_fused_kernels_apply", lambda parameters: False)
    assert not trainer._optimizer(task.build_model(), config, frozenset()).defaults["fused"]
    loop = trained()
    torch.manual_seed(0)
    initial = task.build_model().state_dict()
    assert all(not torch.equal(loop[name], initial[name]) for name in loop if name.endswith("weight"))
    for name, value in loop.items():
        torch.testing.assert_close(fused[name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_backbone):
    """The real thing: SIGKILL a `cml run` mid-update (mid-epoch), then `cml run --resume`."""
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    path = run_config(tmp_path, tiny_backbone, checkpoint_every_steps=1)
    # select_best off: the final weights are the last step's, so any divergence after the kill shows.
    overrides = ["--set", "update_training={epochs: 25, select_best: false}"]
    command = [sys.executable, "-m", "cml.cli", "run", str(path), *overrides]
    subprocess.run([*command, "--set", "name=reference"], check=True, capture_output=True)
    latest = tmp_path / "runs" / "killed" / "checkpoints" / "full_finetune" / "1" / "latest" / "state.json"
    process = subprocess.Popen([*command, "--set", "name=killed"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            steps = json.loads(latest.read_text())["result"]["steps"]
        except (OSError, ValueError):
            steps = 0
        if steps >= 10:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "runs" / "killed" / "results.json").exists()
    # what a kill inside an atomic write leaves (whether this one did depends on timing): the resume clears it
    run_dir = tmp_path / "runs" / "killed"
    (run_dir / ".cml-results.json.x1y2.tmp").write_text("{")
    (run_dir / "stages" / "full_finetune" / ".cml-1-update.ab12cd34.tmp").mkdir(parents=True)
    (run_dir / "stages" / "initial" / ".cml-0-initial.old").mkdir()
    (run_dir / ".notes.tmp").write_text("a user's file")  # not a name this tool makes: left alone
    subprocess.run([*command, "--set", "name=killed", "--resume"], check=True, capture_output=True)
    assert not [p for p in run_dir.rglob(".cml-*") if p.name.endswith((".tmp", ".old"))]
    assert (run_dir / ".notes.tmp").read_text() == "a user's file"
    reference = json.loads((tmp_path / "runs" / "reference" / "results.json").read_text())
    resumed = json.loads((tmp_path / "runs" / "killed" / "results.json").read_text())
    assert [s["scores"] for s in resumed["stages"]] == [s["scores"] for s in reference["stages"]]
    weights = [load_file(tmp_path / "runs" / name / "stages" / "full_finetune" / "1-update" / "model.safetensors")
               for name in ("reference", "killed")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


class _TwoProcesses:
    """Accelerate's gather as process ``index`` of two sees it, the other process's tensor given."""

    device, num_processes = torch.device("cpu"), 2

    def __init__(self, index: int, other: torch.Tensor):
        self.process_index, self.other = index, other

    def gather(self, tensor):
        return torch.cat([tensor, self.other[None]] if self.process_index == 0 else [self.other[None], tensor])


def test_each_process_resumes_its_own_dropout_stream():
    """A checkpoint holds every process's RNG state, gathered one row each, and a resumed process takes its
    own row (found on a GPU: a resume restored the CPU's stream while dropout drew from the GPU's)."""
    from cml.training.trainer import _gather_rng_states, _restore_rng_states

    torch.manual_seed(1)
    first_process = torch.get_rng_state()
    first_draws = torch.rand(3)
    torch.manual_seed(2)
    states = _gather_rng_states(_TwoProcesses(1, first_process))
    second_draws = torch.rand(3)
    assert states["torch_cpu"].shape[0] == 2 and "torch_cuda" not in states
    _restore_rng_states(states, _TwoProcesses(1, first_process))
    assert torch.equal(torch.rand(3), second_draws)
    _restore_rng_states(states, _TwoProcesses(0, first_process))
    assert torch.equal(torch.rand(3), first_draws)
    _restore_rng_states({"torch_cpu": first_process}, _TwoProcesses(0, first_process))  # an older checkpoint
    assert torch.equal(torch.rand(3), first_draws)


def test_stale_temporaries_are_removed_and_a_half_swapped_checkpoint_restored(tmp_path):
    from cml.io import remove_stale_temporaries

    done, swapped = tmp_path / "a" / "latest", tmp_path / "b" / "latest"
    done.mkdir(parents=True)
    (tmp_path / "a" / ".cml-latest.old").mkdir()  # killed after the swap: the new checkpoint is in place
    (tmp_path / "a" / ".cml-latest.old" / "state.json").write_text("{}")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".cml-latest.old").mkdir()  # killed between the swap's two renames: only the old one
    (tmp_path / "b" / ".cml-latest.old" / "state.json").write_text('{"steps": 4}')
    (tmp_path / "b" / ".cml-latest.k3j2.tmp").mkdir()
    (tmp_path / ".cml-results.json.9f8e.tmp").write_text("{")
    # names this tool never makes are never touched, however temporary they look
    (tmp_path / "keep.tmp").write_text("not ours: not hidden")
    (tmp_path / ".editor.swp.tmp").write_text("not ours: no prefix")
    (tmp_path / ".backup.old").mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        ".cml-results.json.9f8e.tmp", "a/.cml-latest.old", "b/.cml-latest.k3j2.tmp"]
    assert (swapped / "state.json").read_text() == '{"steps": 4}'
    assert done.is_dir() and (tmp_path / "keep.tmp").exists()
    assert (tmp_path / ".editor.swp.tmp").exists() and (tmp_path / ".backup.old").is_dir()


def test_classification_head_is_the_new_parameter(tiny_backbone):
    task = make_task(ExperimentConfig.model_fields["task"].annotation("classification"), ["a", "b"],
                     ModelConfig(name=tiny_backbone))
    task.build_model()
    assert task.new_parameter_names and all(name.startswith("classifier.") for name in task.new_parameter_names)

"""The continual-learning baselines: EWC, replay, distillation (LwF) and WiSE-FT."""

from __future__ import annotations

import copy
import random
import shutil
from types import SimpleNamespace

import pytest
import torch
from helpers import write_config
from safetensors.torch import load_file
from tiny import TOPICS, write_topic_data

from cml.config import ModelConfig, ReplayConfig, load_config
from cml.data.examples import Example
from cml.data.stream import Stage
from cml.experiment import Experiment
from cml.routing import RoutedModel
from cml.strategies.distill import distillation_loss
from cml.strategies.ewc import attach_fisher, detach_fisher, diagonal_fisher, ewc_penalty
from cml.strategies.replay import Replay, reservoir_sample
from cml.strategies.wise_ft import interpolate
from cml.task_family import TaskFamily
from cml.tasks import make_task

LANGS = ["deu", "fra", "hin"]
STRATEGIES = ["ewc", "replay", "distill", "wise_ft"]


# -- EWC ------------------------------------------------------------------------------------------------
def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it():
    torch.manual_seed(0)
    anchor = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    fisher = {name: torch.rand_like(t) for name, t in anchor.items()}
    step = {name: torch.randn_like(t) for name, t in anchor.items()}

    def penalty(scale: float) -> torch.Tensor:
        # "c" has no Fisher (a frozen parameter): it never counts, however far it moves.
        moved = [(name, anchor[name] + scale * step[name]) for name in anchor] + [("c", torch.ones(2))]
        return ewc_penalty(moved, fisher, anchor, strength=10.0)

    assert penalty(0.0) == 0
    expected = 10.0 / 2 * sum((fisher[n] * step[n] ** 2).sum() for n in anchor)
    assert torch.allclose(penalty(1.0), expected)
    assert torch.allclose(penalty(2.0), 4 * penalty(1.0)) and torch.allclose(penalty(-3.0), 9 * penalty(1.0))


def topic_examples(lang: str, n: int) -> list[Example]:
    return [Example(str(i), lang, text=f"{lang}w{i % 6} {lang}{TOPICS[i % 3]}{i % 4}", label=TOPICS[i % 3])
            for i in range(n)]


def test_fisher_is_non_negative_and_absent_for_frozen_parameters(tiny_backbone):
    task = make_task(TaskFamily.classification, list(TOPICS), ModelConfig(name=tiny_backbone))
    task.languages = LANGS
    torch.manual_seed(0)
    model = RoutedModel(task.build_model(), LANGS)
    model.get_input_embeddings().weight.requires_grad_(False)
    fisher = diagonal_fisher(model, task, task.features(topic_examples("deu", 6)))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(fisher) == trainable and "model.bert.embeddings.word_embeddings.weight" not in fisher
    assert all((f >= 0).all() for f in fisher.values())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    assert all(p.grad is None for p in model.parameters()) and model.training  # left as found
    # The Fisher rides on the model as buffers named after the parameters, and comes off unchanged.
    attach_fisher(model, fisher)
    assert {k for k in model.state_dict() if k.startswith("ewc.")} == {f"ewc.fisher.{name}" for name in fisher}
    back = detach_fisher(model)
    assert back.keys() == fisher.keys() and all(torch.equal(back[n], fisher[n]) for n in fisher)
    assert not any(k.startswith("ewc.") for k in model.state_dict())


# -- replay ---------------------------------------------------------------------------------------------
def stage(name: str, counts: dict[str, int]) -> Stage:
    return Stage(name, {lang: [Example(f"{name}-{i}", lang, text="x", label="a") for i in range(n)]
                        for lang, n in counts.items()})


HISTORY = [stage("s0", {"deu": 10, "fra": 2, "hin": 6}), stage("s1", {"deu": 30}), stage("s2", {"fra": 5})]


def memory_after(stages: int, seed: int = 0, k: int = 4) -> dict[str, list[str]]:
    replay = Replay(ReplayConfig(method="replay", per_language=k, seed=seed))
    replay.memory.remember(HISTORY[:stages])
    return replay.memory.ids


def test_replay_memory_holds_k_per_language_and_is_seeded():
    memory = memory_after(1)
    assert {lang: len(ids) for lang, ids in memory.items()} == {"deu": 4, "fra": 2, "hin": 4}
    assert all(len(set(ids)) == len(ids) for ids in memory.values())
    assert memory == memory_after(1)
    assert memory != memory_after(1, seed=1)


def test_replay_later_stages_enter_the_memory_and_restore_continues_it():
    after_one, after_two = memory_after(1), memory_after(2)
    assert len(after_two["deu"]) == 4 and any(i.startswith("s1-") for i in after_two["deu"])
    assert after_two["fra"] == after_one["fra"] and after_two["hin"] == after_one["hin"]
    # a resumed run: the memory recorded by stage 2 (the stages before it), then stage 2 folded in
    restored = Replay(ReplayConfig(method="replay", per_language=4))
    restored.restore(None, {"memory": after_two}, SimpleNamespace(index=2))
    restored.memory.remember(HISTORY)
    assert restored.memory.ids == memory_after(3)


def test_reservoir_keeps_every_item_with_the_same_probability():
    trials, k, counts = 4000, 5, [0] * 20
    rng = random.Random(0)
    for _ in range(trials):
        memory = reservoir_sample(reservoir_sample([], 0, range(10), k, rng), 10, range(10, 20), k, rng)
        for item in memory:
            counts[item] += 1
    assert all(abs(c / trials - k / 20) < 0.04 for c in counts)


# -- distillation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, masked", [((4, 3), False), ((4, 6, 5), True), ((2, 7, 50), True)],
                         ids=["classification", "tagging", "seq2seq"])
def test_distillation_loss_is_zero_only_when_student_equals_teacher(shape, masked):
    torch.manual_seed(0)
    teacher = torch.randn(shape)
    mask = None
    if masked:
        mask = torch.rand(shape[:-1]) > 0.4
        mask[:, 0] = True
    assert distillation_loss(teacher.clone(), teacher, 2.0, mask) == 0
    student = teacher + torch.randn(shape)
    assert distillation_loss(student, teacher, 2.0, mask) > 0
    if masked:  # differences at ignored positions do not count
        elsewhere = teacher.clone()
        elsewhere[~mask] += torch.randn(shape)[~mask]
        assert distillation_loss(elsewhere, teacher, 2.0, mask) == 0


def test_distillation_loss_is_t_squared_times_the_mean_kl():
    student, teacher, t = torch.randn(3, 4), torch.randn(3, 4), 3.0
    p = torch.softmax(teacher / t, -1)
    kl = (p * (p.log() - torch.log_softmax(student / t, -1))).sum(-1).mean()
    assert torch.allclose(distillation_loss(student, teacher, t), t ** 2 * kl, atol=1e-6)


def test_seq2seq_decoder_logits_line_up_with_the_label_mask():
    """What Distill relies on: teacher-forced logits are [B, T, V] for labels [B, T] (-100 ignored)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=20, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1)).eval()
    labels = torch.tensor([[3, 4, 5, 1], [6, 1, -100, -100]])
    batch = {"input_ids": torch.tensor([[5, 6, 7, 1], [8, 1, 0, 0]]), "attention_mask": torch.tensor(
        [[1, 1, 1, 1], [1, 1, 0, 0]]), "labels": labels}
    teacher = copy.deepcopy(model)
    logits = model(**batch).logits
    assert logits.shape[:-1] == labels.shape
    assert distillation_loss(logits, teacher(**batch).logits, 2.0, labels != -100) == 0
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight))
    assert distillation_loss(model(**batch).logits, teacher(**batch).logits, 2.0, labels != -100) > 0


# -- WiSE-FT --------------------------------------------------------------------------------------------
def test_interpolation_reproduces_both_endpoints_exactly():
    torch.manual_seed(0)
    previous = {"w": torch.randn(6, 5), "b": torch.randn(5)}
    finetuned = {name: torch.randn_like(t) for name, t in previous.items()}
    assert all(torch.equal(interpolate(previous, finetuned, 0.0)[n], previous[n]) for n in previous)
    assert all(torch.equal(interpolate(previous, finetuned, 1.0)[n], finetuned[n]) for n in previous)
    middle = interpolate(previous, finetuned, 0.25)
    assert all(torch.allclose(middle[n], 0.75 * previous[n] + 0.25 * finetuned[n]) for n in previous)


# -- a tiny run with all four -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, tiny_backbone):
    tmp_path = tmp_path_factory.mktemp("baselines")
    write_topic_data(tmp_path / "data", n=(72, 12, 12))
    path = write_config(
        tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
        model={"name": tiny_backbone, "max_length": 32, "freeze_embeddings": False},  # else it learns nothing
        training={"epochs": 6, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0},
        update_training={"epochs": 2},
        stream={"stages": [{"name": "initial", "amount": 32}, {"name": "hin", "languages": ["hin"], "amount": 16},
                           {"name": "eu", "languages": ["deu", "fra"], "amount": 16}]},
        strategies=[{"method": "ewc", "ewc_lambda": 100.0, "fisher_examples": 16},
                    {"method": "replay", "per_language": 4},
                    {"method": "distill"},
                    {"method": "wise_ft", "alpha": "dev", "alpha_grid": [0.0, 0.5, 1.0]}])
    return Experiment(load_config(path)).run(), path


def test_every_baseline_scores_every_language_after_every_stage(baseline_run):
    results, _ = baseline_run
    assert list(results["strategies"]) == STRATEGIES
    for entry in results["strategies"].values():
        assert [s["index"] for s in entry["stages"]] == [0, 1, 2]
        assert all(set(s["scores"]) == set(LANGS) for s in entry["stages"])


def test_baseline_records(baseline_run):
    results, path = baseline_run
    stages = {name: entry["stages"] for name, entry in results["strategies"].items()}
    # replay: k examples per language, from the stages before
    memory = stages["replay"][1]["memory"]
    assert {lang: len(ids) for lang, ids in memory.items()} == {lang: 4 for lang in LANGS}
    assert {lang: len(ids) for lang, ids in stages["replay"][2]["memory"].items()} == {lang: 4 for lang in LANGS}
    assert stages["replay"][2]["memory"]["deu"] == memory["deu"]  # deu got no data at stage 1
    # wise_ft: the chosen alpha has the best dev score
    wise = stages["wise_ft"][1]
    assert set(wise["alpha_dev"]) == {"0.0", "0.5", "1.0"}
    assert wise["alpha_dev"][str(wise["alpha"])] == max(wise["alpha_dev"].values())
    # ewc: the summed Fisher is stored with the stage's weights, one per parameter
    assert all(s["ewc_penalty"] >= 0 and s["fisher_examples"] == 16 for s in stages["ewc"][1:])
    folder = path.parent / "runs" / "t" / "stages" / "ewc"
    first, saved = (load_file(next(folder.glob(f"{i}-*")) / "model.safetensors") for i in (1, 2))
    fisher = {k: v for k, v in saved.items() if k.startswith("ewc.fisher.")}
    assert fisher and all((v >= 0).all() for v in fisher.values())
    # summed over stages: stage 2's Fisher adds to stage 1's
    assert all((v >= first[k]).all() for k, v in fisher.items())
    assert any((v > first[k]).any() for k, v in fisher.items())
    assert {"ewc.fisher.model.classifier.weight", "ewc.fisher.model.bert.embeddings.word_embeddings.weight"} \
        <= set(fisher)
    assert {k.removeprefix("ewc.fisher.") for k in fisher} <= set(saved)


def test_resuming_from_saved_stages_gives_the_same_last_stage(baseline_run):
    """Stage 2 redone from stage 1's saved state (restore + load) equals the uninterrupted run."""
    results, path = baseline_run
    for name in STRATEGIES:
        shutil.rmtree(next((path.parent / "runs" / "t" / "stages" / name).glob("2-*")))
    resumed = Experiment(load_config(path), resume=True).run()
    for name in STRATEGIES:
        before, after = results["strategies"][name]["stages"][2], resumed["strategies"][name]["stages"][2]
        assert after["scores"] == before["scores"]
        assert after["train"]["epoch_losses"] == pytest.approx(before["train"]["epoch_losses"], rel=1e-5)
    assert resumed["strategies"]["replay"]["stages"][2]["memory"] == results["strategies"]["replay"]["stages"][2][
        "memory"]
    assert resumed["strategies"]["ewc"]["stages"][2]["ewc_penalty"] == pytest.approx(
        results["strategies"]["ewc"]["stages"][2]["ewc_penalty"], rel=1e-5)

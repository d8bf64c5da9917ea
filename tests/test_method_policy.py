"""LAFT-URIEL's policy, not its machinery: which route each language gets after an update (own group, nearest
trained group within ``route_to_nearest``, shared module, previous model, in that order), the gate's ties, and
the tagging metrics the gate and the summaries count. Groups and distances are given (``grouped_strategy``), so
each case sits exactly where a rule decides."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import PairDistances, grouped_strategy, run_config

from cml.metrics import entity_f1, sentence_entity_scores, token_accuracy
from cml.strategies.modular.gate import gate_choice

GROUPS = {"deu": "g1", "nld": "g1", "fra": "g2", "spa": "g2", "ita": "g2", "hin": "g3", "yor": "g4"}
# Mean distances to g1's members (deu, nld): fra 0.45, spa 0.55, ita 0.56; yor is 0.5 from hin (g3's only
# member) and 0.52 from g1. Every pair not listed is 1.0 apart.
DISTANCES = PairDistances({("fra", "deu"): 0.45, ("fra", "nld"): 0.45, ("spa", "deu"): 0.55, ("spa", "nld"): 0.55,
                           ("ita", "deu"): 0.56, ("ita", "nld"): 0.56, ("yor", "hin"): 0.5, ("yor", "deu"): 0.52,
                           ("yor", "nld"): 0.52})
PREVIOUS = ()


def ungated(**options):
    return grouped_strategy(GROUPS, DISTANCES, gate=False, **options)


def test_a_language_without_a_trained_group_borrows_the_nearest_within_route_to_nearest():
    strategy = ungated(route_to_nearest=0.55)
    routes = {lang: strategy.default_route(lang, ["g1"]) for lang in GROUPS}
    assert routes == {"deu": ("g1",), "nld": ("g1",),  # their own group
                      "fra": ("g1",),  # 0.45 from g1
                      "spa": ("g1",),  # exactly at the limit: within it
                      "ita": PREVIOUS,  # 0.56: beyond it
                      "yor": ("g1",),  # 0.52
                      "hin": PREVIOUS}


def test_without_route_to_nearest_an_ungated_update_borrows_nothing():
    strategy = ungated()
    assert {lang: strategy.default_route(lang, ["g1"]) for lang in ("fra", "spa")} == {"fra": PREVIOUS, "spa": PREVIOUS}
    assert "nearest" not in strategy.router().candidates("fra", ["g1"])


def test_a_trained_own_group_beats_a_nearer_borrowed_one():
    # fra is 0.45 from g1, well within the limit, but its own group g2 trained too
    assert ungated(route_to_nearest=0.55).default_route("fra", ["g1", "g2"]) == ("g2",)


def test_the_nearest_of_several_trained_groups_is_borrowed():
    # yor: 0.5 from g3, 0.52 from g1, both within the limit
    assert ungated(route_to_nearest=0.55).default_route("yor", ["g1", "g3"]) == ("g3",)


def test_hierarchical_routes_stack_the_group_on_the_shared_module_and_fall_back_to_it():
    strategy = ungated(route_to_nearest=0.55, hierarchical=True)
    routes = {lang: strategy.default_route(lang, ["shared", "g1"]) for lang in ("deu", "fra", "ita", "hin")}
    assert routes == {"deu": ("shared", "g1"), "fra": ("shared", "g1"), "ita": ("shared",), "hin": ("shared",)}


def test_gate_candidates_run_from_the_previous_model_to_the_own_group():
    strategy = grouped_strategy(GROUPS, DISTANCES, hierarchical=True)  # gated: laft_uriel's default
    candidates = strategy.router().candidates("fra", ["shared", "g1", "g2"])
    assert list(candidates.items()) == [("previous", PREVIOUS), ("shared", ("shared",)), ("nearest", ("shared", "g1")),
                                        ("own", ("shared", "g2"))]
    # the gate judges the nearest group on dev whatever its distance: yor is 1.0 from g2
    assert list(strategy.router().candidates("yor", ["shared", "g2"])) == ["previous", "shared", "nearest"]


def test_without_borrowed_routes_a_language_keeps_its_own_groups_module_or_the_previous_model():
    gated = grouped_strategy(GROUPS, DISTANCES, hierarchical=True, borrowed_routes=False)
    assert list(gated.router().candidates("fra", ["shared", "g1", "g2"]).items()) == [
        ("previous", PREVIOUS), ("own", ("shared", "g2"))]  # no shared module alone, no nearest group
    assert list(gated.router().candidates("yor", ["shared", "g2"])) == ["previous"]
    ungated_routes = ungated(route_to_nearest=0.55, hierarchical=True, borrowed_routes=False)
    assert {lang: ungated_routes.default_route(lang, ["shared", "g1"]) for lang in ("deu", "fra", "hin")} == {
        "deu": ("shared", "g1"), "fra": PREVIOUS, "hin": PREVIOUS}  # with borrowing: fra ("shared", "g1"), hin shared
    # a language the model never saw has no group of its own: it still borrows the nearest within the limit
    assert ungated_routes.router().for_new_language("ltz", ["shared", "g1"], {"deu": 0.3, "nld": 0.3}) == (
        "shared", "g1")


def test_gate_ties_keep_the_more_conservative_route():
    assert gate_choice({"previous": 0.6, "shared": 0.6, "nearest": 0.6, "own": 0.6}, {}, None)[0] == "previous"
    assert gate_choice({"previous": 0.5, "shared": 0.6, "nearest": 0.7, "own": 0.7}, {}, None)[0] == "nearest"
    assert gate_choice({"previous": 0.5, "shared": 0.7, "nearest": 0.6, "own": 0.7}, {}, None)[0] == "shared"
    assert gate_choice({"previous": 0.5, "shared": 0.6, "nearest": 0.6, "own": 0.7}, {}, None)[0] == "own"


def test_an_update_leaves_the_languages_it_routes_to_the_previous_model_bit_for_bit(tmp_path, tiny_backbone):
    """The live model after a LAFT-URIEL update on Hindi (ungated, no route_to_nearest; deu and fra in the other
    group), as the run evaluates it: deu's and fra's logits are the previous model's exactly, hin's are not. Checks
    the update itself (what it trains, what it leaves frozen), where the served model rebuilt from the saved
    modules would hide a change to the shared weights."""
    from cml.config import load_config
    from cml.experiment import Experiment
    from cml.routing import RoutedModel
    from cml.strategies import make_strategy

    path = run_config(tmp_path, tiny_backbone, epochs=2)
    lora = "{r: 4, target_modules: [query, value]}"
    config = load_config(path, [f"strategies=[{{method: laft_uriel, n_groups: 2, gate: false, lora: {lora}}}]"])
    experiment = Experiment(config)
    previous = RoutedModel(experiment.task.seeded_model(config.seed), experiment.stream.languages)
    experiment.initial_stage(previous, ())
    strategy = make_strategy(config.strategies[0])
    updated, record = strategy.update(copy.deepcopy(previous), experiment.context(strategy.name, 1))
    assert record["groups"]["hin"] not in (record["groups"]["deu"], record["groups"]["fra"])  # the case's premise
    assert (record["routes"]["deu"], record["routes"]["fra"]) == ("previous", "previous")

    def logits(model, langs):
        features = [f for lang in langs for f in experiment.dev[lang][1]]
        with torch.no_grad():
            return model.eval()(**experiment.task.batch(features)).logits

    assert torch.equal(logits(updated, ["deu", "fra"]), logits(previous, ["deu", "fra"]))
    assert not torch.allclose(logits(updated, ["hin"]), logits(previous, ["hin"]), atol=1e-4)


def updates_watched(tmp_path, tiny_backbone, strategies: str, epochs: int, watch):
    """Stage 0 of the tiny run, then each of ``strategies`` (a YAML list) updating it, with ``watch(model, features,
    description, **train's other keywords)`` called as each update trains (description: the strategy's name).
    Returns the config, the experiment, the model after stage 0, and each strategy's update record."""
    import cml.strategies.modular.strategy as modular
    from cml.config import load_config
    from cml.experiment import Experiment
    from cml.routing import RoutedModel
    from cml.strategies import make_strategy

    config = load_config(run_config(tmp_path, tiny_backbone, epochs=epochs), [f"strategies={strategies}"])
    experiment = Experiment(config)
    previous = RoutedModel(experiment.task.seeded_model(config.seed), experiment.stream.languages)
    experiment.initial_stage(previous, ())
    real = modular.train

    def spy(model, task, features, training, **kwargs):
        watch(model, features, **{**kwargs, "description": kwargs["description"].split("/")[0]})
        return real(model, task, features, training, **kwargs)

    records = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modular, "train", spy)
        for strategy_config in config.strategies:
            strategy = make_strategy(strategy_config)
            _, records[strategy.name] = strategy.update(copy.deepcopy(previous), experiment.context(strategy.name, 1))
    return config, experiment, previous, records


def test_laft_replay_trains_every_groups_module_on_its_memory_and_the_gate_routes_each_language(tmp_path,
                                                                                                   tiny_backbone):
    """An update on Hindi alone: laft_uriel trains hin's group's module only, laft_replay also the other group's
    (deu and fra, on their memory of stage-0 examples), records that memory, and offers deu and fra their own
    module, which the gate takes only where dev improves. A saved stage's memory is what a resumed run continues."""
    from cml.strategies import make_strategy

    trained = {}

    def spy(model, features, description, **kwargs):
        trained[description] = (sorted({f["lang"] for f in features}), len(features))

    lora = "{r: 4, target_modules: [query, value]}"
    config, experiment, previous, records = updates_watched(
        tmp_path, tiny_backbone, f"[{{method: laft_uriel, n_groups: 2, lora: {lora}}}, "
                                 f"{{method: laft_replay, n_groups: 2, per_language: 5, lora: {lora}}}]", 2, spy)
    plain, rehearsed = records["laft_uriel"], records["laft_replay"]
    groups = plain["groups"]
    assert groups == rehearsed["groups"] and groups["deu"] == groups["fra"] != groups["hin"]  # the case's premise
    assert plain["modules"] == [groups["hin"]] and "memory" not in plain
    assert rehearsed["modules"] == sorted({groups["deu"], groups["hin"]})
    update = len(experiment.stream.stages[1].train["hin"])
    assert trained["laft_uriel"] == (["hin"], update)
    assert trained["laft_replay"] == (["deu", "fra", "hin"], update + 3 * 5)
    assert {lang: len(ids) for lang, ids in rehearsed["memory"].items()} == {"deu": 5, "fra": 5, "hin": 5}
    stage0 = {e.id for lang in ("deu", "fra") for e in experiment.stream.stages[0].train[lang]}
    assert set(rehearsed["memory"]["deu"] + rehearsed["memory"]["fra"]) <= stage0
    for lang in ("deu", "fra"):  # plain: no module of theirs trained, so only the borrowed hin module competes
        assert "own:" + groups[lang] in rehearsed["gate"][lang]["dev"]
        assert not any(key.startswith("own:") for key in plain["gate"][lang]["dev"])
        dev = rehearsed["gate"][lang]["dev"]
        chosen = rehearsed["gate"][lang]["choice"]
        assert all(dev[key] <= dev[next(k for k in dev if k.startswith(chosen + ":"))] for key in dev)
    # a resumed run: the stage's record restores its memory, and the next stage folds this stage's data into it as
    # a run that never stopped would
    restored = make_strategy(config.strategies[1])
    restored.restore(copy.deepcopy(previous), rehearsed, experiment.context("laft_replay", 1))
    stages = experiment.stream.stages
    continued = restored.memory.remember(stages)
    straight = make_strategy(config.strategies[1])
    straight.memory.remember(stages[:1])
    assert straight.memory.ids == rehearsed["memory"] and continued == straight.memory.remember(stages)
    assert any(e.id not in rehearsed["memory"]["hin"] for e in continued["hin"])  # the update's hin data came in


def test_without_borrowed_routes_the_gate_offers_no_other_groups_module_and_trains_the_same(tmp_path, tiny_backbone):
    """An update on Hindi: deu and fra, whose group got no data, are offered hin's module (nearest) by default and
    keep the previous model without borrowing; hin's module trains the same either way, so its dev score in the gate
    is the same. The option enters a stage's settings only when off (stages saved before it stay reusable)."""
    from cml.experiment import strategy_settings

    lora = "{r: 4, target_modules: [query, value]}"
    config, _, _, records = updates_watched(
        tmp_path, tiny_backbone, f"[{{method: laft_uriel, n_groups: 2, lora: {lora}}}, {{method: laft_uriel, "
                                 f"name: own_only, n_groups: 2, borrowed_routes: false, lora: {lora}}}]", 2,
        lambda *args, **kwargs: None)
    borrowing, own_only = records["laft_uriel"], records["own_only"]
    hin_group = borrowing["groups"]["hin"]
    assert borrowing["groups"]["deu"] == borrowing["groups"]["fra"] != hin_group  # the case's premise
    for lang in ("deu", "fra"):
        assert f"nearest:{hin_group}" in borrowing["gate"][lang]["dev"]
        assert list(own_only["gate"][lang]["dev"]) == ["previous:previous"]
        assert own_only["routes"][lang] == "previous"
    assert own_only["gate"]["hin"]["dev"] == borrowing["gate"]["hin"]["dev"]
    assert "borrowed_routes" not in strategy_settings(config.strategies[0])
    assert strategy_settings(config.strategies[1])["borrowed_routes"] is False


# -------------------------------------------------------------------------------------------- tagging metrics

REFERENCES = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"], ["O", "O"], ["O"]]
PREDICTIONS = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "I-ORG", "I-ORG"], ["O", "O"], ["B-PER"]]
# By hand, strict IOB2: the references hold PER(0-2), LOC(3-4), ORG(1-3); the predictions PER(0-2), ORG(3-4) and
# PER(0-1) in the last sentence, but no entity in "O I-ORG I-ORG" (an entity starts with B- in strict mode; the
# lenient conlleval reading would find ORG(1-3) there and count it right).


def test_token_accuracy_counts_every_token_of_every_sentence():
    assert token_accuracy(REFERENCES, PREDICTIONS) == 7 / 10  # wrong: B-LOC as B-ORG, B-ORG as I-ORG, O as B-PER
    assert token_accuracy([["A", "B", "C"], ["A"]], [["A", "B", "X"], ["X"]]) == 2 / 4  # tokens, not sentences


def test_entity_scores_are_strict_iob2_by_hand_and_as_seqeval_computes_them():
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    scores = entity_f1(REFERENCES, PREDICTIONS)
    assert scores == pytest.approx({"entity_precision": 1 / 3, "entity_recall": 1 / 3, "entity_f1": 1 / 3})
    strict = {"mode": "strict", "scheme": IOB2}
    assert scores == pytest.approx({"entity_precision": precision_score(REFERENCES, PREDICTIONS, **strict),
                                    "entity_recall": recall_score(REFERENCES, PREDICTIONS, **strict),
                                    "entity_f1": f1_score(REFERENCES, PREDICTIONS, **strict)})
    assert f1_score(REFERENCES, PREDICTIONS) == pytest.approx(4 / 7)  # the lenient reading (P 2/4, R 2/3) is not used
    nothing = entity_f1([["O", "O"]], [["O", "O"]])
    assert nothing == {"entity_f1": 0.0, "entity_precision": 0.0, "entity_recall": 0.0}  # seqeval's zero_division=0


def test_sentence_entity_scores_by_hand():
    scores = sentence_entity_scores(REFERENCES, PREDICTIONS)
    assert scores == {
        # PER right, LOC read as ORG; the ORG not found (I- cannot start it); nothing to find and nothing found;
        # a spurious PER where there is nothing to find
        "entity_f1": [0.5, 0.0, 1.0, 0.0],
        "entity_precision": [0.5, 1.0, 1.0, 0.0],
        "entity_recall": [0.5, 0.0, 1.0, 1.0]}


def test_tagging_task_reports_the_metrics_and_item_scores_of_its_family(tiny_backbone):
    from cml.config import ModelConfig
    from cml.data.examples import Example
    from cml.task_family import TaskFamily
    from cml.tasks import make_task

    examples = [Example(str(i), "deu", tokens=tuple(f"w{j}" for j in range(len(tags))), tags=tuple(tags))
                for i, tags in enumerate(REFERENCES)]
    ner = make_task(TaskFamily.tagging, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"],
                    ModelConfig(name=tiny_backbone))
    scores = ner.score(examples, PREDICTIONS)
    assert ner.primary_metric == "entity_f1"
    assert {key: scores[key] for key in ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")} == \
        pytest.approx({"entity_f1": 1 / 3, "entity_precision": 1 / 3, "entity_recall": 1 / 3, "token_accuracy": 0.7})
    items = ner.item_metric_scores(examples, PREDICTIONS)
    assert items["token_accuracy"] == [0.75, 2 / 3, 1.0, 0.0]
    assert items["entity_f1"] == [0.5, 0.0, 1.0, 0.0]

    pos = make_task(TaskFamily.tagging, ["NOUN", "VERB"], ModelConfig(name=tiny_backbone))
    tagged = [Example("0", "deu", tokens=("a", "b", "c"), tags=("NOUN", "VERB", "NOUN"))]
    assert pos.primary_metric == "token_accuracy"
    assert pos.score(tagged, [["NOUN", "NOUN", "NOUN"]])["token_accuracy"] == pytest.approx(2 / 3)
    assert "entity_f1" not in pos.score(tagged, [["NOUN", "NOUN", "NOUN"]])


def test_the_default_group_count_is_a_third_at_least_two_at_most_the_languages():
    from cml.strategies.laft_uriel import default_group_count

    assert [default_group_count(n) for n in (1, 2, 3, 6, 7, 20)] == [1, 2, 2, 2, 2, 6]


def test_batches_by_route_gives_the_trainer_each_examples_route(tmp_path, tiny_backbone):
    """With ``batches_by_route`` the modules train on batches of one route where they can: the trainer gets each
    training example's route (memory included) as its batch group and its sampler sorts by it; without it, none.
    Off, the option is not in a stage's settings, so stages saved before it existed stay reusable."""
    import cml.training.trainer as trainer
    from cml.experiment import strategy_settings
    from cml.routing import route_name

    seen = {}

    def spy(model, features, description, batch_groups, **kwargs):
        seen[description] = batch_groups
        if batch_groups is not None:
            assert batch_groups == [route_name(model.routes[f["lang"]]) for f in features]

    sampled = []

    class Recording(trainer.BucketBatchSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sampled.append(self.groups)

    lora = "{r: 4, target_modules: [query, value]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "BucketBatchSampler", Recording)
        config, _, _, records = updates_watched(
            tmp_path, tiny_backbone, f"[{{method: laft_replay, n_groups: 2, per_language: 5, lora: {lora}}}, "
                                     f"{{method: laft_replay, name: by_route, n_groups: 2, per_language: 5, "
                                     f"batches_by_route: true, lora: {lora}}}]", 1, spy)
    assert seen["laft_replay"] is None
    assert sorted(set(seen["by_route"])) == sorted(records["by_route"]["modules"]) and len(set(seen["by_route"])) == 2
    assert sampled == [None, None, seen["by_route"]]  # stage 0's training, then the two updates
    assert "batches_by_route" not in strategy_settings(config.strategies[0])
    assert strategy_settings(config.strategies[1])["batches_by_route"] is True

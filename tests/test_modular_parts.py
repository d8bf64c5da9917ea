"""The modular strategy's parts, each alone (``cml.strategies.modular``): route names, the groups' typology
helpers, the route candidates and the new-language route on hand-made distances, the gate on hand-made dev
scores, and the PEFT modules on the tiny backbone."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from helpers import PairDistances

from cml.errors import CMLError
from cml.routing import RoutedModel, parse_route, route_name
from cml.strategies.modular.gate import gate_dev_key, gated_routes, parse_gate_dev_key
from cml.strategies.modular.groups import group_members, group_of_nearest_language
from cml.strategies.modular.routes import NEW_LANGUAGE_MAX_DISTANCE, Router

PREVIOUS = ()

# ------------------------------------------------------------------------------------------------ route names


@pytest.mark.parametrize("route", [(), ("g2",), ("shared",), ("shared", "g2"), ("deu",)])
@pytest.mark.parametrize("base", ["previous", "base"])
def test_a_route_name_parses_back_to_its_route(route, base):
    assert parse_route(route_name(route, base), base) == route


def test_route_names_are_the_words_records_and_releases_use():
    assert route_name(()) == "previous" and route_name((), "base") == "base"
    assert route_name(("shared", "g2")) == "shared+g2" and route_name(["g1"], "base") == "g1"
    assert parse_route("shared+g2") == ("shared", "g2")
    assert parse_route("previous") == PREVIOUS and parse_route("base", "base") == PREVIOUS


@pytest.mark.parametrize("kind, route, key", [("previous", (), "previous:previous"), ("own", ("g2",), "own:g2"),
                                              ("nearest", ("shared", "g1"), "nearest:shared+g1")])
def test_gate_dev_keys_parse_back_to_kind_and_route(kind, route, key):
    assert gate_dev_key(kind, route) == key
    assert parse_gate_dev_key(key) == (kind, route)


# ------------------------------------------------------------------------------------------------ groups

GROUPS = {"deu": "g1", "nld": "g1", "fra": "g2", "spa": "g2", "hin": "g3"}


def test_group_members_leave_out_the_language_asked_about():
    assert group_members(GROUPS, ["g1", "g2"], "deu") == {"g1": ["nld"], "g2": ["fra", "spa"]}
    assert group_members(GROUPS, ["g3"], "hin") == {"g3": []}


class Matrix(PairDistances):
    """A typology that, like a TypologyMatrix, refuses a language it does not hold."""

    def __init__(self, languages, pairs):
        super().__init__(pairs)
        self.languages = set(languages)

    def distance(self, a, b):
        if {a, b} - self.languages:
            raise CMLError(f"{a} or {b} is not in this typology matrix")
        return super().distance(a, b)


def test_a_late_language_joins_the_group_of_its_nearest_grouped_language():
    languages = [*GROUPS, "ita"]
    typology = Matrix(languages, {("ita", "spa"): 0.3, ("ita", "deu"): 0.3, ("ita", "fra"): 0.4})
    # deu and spa tie at 0.3: the first by code decides, whatever the order of the languages
    assert group_of_nearest_language("ita", languages, GROUPS, typology) == "g1"
    assert group_of_nearest_language("ita", languages[::-1], GROUPS, typology) == "g1"
    assert group_of_nearest_language("ita", ["fra", "spa", "ita"], GROUPS, typology) == "g2"  # only these grouped
    assert group_of_nearest_language("yor", [*languages, "yor"], GROUPS, typology) is None  # outside the typology
    assert group_of_nearest_language("ita", ["ita"], GROUPS, typology) is None  # nothing grouped
    assert group_of_nearest_language("ita", languages, GROUPS, None) is None  # no typology


# ------------------------------------------------------------------------------------------------ routes

# Mean distances from a language to the members of the other groups:
#   fra: g1 0.4 (deu 0.3, nld 0.5) and g3 0.4 (hin): a tie, g1 by name
#   hin: g1 0.7 (deu, nld) and g2 0.4 (fra; spa has no distance: left out of the mean)
DISTANCES = PairDistances({("fra", "deu"): 0.3, ("fra", "nld"): 0.5, ("fra", "hin"): 0.4, ("hin", "deu"): 0.7,
                           ("hin", "nld"): 0.7, ("hin", "spa"): math.nan})


def router(**options) -> Router:
    return Router(GROUPS, DISTANCES, **options)


def test_candidates_run_from_the_previous_model_to_the_own_group():
    hierarchical = router(hierarchical=True, gated=True)
    assert list(hierarchical.candidates("fra", ["shared", "g1", "g2", "g3"]).items()) == [
        ("previous", PREVIOUS), ("shared", ("shared",)), ("nearest", ("shared", "g1")), ("own", ("shared", "g2"))]
    assert list(router(gated=True).candidates("fra", ["g1", "g2", "g3"]).items()) == [
        ("previous", PREVIOUS), ("nearest", ("g1",)), ("own", ("g2",))]
    # no trained group, no module: the previous model alone
    assert router(gated=True).candidates("hin", []) == {"previous": PREVIOUS}


def test_the_nearest_group_ties_go_to_the_first_by_name_and_missing_distances_are_left_out():
    gated = router(gated=True)
    assert gated.nearest("fra", ["g3", "g1"], lambda other: DISTANCES.distance("fra", other)) == (("g1",), 0.4)
    assert gated.candidates("fra", ["g3", "g1"])["nearest"] == ("g1",)
    # spa's distance to hin is unknown: g2's mean is fra's 0.4, nearer than g1's 0.7 (with a NaN it would be NaN)
    assert gated.candidates("hin", ["g1", "g2"])["nearest"] == ("g2",)


def test_without_the_gate_a_group_is_borrowed_only_within_route_to_nearest():
    assert "nearest" not in router().candidates("fra", ["g1"])  # no limit set: never
    assert router(route_to_nearest=0.4).candidates("fra", ["g1"])["nearest"] == ("g1",)  # at the limit: within
    assert "nearest" not in router(route_to_nearest=0.39).candidates("fra", ["g1"])
    assert "nearest" in router(gated=True, route_to_nearest=0.1).candidates("fra", ["g1"])  # the gate judges on dev
    assert "nearest" not in Router(GROUPS, None, gated=True).candidates("fra", ["g1"])  # no typology: never


def test_the_default_route_is_the_most_specific_candidate():
    hierarchical = router(hierarchical=True, route_to_nearest=0.5)
    assert hierarchical.default("fra", ["shared", "g1", "g2"]) == ("shared", "g2")  # own
    assert hierarchical.default("fra", ["shared", "g1"]) == ("shared", "g1")  # nearest
    assert hierarchical.default("hin", ["shared", "g1"]) == ("shared",)  # g1 at 0.7: too far
    assert router(route_to_nearest=0.5).default("hin", ["g1"]) == PREVIOUS


def test_a_new_language_borrows_the_nearest_group_within_the_limit_else_the_shared_module():
    modules = ["shared", "g1", "g2"]
    close = {"deu": 0.3, "nld": 0.5, "fra": 0.2, "spa": 0.9, "hin": 0.1}
    assert router().for_new_language("ltz", modules, close) == ("g1",)  # g1 0.4, g2 0.55; g3 has no module
    far = {lang: NEW_LANGUAGE_MAX_DISTANCE + 0.01 for lang in GROUPS}
    assert router().for_new_language("ltz", modules, far) == PREVIOUS
    assert router(hierarchical=True).for_new_language("ltz", modules, far) == ("shared",)
    assert router(route_to_nearest=0.6).for_new_language("ltz", modules, far) == ("g1",)  # its own limit; tie: g1
    edge = {lang: NEW_LANGUAGE_MAX_DISTANCE for lang in GROUPS}
    assert router().for_new_language("ltz", ["g2"], edge) == ("g2",)  # at the limit: within
    assert router(hierarchical=True).for_new_language("ltz", ["g3"], far) == PREVIOUS  # no shared module trained


# ------------------------------------------------------------------------------------------------ the gate


def gate_on(dev_scores: dict[str, dict[str, float]], candidates, confidence=None):
    """``gated_routes`` where language ``lang`` scores ``dev_scores[lang][route name]`` on dev (10 items, the first
    ones right); returns the routes, the record and how many evaluations ran."""
    evaluations = []

    def evaluate_languages(model, task, data, batch_size):
        evaluations.append(dict(model.routes))
        out = {}
        for lang in data:
            score = dev_scores[lang][route_name(model.routes[lang])]
            items = [1.0] * round(10 * score) + [0.0] * (10 - round(10 * score))
            out[lang] = ({"accuracy": score}, items)
        return out

    task = SimpleNamespace(primary_metric="accuracy", item_scores=lambda examples, predictions: predictions)
    ctx = SimpleNamespace(task=task, dev={lang: ([], []) for lang in candidates}, seed=0,
                          training=SimpleNamespace(eval_batch_size=8))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cml.strategies.modular.gate.evaluate_languages", evaluate_languages)
        routes, record = gated_routes(SimpleNamespace(routes={}), candidates, ctx, confidence)
    return routes, record, evaluations


def test_the_gate_takes_the_best_dev_score_and_keeps_the_previous_model_on_a_tie():
    candidates = {"deu": {"previous": (), "nearest": ("g2",), "own": ("g1",)},
                  "fra": {"previous": (), "own": ("g2",)},
                  "hin": {"previous": (), "nearest": ("g1",)}}
    dev = {"deu": {"previous": 0.5, "g2": 0.7, "g1": 0.7},  # nearest and own tie above previous: nearest
           "fra": {"previous": 0.6, "g2": 0.6},  # a tie with the previous model: it stays
           "hin": {"previous": 0.4, "g1": 0.3}}
    routes, record, evaluations = gate_on(dev, candidates)
    assert routes == {"deu": ("g2",), "fra": PREVIOUS, "hin": PREVIOUS}
    assert record == {"deu": {"choice": "nearest", "route": "g2",
                              "dev": {"previous:previous": 0.5, "nearest:g2": 0.7, "own:g1": 0.7}},
                      "fra": {"choice": "previous", "route": "previous",
                              "dev": {"previous:previous": 0.6, "own:g2": 0.6}},
                      "hin": {"choice": "previous", "route": "previous",
                              "dev": {"previous:previous": 0.4, "nearest:g1": 0.3}}}
    # one evaluation per kind, every language that has it routed to it at once, most conservative kind first
    assert evaluations == [{"deu": (), "fra": (), "hin": ()}, {"deu": ("g2",), "hin": ("g1",)},
                           {"deu": ("g1",), "fra": ("g2",)}]


def test_with_a_confidence_the_gate_records_the_lower_bounds_and_keeps_small_gains_off():
    candidates = {"deu": {"previous": (), "own": ("g1",)}}
    _, record, _ = gate_on({"deu": {"previous": 0.5, "g1": 0.6}}, candidates, confidence=0.9)
    assert record["deu"]["choice"] == "previous" and record["deu"]["dev_gain_low"]["own"] <= 0
    routes, record, _ = gate_on({"deu": {"previous": 0.1, "g1": 1.0}}, candidates, confidence=0.9)
    assert routes == {"deu": ("g1",)} and record["deu"]["dev_gain_low"]["own"] > 0


# ------------------------------------------------------------------------------------------------ the modules


@pytest.fixture
def plain(tiny_backbone):
    from cml.config import ModelConfig
    from cml.task_family import TaskFamily
    from cml.tasks import make_task

    task = make_task(TaskFamily.classification, ["food", "music", "sport"], ModelConfig(name=tiny_backbone))
    task.languages = ["deu", "fra"]
    return task, RoutedModel(task.build_model(), task.languages)


def test_modules_are_added_once_alike_and_train_alone(plain):
    from cml.config import LoraOptions
    from cml.strategies.modular.modules import add_modules, module_state, train_only, trained_modules

    task, model = plain
    assert trained_modules(model) == []
    options = LoraOptions(r=2, target_modules=["query"])
    add_modules(model, ["g2", "g1"], options, task, seed=0)
    add_modules(model, ["g1", "shared"], LoraOptions(r=8), task, seed=0)  # later modules follow the first ones
    assert trained_modules(model) == ["g1", "g2", "shared"]
    configs = model.model.peft_config
    assert {name: (config.r, sorted(config.target_modules)) for name, config in configs.items()} == {
        name: (2, ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query"])
        for name in ("g1", "g2", "shared")}

    train_only(model, ["g1"])
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and all(".g1." in name for name in trainable)
    assert any("modules_to_save.g1." in name for name in trainable)  # its own copy of the head
    train_only(model, [])
    assert not any(parameter.requires_grad for parameter in model.parameters())
    saved = module_state(model)
    assert saved and all("lora_" in key or "modules_to_save" in key for key in saved)


def test_a_module_added_to_loaded_modules_trains(plain):
    """A release's adapters load for inference; a module the next update adds must not inherit that."""
    from cml.config import LoraOptions
    from cml.strategies.modular.modules import add_modules

    task, model = plain
    add_modules(model, ["g1"], LoraOptions(r=2, target_modules=["query"]), task, seed=0)
    model.model.peft_config["g1"].inference_mode = True  # as PeftModel.from_pretrained leaves it
    add_modules(model, ["g2"], LoraOptions(), task, seed=0)
    assert not model.model.peft_config["g2"].inference_mode and model.model.peft_config["g2"].r == 2


def test_restore_rebuilds_the_modules_and_parses_the_recorded_routes(plain):
    from cml.config import ModularConfig
    from cml.strategies.laft_uriel import LaftUriel

    task, model = plain
    lora = {"r": 2, "target_modules": ["query"]}
    strategy = LaftUriel(ModularConfig(method="laft_uriel", hierarchical=True, lora=lora))
    record = {"groups": {"deu": "g1", "fra": "g2"}, "modules": ["g1", "shared"],
              "routes": {"deu": "shared+g1", "fra": "shared"}}
    restored = strategy.restore(model, record, SimpleNamespace(task=task, seed=0))
    assert restored.routes == {"deu": ("shared", "g1"), "fra": ("shared",)}
    assert strategy.trained_modules(restored) == ["g1", "shared"] and strategy.deployed_modules == ["g1", "shared"]
    assert strategy.groups == record["groups"]

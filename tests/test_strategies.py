import json

import pytest
import torch
from helpers import PairDistances, gate_with_dev_items, grouped_strategy, load_benchmark, write_config
from tiny import write_topic_data

from cml.config import ModelConfig, load_config
from cml.data.examples import Example
from cml.experiment import Experiment
from cml.routing import RoutedModel
from cml.task_family import TaskFamily
from cml.tasks import make_task

LANGS = ["deu", "fra", "hin"]


@pytest.fixture
def routed(tiny_backbone):
    from peft import LoraConfig, get_peft_model

    task = make_task(TaskFamily.classification, ["food", "music", "sport"], ModelConfig(name=tiny_backbone))
    task.languages = LANGS
    torch.manual_seed(0)
    model = task.build_model()
    # init_lora_weights=False: random B matrices, so each module really changes the outputs
    config = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False, modules_to_save=["classifier"])
    peft = get_peft_model(model, config, adapter_name="a")
    peft.add_adapter("b", config)
    routed = RoutedModel(peft, LANGS, {"deu": ("a",), "fra": ("b",), "hin": ()})
    routed.eval()
    examples = [Example(str(i), lang, text=f"{lang}food{i % 4} {lang}w{i % 6}" + f" {lang}w1" * (i % 3), label="food")
                for i, lang in enumerate(["deu", "fra", "hin", "fra", "deu", "hin", "hin"])]
    return task, routed, task.batch(task.features(examples))


def test_mixed_batch_equals_each_group_alone(routed):
    task, model, batch = routed
    mixed = model(**batch).logits
    for lang in LANGS:
        rows = (batch["lang_ids"] == LANGS.index(lang)).nonzero().flatten()
        alone = model(**{k: v[rows] for k, v in batch.items()}).logits
        assert torch.allclose(mixed[rows], alone, atol=1e-6)
    # the routes really differ: module a and the base model disagree on the same rows
    rows = (batch["lang_ids"] == 0).nonzero().flatten()
    model.routes["deu"] = ()
    assert not torch.allclose(model(**{k: v[rows] for k, v in batch.items()}).logits, mixed[rows])


def test_a_merged_route_serves_the_same_and_unmerges_bit_for_bit(routed):
    task, model, batch = routed
    rows = {lang: (batch["lang_ids"] == LANGS.index(lang)).nonzero().flatten() for lang in LANGS}
    alone = {lang: {k: v[rows[lang]] for k, v in batch.items()} for lang in LANGS}
    expected = {lang: model(**alone[lang]).logits for lang in LANGS}
    def weights():  # the network's weights as they are, merged or not (RoutedModel.state_dict unmerges first)
        return {k: v for k, v in model.model.state_dict().items() if "base_layer" in k}

    base_weights = {k: v.clone() for k, v in weights().items()}

    model.merge(("a",))  # deu's module folded into the base weights
    changed = [k for k, v in weights().items() if not torch.equal(v, base_weights[k])]
    assert changed and all("query" in k or "value" in k for k in changed)
    assert torch.allclose(model(**alone["deu"]).logits, expected["deu"], atol=1e-5)
    # Another route, a mixed batch, or the previous model: the base weights come back exactly.
    for lang in ("fra", "hin"):
        model.merge(("a",))
        assert torch.equal(model(**alone[lang]).logits, expected[lang])
    model.merge(("b",))
    model.merge(("a",))
    mixed = model(**batch).logits
    for lang in LANGS:
        assert torch.allclose(mixed[rows[lang]], expected[lang], atol=1e-6)
    assert all(torch.equal(v, base_weights[k]) for k, v in weights().items())
    model.merge(("b",))
    stored = model.state_dict()  # a stored model never holds a merged route
    assert all(torch.equal(stored[f"model.{k}"], v) for k, v in base_weights.items()) and model.merged_route == ()
    model.merge(("b",))
    model.train()  # training never sees merged weights
    assert all(torch.equal(v, base_weights[k]) for k, v in weights().items())
    with pytest.raises(RuntimeError, match="inference"):
        model.merge(("a",))


def test_new_modules_start_the_same_whatever_ran_before(tiny_backbone):
    from cml.config import ModularConfig
    from cml.strategies import make_strategy

    task = make_task(TaskFamily.classification, ["food", "music", "sport"], ModelConfig(name=tiny_backbone))
    task.languages = LANGS
    starts = []
    for earlier_draws in (1, 1000):
        torch.manual_seed(0)
        model = RoutedModel(task.build_model(), LANGS)
        torch.rand(earlier_draws)  # what other strategies' training left in the global generator
        strategy = make_strategy(ModularConfig(method="laft_uriel", lora={"r": 2, "target_modules": ["query"]}))
        strategy.ensure_modules(model, ["g1", "g2"], task, seed=1)
        starts.append({k: v for k, v in model.state_dict().items() if "lora_A" in k})
    assert len(starts[0]) == 4 and all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
    assert not torch.equal(*(v for k, v in starts[0].items() if "layer.0." in k))  # g1 and g2 differ


def test_gradients_reach_only_the_modules_a_row_used(routed):
    task, model, batch = routed
    model.train()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name or "modules_to_save" in name)
    rows = (batch["lang_ids"] != 1).nonzero().flatten()  # deu (module a) and hin (base): no fra row
    model(**{k: v[rows] for k, v in batch.items()}).loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".a." in n)
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if ".b." in n)


@pytest.fixture(scope="module")
def strategy_run(tmp_path_factory, tiny_backbone):
    tmp_path = tmp_path_factory.mktemp("strategies")
    write_topic_data(tmp_path / "data", n=(72, 12, 12))
    lora = {"r": 4, "target_modules": ["query", "value"]}
    path = write_config(
        tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
        model={"name": tiny_backbone, "max_length": 32, "freeze_embeddings": False},
        training={"epochs": 6, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0},
        update_training={"epochs": 2},
        stream={"stages": [{"name": "initial", "amount": 48}, {"name": "update", "languages": ["hin"], "amount": 24}]},
        strategies=[{"method": "full_finetune"}, {"method": "lora_shared", "lora": lora},
                    {"method": "lora_per_language", "lora": lora},
                    {"method": "laft_uriel", "lora": lora, "n_groups": 2},
                    {"method": "laft_uriel", "name": "laft_uriel_hier", "lora": lora, "n_groups": 2,
                     "hierarchical": True, "route_to_nearest": 0.9, "gate": False},
                    {"method": "laft_random", "lora": lora, "n_groups": 2},
                    {"method": "laft_uriel", "name": "laft_uriel_strict", "lora": lora, "n_groups": 2,
                     "gate_confidence": 0.999},
                    {"method": "laft_uriel", "name": "laft_uriel_ungated", "lora": lora, "n_groups": 2, "gate": False}])
    return Experiment(load_config(path)).run(), tmp_path


def test_every_strategy_scores_every_language(strategy_run):
    results, _ = strategy_run
    assert list(results["strategies"]) == ["full_finetune", "lora_shared", "lora_per_language", "laft_uriel",
                                           "laft_uriel_hier", "laft_random", "laft_uriel_strict",
                                           "laft_uriel_ungated"]
    for entry in results["strategies"].values():
        assert [s["index"] for s in entry["stages"]] == [0, 1]
        assert set(entry["stages"][1]["scores"]) == set(LANGS)
        assert entry["stages"][0]["scores"] == results["stages"][0]["scores"]


def test_routes_follow_groups(strategy_run):
    results, _ = strategy_run
    stages = {name: entry["stages"][1] for name, entry in results["strategies"].items()}
    assert stages["lora_shared"]["routes"] == {lang: "all" for lang in LANGS}
    assert stages["lora_per_language"]["modules"] == ["hin"]
    hier = stages["laft_uriel_hier"]
    hin_group = hier["groups"]["hin"]
    assert hier["routes"]["hin"] == f"shared+{hin_group}"
    # deu and fra are not in hin's group: shared module, or hin's group when within route_to_nearest
    assert all(hier["routes"][lang] in ("shared", f"shared+{hin_group}") for lang in ("deu", "fra"))
    assert hier["stored_bytes"] < stages["full_finetune"]["stored_bytes"]


GATE_GROUPS = {"deu": "g1", "nld": "g1", "fra": "g2", "spa": "g2", "hin": "g3"}
GATE_DISTANCES = PairDistances({("hin", "deu"): 0.6, ("hin", "nld"): 0.6})  # hin's nearest trained group: g1


def hits(right: int, n: int = 10) -> list[float]:
    """Item scores of a dev set of ``n`` items, ``right`` of them right (the first ones: pairs line up)."""
    return [1.0] * right + [0.0] * (n - right)


def test_gate_never_picks_a_route_with_a_worse_dev_score(monkeypatch):
    """g1 and g2 trained. Dev accuracy per language and route (the own group, the other group as the nearest, the
    previous model): the gate moves deu (own best), fra (nearest and own tied: the nearest is more conservative)
    and hin (its group untrained: nearest best); it keeps nld (all tied) and spa (the previous model best)."""
    dev_items = {"deu": {(): hits(5), ("g2",): hits(6), ("g1",): hits(8)},
                 "nld": {(): hits(6), ("g2",): hits(6), ("g1",): hits(6)},
                 "fra": {(): hits(5), ("g1",): hits(7), ("g2",): hits(7)},
                 "spa": {(): hits(7), ("g1",): hits(5), ("g2",): hits(6)},
                 "hin": {(): hits(4), ("g1",): hits(6)}}
    strategy = grouped_strategy(GATE_GROUPS, GATE_DISTANCES)
    routes, gate, evaluated = gate_with_dev_items(monkeypatch, strategy, ["g1", "g2"], dev_items)
    assert routes == {"deu": ("g1",), "nld": (), "fra": ("g1",), "spa": (), "hin": ("g1",)}
    assert {lang: record["choice"] for lang, record in gate.items()} == {
        "deu": "own", "nld": "previous", "fra": "nearest", "spa": "previous", "hin": "nearest"}
    assert gate["fra"] == {"choice": "nearest", "route": "g1",
                           "dev": {"previous:previous": 0.5, "nearest:g1": 0.7, "own:g2": 0.7}}
    # every candidate of every language was scored once, on its own route
    assert sorted(evaluated) == sorted((lang, route) for lang, items in dev_items.items() for route in items)


def test_gate_confidence_needs_a_significant_dev_gain(monkeypatch):
    from cml.strategies.modular.gate import gate_choice

    previous = [1.0] * 60 + [0.0] * 40
    one_better = [1.0] * 61 + [0.0] * 39  # +1 point: one item
    far_better = [1.0] * 90 + [0.0] * 10  # +30 points
    scores = {"previous": 0.60, "nearest": 0.61, "own": 0.90}
    items = {"previous": previous, "nearest": one_better, "own": far_better}
    assert gate_choice(scores, items, None) == ("own", {})
    assert gate_choice({"previous": 0.60, "nearest": 0.61}, items, None)[0] == "nearest"
    choice, lows = gate_choice({"previous": 0.60, "nearest": 0.61}, items, 0.9)
    assert choice == "previous" and lows["nearest"] <= 0
    choice, lows = gate_choice(scores, items, 0.9)
    assert choice == "own" and lows["own"] > 0.15
    # a corpus-level primary metric shifts the bounds by its difference from the item mean
    assert gate_choice({"previous": 0.50, "own": 0.52}, items, 0.9)[0] == "previous"

    # In the gate, on 40 dev items: deu's own group and hin's nearest gain 16 and 20 items and move; fra's
    # routes gain one item each, which a plain argmax takes and the confidence filter does not.
    dev_items = {"deu": {(): hits(20, 40), ("g2",): hits(21, 40), ("g1",): hits(36, 40)},
                 "fra": {(): hits(20, 40), ("g1",): hits(21, 40), ("g2",): hits(21, 40)},
                 "hin": {(): hits(10, 40), ("g1",): hits(30, 40)}}
    strategy = grouped_strategy(GATE_GROUPS, GATE_DISTANCES)
    assert gate_with_dev_items(monkeypatch, strategy, ["g1", "g2"], dev_items)[0]["fra"] == ("g1",)
    strict = grouped_strategy(GATE_GROUPS, GATE_DISTANCES, gate_confidence=0.9)
    routes, gate, _ = gate_with_dev_items(monkeypatch, strict, ["g1", "g2"], dev_items)
    assert routes == {"deu": ("g1",), "fra": (), "hin": ("g1",)}
    assert {lang: set(record["dev_gain_low"]) for lang, record in gate.items()} == {
        "deu": {"nearest", "own"}, "fra": {"nearest", "own"}, "hin": {"nearest"}}
    assert gate["deu"]["dev_gain_low"]["own"] > 0 and gate["hin"]["dev_gain_low"]["nearest"] > 0
    assert max(gate["fra"]["dev_gain_low"].values()) <= 0


def test_languages_left_on_the_previous_model_keep_its_predictions_exactly(strategy_run):
    """An ungated update on Hindi trains hin's group only; deu and fra, in the other group and with no
    route_to_nearest, stay on the previous model: their logits after the update are the stage-0 model's, bit for bit,
    while hin's change."""
    from cml.predict import Predictor

    results, tmp_path = strategy_run
    stage = results["strategies"]["laft_uriel_ungated"]["stages"][1]
    hin_group = stage["groups"]["hin"]
    assert hin_group not in (stage["groups"]["deu"], stage["groups"]["fra"])  # the clustering the case needs
    assert stage["routes"] == {"deu": "previous", "fra": "previous", "hin": hin_group}
    assert {lang: stage["scores"][lang] for lang in ("deu", "fra")} == \
        {lang: results["stages"][0]["scores"][lang] for lang in ("deu", "fra")}

    run = tmp_path / "runs" / "t"
    before = Predictor.from_run(run, stage=0)
    after = Predictor.from_run(run, strategy="laft_uriel_ungated")
    task = after.task

    def logits(predictor, langs):
        examples = [Example(f"{lang}{i}", lang, text=f"{lang}{topic}{i % 4} {lang}w{i % 6} {lang}w{(i + 2) % 6}",
                            label=topic) for lang in langs for i, topic in enumerate(["food", "music", "sport"] * 2)]
        with torch.no_grad():
            return predictor.model(**task.batch(task.features(examples))).logits

    assert torch.equal(logits(after, ["deu", "fra"]), logits(before, ["deu", "fra"]))
    assert not torch.allclose(logits(after, ["hin"]), logits(before, ["hin"]), atol=1e-4)


def test_gate_replay_reverts_moves_below_the_minimum_dev_gain(strategy_run, tmp_path):
    """benchmarks/gate_replay.py: a bar of 0 reproduces the run's own figures; a higher bar sends exactly the
    languages whose dev gain is below it back to the previous model (change 0) and keeps the others' changes."""
    import shutil
    from statistics import mean

    from cml.errors import CMLError

    results, run_root = strategy_run
    script = load_benchmark("gate_replay")
    summary = results["summary"]
    reference_after = summary["full_finetune"]["update"]["aggregate_after"]
    rows = script.replay(run_root / "runs" / "t", [0], None)
    gated = {name for name, entry in results["strategies"].items() if entry["stages"][1].get("gate")}
    assert {"laft_uriel", "laft_uriel_strict"} <= gated and {row["strategy"] for row in rows} == gated
    for row in rows:
        figures = summary[row["strategy"]]["update"]
        assert row["moves_reverted"] == 0
        assert (row["n_improved"], row["n_degraded"], row["n_significant_degraded"]) == (
            figures["n_improved"], figures["n_degraded"], figures["n_significant_degraded"])
        assert row["loss_magnitude_reduction"] == figures["vs_reference"]["loss_magnitude_reduction"]
        assert row["after_vs_reference_pp"] == pytest.approx(100 * (figures["aggregate_after"] - reference_after))

    # The tiny run's gates keep every language on the previous model, so give the ungated hierarchical variant
    # (whose routes do change predictions) a recorded gate with dev gains of 0.5, 1.5 and 3 points.
    run_dir = tmp_path / "run"
    shutil.copytree(run_root / "runs" / "t", run_dir)
    state_path = next((run_dir / "stages" / "laft_uriel_hier").glob("1-*/state.json"))
    state = json.loads(state_path.read_text())
    routes = state["record"]["routes"]
    gains = {"deu": 0.005, "fra": 0.015, "hin": 0.03}
    state["record"]["gate"] = {lang: {"choice": "own", "route": routes[lang],
                                      "dev": {"previous:previous": 0.5, f"own:{routes[lang]}": 0.5 + gain}}
                               for lang, gain in gains.items()}
    state_path.write_text(json.dumps(state))
    changes = summary["laft_uriel_hier"]["update"]["languages"]
    replayed = {row["min_gain"]: row for row in script.replay(run_dir, [0, 1, 2, 5], ["laft_uriel_hier"])}
    for bar, kept in ((0, LANGS), (1, ["fra", "hin"]), (2, ["hin"]), (5, [])):
        row, deltas = replayed[bar], [changes[lang]["delta"] for lang in kept]
        assert row["moves_reverted"] == len(LANGS) - len(kept)
        assert (row["n_improved"], row["n_degraded"]) == (sum(d > 0 for d in deltas), sum(d < 0 for d in deltas))
        after = mean(changes[lang]["after" if lang in kept else "before"] for lang in LANGS)
        assert row["after_vs_reference_pp"] == pytest.approx(100 * (after - reference_after))

    # --moves on a real run: each moved language with its route kind and its test change as the run measured it;
    # deu made a borrowed move here, fra stayed on the previous model
    state["record"]["gate"]["deu"]["choice"] = "nearest"
    state["record"]["gate"]["deu"]["dev"] = {"previous:previous": 0.5, f"nearest:{routes['deu']}": 0.505}
    state["record"]["gate"]["fra"]["choice"] = "previous"
    state_path.write_text(json.dumps(state))
    moved = script.moves(run_dir, ["laft_uriel_hier"])
    updated = set(state["record"]["updated_languages"])
    assert [(row["language"], row["kind"], row["in_update"]) for row in moved] == [
        ("deu", "nearest", "deu" in updated), ("hin", "own", "hin" in updated)]
    assert [row["delta_pp"] for row in moved] == pytest.approx([100 * changes[lang]["delta"] for lang in ("deu", "hin")])
    assert [row["significant_loss"] for row in moved] == [changes[lang]["ci_high"] < 0 for lang in ("deu", "hin")]
    # a strategy a run lacks is skipped with --moves (runs of a benchmark hold different strategies)
    assert script.main(["--moves", str(run_dir), "--strategies", "laft_uriel_hier", "laft_absent",
                        "--json", str(tmp_path / "moves.json")]) == 0
    written = json.loads((tmp_path / "moves.json").read_text())
    assert written["moves"] == moved and written["by_kind"] == script.moves_by_kind(moved)
    assert written["strategies"] == ["laft_uriel_hier", "laft_absent"]

    with pytest.raises(CMLError, match="no gated stage records"):
        script.replay(run_dir, [0], ["full_finetune"])
    assert script.main([str(run_dir), str(run_dir), "--min-gain", "0", "2", "--json", str(tmp_path / "r.json")]) == 0
    written = json.loads((tmp_path / "r.json").read_text())
    assert len(written["runs"]) == 2 * 2 * (len(gated) + 1)
    assert {row["runs"] for row in written["overall"]} == {2}


def test_gate_moves_are_counted_per_route_kind_and_per_run_and_language():
    """gate_replay.moves_by_kind: up, down and unchanged by the sign of each move's test change, significant losses
    as flagged, and each (run, language) counted once in the last columns, by the mean of its moves."""
    script = load_benchmark("gate_replay")

    def move(run, lang, kind, delta, significant=False, in_update=False):
        return {"run": run, "strategy": "s", "language": lang, "kind": kind, "in_update": in_update,
                "delta_pp": delta, "significant_loss": significant}

    rows = [move("r0", "deu", "nearest", -0.5, significant=True), move("r0", "deu", "nearest", 0.2),
            move("r1", "deu", "nearest", 0.3), move("r0", "fra", "nearest", 0.0),
            move("r0", "spa", "own", 1.0, in_update=True), move("r0", "ita", "own", -0.25)]
    by_kind = {(row["kind"], row["in_update"]): row for row in script.moves_by_kind(rows)}
    assert list(by_kind) == [("nearest", False), ("own", False), ("own", True)]
    nearest = by_kind["nearest", False]
    assert (nearest["moves"], nearest["up"], nearest["down"], nearest["unchanged"]) == (4, 2, 1, 1)
    assert nearest["significant_losses"] == 1 and nearest["mean_delta_pp"] == pytest.approx(0.0)
    # (r0, deu) averages -0.15: down; (r1, deu) up; (r0, fra) neither
    assert (nearest["languages"], nearest["languages_up"], nearest["languages_down"]) == (3, 1, 1)
    assert (by_kind["own", False]["down"], by_kind["own", False]["languages_down"]) == (1, 1)
    assert (by_kind["own", True]["up"], by_kind["own", True]["mean_delta_pp"]) == (1, 1.0)


def test_uriel_groups_put_romance_languages_together(strategy_run):
    """Four families of two to four languages each, in mixed order, clustered into four groups: any grouping that
    misreads the distances, or maps a cluster label back to the wrong language, splits one of them."""
    from cml.config import ModularConfig
    from cml.strategies.laft_uriel import LaftUriel

    families = [{"fra", "spa", "por", "ita"}, {"deu", "eng", "nld", "swe"}, {"rus", "pol", "ces"}, {"hin", "ben"}]
    languages = ["ita", "deu", "hin", "pol", "fra", "swe", "ben", "rus", "eng", "spa", "ces", "nld", "por"]
    groups = LaftUriel(ModularConfig(method="laft_uriel", n_groups=4)).assign_groups(languages)
    clusters = {}
    for lang, group in groups.items():
        clusters.setdefault(group, set()).add(lang)
    assert sorted(map(sorted, clusters.values())) == sorted(map(sorted, families))

    # laft_random draws groups of the sizes laft_uriel made
    results, _ = strategy_run
    groups = results["strategies"]["laft_uriel"]["stages"][1]["groups"]
    random_groups = results["strategies"]["laft_random"]["stages"][1]["groups"]
    assert sorted(map(list(groups.values()).count, set(groups.values()))) == \
        sorted(map(list(random_groups.values()).count, set(random_groups.values())))


def test_max_group_size_reaches_the_groups():
    from cml.config import ModularConfig
    from cml.strategies.laft_uriel import LaftUriel

    languages = "deu eng swe isl fra spa por ita ces pol rus".split()
    for cap, largest in ((None, 11), (4, 4)):
        strategy = LaftUriel(ModularConfig(method="laft_uriel", n_groups=1, max_group_size=cap))
        groups = list(strategy.assign_groups(languages).values())
        assert max(map(groups.count, set(groups))) == largest


def test_predict_keeps_order_and_routes_outside_languages(strategy_run):
    from cml.predict import Predictor, read_inputs

    results, tmp_path = strategy_run
    lines = ['{"text": "deufood1 deuw2", "lang": "de"}', "hinsport2 hinw1", '{"text": "frafood0", "lang": "fr"}',
             '{"text": "deumusic1 deuw0", "lang": "es"}']
    items = list(read_inputs(lines, "hi", None))
    assert [i["lang"] for i in items] == ["deu", "hin", "fra", "spa"]
    for strategy in ("full_finetune", "laft_uriel_hier"):
        predictor = Predictor.from_run(tmp_path / "runs" / "t", strategy=strategy)
        out = list(predictor.predict(items, chunk=3))
        assert [o["text"] for o in out] == [i["text"] for i in items]
        assert all(o["prediction"] in ("food", "music", "sport") for o in out)
        assert out[3]["served"] == "outside the run"
    alone = list(predictor.predict([items[0], items[0]]))  # one route serves the whole chunk: merged
    assert predictor.model.merged_route and [o["prediction"] for o in alone] == [out[0]["prediction"]] * 2
    assert out[1]["route"] == results["strategies"]["laft_uriel_hier"]["stages"][1]["routes"]["hin"]
    assert out[3]["route"] != "previous"  # hierarchical: at least the shared module
    stage0 = list(Predictor.from_run(tmp_path / "runs" / "t", stage=0).predict(items))
    assert {o["route"] for o in stage0} == {"previous"}


def test_language_detector_on_real_sentences():
    from cml.predict import LanguageDetector

    detect = LanguageDetector()
    assert detect("Der Hund läuft schnell über die Straße und bellt.")[0] == "deu"
    assert detect("El perro corre rápidamente por la calle.")[0] == "spa"
    restricted = LanguageDetector(["deu", "fra"])
    assert restricted("El perro corre rápidamente por la calle.")[0] in ("deu", "fra")

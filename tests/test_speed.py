"""The speed-ups change no prediction: the frozen prefix run once per batch, or once per update."""

import json

import pytest
import yaml
import torch
from tiny import LANGS as TINY_LANGS

from cml.config import ModelConfig
from cml.data.examples import Example
from cml.routing import RoutedModel
from cml.task_family import TaskFamily
from cml.tasks import make_task
from cml.training.trainer import make_accelerator, train

LANGS = list(TINY_LANGS)


def examples(n: int = 24) -> list[Example]:
    topics = ("food", "music", "sport")
    return [Example(str(i), LANGS[i % 3], text=f"{LANGS[i % 3]}{topics[i % 3 - 1]}{i % 4} {LANGS[i % 3]}w{i % 6}"
                    + f" {LANGS[i % 3]}w1" * (i % 4), label=topics[i % 3 - 1]) for i in range(n)]


def routed_model(tiny_backbone, layers=(1,), dropout: float | None = None):
    """Two modules, a and b, on the tiny backbone's upper layer (or ``layers``), with random B matrices so each
    changes the outputs; hin keeps the previous model."""
    from peft import LoraConfig, get_peft_model

    task = make_task(TaskFamily.classification, ["food", "music", "sport"], ModelConfig(name=tiny_backbone))
    task.languages = LANGS
    torch.manual_seed(0)
    model = task.build_model()
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
    config = LoraConfig(r=4, target_modules=["query", "value"], layers_to_transform=list(layers),
                        init_lora_weights=False, modules_to_save=["classifier"], lora_dropout=dropout or 0.0)
    peft = get_peft_model(model, config, adapter_name="a")
    peft.add_adapter("b", config)
    return task, RoutedModel(peft, LANGS, {"deu": ("a",), "fra": ("b",), "hin": ()})


def each_route_alone(model, batch):
    """The logits of each row computed the old way: every route's rows through the whole network alone."""
    prefix, model._prefix = model._prefix, (id(model.model), None)
    logits = torch.empty(len(batch["input_ids"]), 3)
    for lang in LANGS:
        rows = (batch["lang_ids"] == LANGS.index(lang)).nonzero().flatten()
        logits[rows] = model(**{k: v[rows] for k, v in batch.items()}).logits
    model._prefix = prefix
    return logits


def test_the_prefix_is_the_layers_below_the_lowest_adapted_one(tiny_backbone):
    _, upper_only = routed_model(tiny_backbone, layers=(1,))
    assert upper_only.frozen_prefix is not None and upper_only.frozen_prefix.depth == 1
    _, every_layer = routed_model(tiny_backbone, layers=(0, 1))
    assert every_layer.frozen_prefix is None  # nothing below the adapted layers to share


def test_a_mixed_batch_runs_the_prefix_once_and_predicts_the_same(tiny_backbone):
    task, model = routed_model(tiny_backbone)
    model.eval()
    batch = task.batch(task.features(examples()))
    calls = []
    model.frozen_prefix.stack[0].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        shared = model(**batch).logits
        assert len(calls) == 1  # once for the three routes
        alone = each_route_alone(model, batch)
    assert len(calls) == 4
    assert torch.allclose(shared, alone, atol=1e-5)
    assert torch.equal(shared.argmax(-1), alone.argmax(-1))


@pytest.mark.parametrize("stacked", [False, True])
def test_a_mixed_batch_trains_in_one_pass_with_the_gradients_of_routes_apart(tiny_backbone, monkeypatch, stacked):
    """A training batch of three routes runs each layer once (the modules' products added on their rows), and its
    loss and every module's gradient equal those of running each route's rows apart, to float rounding (no
    dropout: the same computation). A stacked route (two modules in one layer) runs routes apart."""
    outcomes = []
    for one_pass in (True, False):
        if not one_pass:
            monkeypatch.setattr(RoutedModel, "_one_pass_supported", lambda self, groups: False)
        task, model = routed_model(tiny_backbone, dropout=0.0)
        if stacked:
            model.routes["fra"] = ("a", "b")
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("lora_" in name or "modules_to_save" in name)
        model.train()
        calls = []
        model.frozen_prefix.stack[1].register_forward_hook(lambda *args: calls.append(1))
        output = model(**task.batch(task.features(examples())))
        output.loss.backward()
        outcomes.append((len(calls), output.loss.detach(), output.logits.detach(),
                         {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (calls, loss, logits, grads), (apart_calls, apart_loss, apart_logits, apart_grads) = outcomes
    assert (calls, apart_calls) == ((3, 3) if stacked else (1, 3))
    assert grads.keys() == apart_grads.keys() and any("lora_B.b" in name for name in grads)
    torch.testing.assert_close(loss, apart_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits, apart_logits, atol=1e-5, rtol=0)
    for name in grads:
        torch.testing.assert_close(grads[name], apart_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_model_whose_adapted_layers_see_more_than_the_rows_runs_mixed_routes_apart(monkeypatch):
    """DeBERTa-v2 runs its query and key projections on the relative-position table too, which no route owns: a
    mixed batch then runs its routes apart (once found, from then on), as it did before the one-pass forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=32, relative_attention=True, pos_att_type=["p2c", "c2p"],
                             share_att_key=True, position_buckets=8, num_labels=3, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    lora = LoraConfig(r=2, target_modules=["query_proj", "key_proj"], init_lora_weights=False, modules_to_save=["classifier"])
    peft = get_peft_model(DebertaV2ForSequenceClassification(config), lora, adapter_name="a")
    peft.add_adapter("b", lora)
    model = RoutedModel(peft, ["x", "y", "z"], {"x": ("a",), "y": ("b",)})
    ids = torch.randint(5, 50, (4, 7))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "lang_ids": torch.tensor([0, 1, 2, 0])}
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
        assert model._split_only == id(model.model)
        monkeypatch.setattr(RoutedModel, "_one_pass_supported", lambda self, groups: False)
        assert torch.equal(logits, model(**batch).logits)
    layers, heads = model._tuner_modules()
    assert not any(layer._forward_hooks for layer in [*layers, *heads])  # the failed pass left no hook behind


def test_mixed_languages_are_predicted_a_route_a_batch_merged_and_the_same(tiny_backbone):
    """Inference batches hold one language each, which its route serves with its LoRA weights merged into the
    base weights: the cost of the previous model's forward. The logits equal those of the mixed batch (every
    route beside the base weights) to 1e-5, the predictions exactly; the stored weights (state_dict) and training
    have the base weights back bit for bit."""
    from cml.evaluation.inference import predict

    task, model = routed_model(tiny_backbone)
    features = task.features(examples(36))
    base = {name: p.detach().clone() for name, p in model.named_parameters() if "base_layer" in name}
    model.eval()
    with torch.no_grad():
        mixed = model(**task.batch(features)).logits  # three routes: each beside the base weights
    routes_per_batch, merged = [], []
    forward = model.forward

    def spy(lang_ids=None, **batch):
        routes_per_batch.append(len(model._groups(lang_ids)))
        output = forward(lang_ids=lang_ids, **batch)
        merged.append(model.merged_route)
        return output

    model.forward = spy
    predictions = predict(model, task, features, batch_size=5)
    model.forward = forward
    assert set(routes_per_batch) == {1} and {("a",), ("b",), ()} == set(merged)
    assert predictions == [task.labels[i] for i in mixed.argmax(-1).tolist()]
    for lang in LANGS:
        rows = [i for i, f in enumerate(features) if f["lang"] == lang]
        with torch.no_grad():
            alone = model(**task.batch([features[i] for i in rows])).logits
        assert model.merged_route == model.route_of(lang)
        torch.testing.assert_close(alone, mixed[rows], atol=1e-5, rtol=0)
    model.merge(("b",))
    stored = model.state_dict()
    assert model.merged_route == () and all(torch.equal(stored[name], weight) for name, weight in base.items())
    model.merge(("a",))
    model.train()
    assert model.merged_route == () and all(torch.equal(p, base[name]) for name, p in model.named_parameters()
                                            if name in base)


def test_threads_sharing_a_predictor_get_what_one_thread_gets(tiny_backbone, monkeypatch):
    """Serving merges a route's LoRA weights into the shared base weights: without the Predictor's lock, a thread
    predicting fra (module b) would run on deu's merged module a (or leave it merged). A pause inside every merge
    makes the threads interleave there; the labels' probabilities (``top_k``) show which weights served."""
    import threading
    import time

    from cml.predict import Predictor

    task, model = routed_model(tiny_backbone)
    predictor = Predictor(task, model, LANGS, batch_size=4)
    inputs = {lang: [{"text": e.text, "lang": lang} for e in examples(36) if e.lang == lang] for lang in LANGS}
    alone = {lang: [out["top_k"] for out in predictor.predict(items, chunk=4, top_k=3)]
             for lang, items in inputs.items()}
    merge = RoutedModel.merge

    def slow_merge(self, route):
        merge(self, route)
        time.sleep(0.002)

    monkeypatch.setattr(RoutedModel, "merge", slow_merge)
    together, errors = {}, []

    def serve(lang):
        try:
            for _ in range(5):
                got = [out["top_k"] for out in predictor.predict(inputs[lang], chunk=4, top_k=3)]
                together.setdefault(lang, []).append(got)
        except Exception as err:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=serve, args=(lang,)) for lang in LANGS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for lang in LANGS:
        assert together[lang] == [alone[lang]] * 5, lang
    model.merge(())
    assert all(not layer.merged_adapters for layer in model._tuner_modules()[0])


def test_a_merged_model_gets_new_modules_and_loads_weights_on_its_exact_base(tiny_backbone):
    """Adding a module to a model that serves a route merged (a release updated right after scoring its parent),
    or loading weights into it, first puts the base weights back bit for bit (PEFT would subtract the update
    again); a forward that computes gradients never merges (the LoRA weights would get none)."""
    import warnings

    from cml.config import LoraOptions
    from cml.strategies.modular.modules import add_modules

    task, model = routed_model(tiny_backbone)
    base = {k: v.clone() for k, v in model.model.state_dict().items() if "base_layer" in k}
    model.eval()
    model.merge(("a",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_modules(model, ["c"], LoraOptions(), task, seed=0)
    assert model.merged_route == () and all(torch.equal(model.model.state_dict()[k], v) for k, v in base.items())
    model.merge(("a",))
    model.load_state_dict(model.state_dict())
    assert model.merged_route == () and all(torch.equal(model.model.state_dict()[k], v) for k, v in base.items())
    batch = task.batch([f for f in task.features(examples()) if f["lang"] == "deu"])
    model(**batch).loss.backward()  # eval mode, gradients on: LoRA beside the weights, so they get gradients
    assert model.merged_route == () and model.model.base_model.model.bert.encoder.layer[1].attention.self.query \
        .lora_A["a"].weight.grad is not None


def test_kept_outputs_serve_any_batching_of_the_same_rows(tiny_backbone):
    task, model = routed_model(tiny_backbone)
    model.eval()
    features = task.features(examples())
    with torch.no_grad():
        expected = model(**task.batch(features)).logits
        with model.kept_prefix(task, [features], batch_size=5):
            calls = []
            model.frozen_prefix.stack[0].register_forward_hook(lambda *args: calls.append(1))
            reordered = list(reversed(range(len(features))))
            kept = model(**task.batch([features[i] for i in reordered])).logits
            assert not calls  # the prefix did not run again
        assert model.frozen_prefix.kept is None  # nothing kept: training runs through the frozen layers
    assert torch.allclose(kept, expected[reordered], atol=1e-5)


def test_kept_outputs_are_the_frozen_layers_without_dropout(tiny_backbone):
    task, model = routed_model(tiny_backbone, dropout=0.5)
    model.train()
    features = task.features(examples())
    prefix = model.frozen_prefix
    with model.kept_prefix(task, [features], batch_size=5):
        assert model.training  # keeping switched the frozen layers to eval and back only
        batch = task.batch(features)
        kept = prefix.lower(batch)
    model.eval()
    assert torch.allclose(kept, prefix.lower(batch) * batch["attention_mask"][..., None], atol=1e-5)


def test_a_pad_token_inside_a_text_keeps_its_row_apart(tiny_backbone):
    """The mask hides a literal pad token, but it still shifts the positions after it: its row is another row."""
    task, model = routed_model(tiny_backbone)
    model.eval()
    texts = ["deuw1 [PAD] deufood2", "deuw1 deufood2"]
    features = task.features([Example(str(i), "deu", text=text, label="food") for i, text in enumerate(texts)])
    with torch.no_grad():
        through = [model(**task.batch([feature])).logits for feature in features]
        with model.kept_prefix(task, [features], batch_size=2):
            kept = [model(**task.batch([feature])).logits for feature in features]
    assert not torch.allclose(through[0], through[1])
    assert all(torch.allclose(k, t, atol=1e-5) for k, t in zip(kept, through))


def test_a_prefix_that_trains_is_never_kept(tiny_backbone):
    task, model = routed_model(tiny_backbone)
    model.get_input_embeddings().weight.requires_grad_(True)
    with model.kept_prefix(task, [task.features(examples())], batch_size=5):
        assert model.frozen_prefix.kept is None  # nothing kept: training runs through the frozen layers


@pytest.mark.parametrize("routes", [{"deu": ("a",), "fra": ("b",), "hin": ("a",)}, {lang: ("a",) for lang in LANGS}])
def test_training_on_kept_outputs_equals_training_through_the_frozen_layers(tiny_backbone, routes):
    """Without dropout the two trainings are the same computation; they differ only in the order of sums."""
    from cml.config import TrainingConfig

    features = None
    trained = []
    for keep in (False, True):
        task, model = routed_model(tiny_backbone, dropout=0.0)
        model.routes = dict(routes)
        features = task.features(examples(32))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("lora_" in name or "modules_to_save" in name)
        config = TrainingConfig(epochs=2, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, select_best=False)
        if keep:
            with model.kept_prefix(task, [features], batch_size=16):
                calls = []
                model.frozen_prefix.stack[0].register_forward_hook(lambda *args: calls.append(1))
                train(model, task, features, config, accelerator=make_accelerator(config), seed=0)
                assert not calls  # every epoch ran on the kept outputs
        else:
            train(model, task, features, config, accelerator=make_accelerator(config), seed=0)
        trained.append({k: v.clone() for k, v in model.state_dict().items() if "lora_" in k})
    assert trained[0].keys() == trained[1].keys()
    moved = [k for k in trained[0] if not torch.equal(trained[0][k], trained[1][k])]
    assert all(torch.allclose(trained[0][k], trained[1][k], atol=1e-5) for k in trained[0]), moved


@pytest.fixture(scope="module")
def dropout_free_backbone(tiny_backbone, tmp_path_factory):
    """The tiny backbone without dropout: an update on kept prefix outputs must then equal one without them."""
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("no-dropout")
    model = BertModel.from_pretrained(tiny_backbone, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(folder)
    return str(folder)


def test_a_gated_update_on_kept_outputs_routes_and_scores_as_without_them(tmp_path, dropout_free_backbone, monkeypatch):
    from helpers import write_config
    from tiny import write_topic_data

    from cml.config import load_config
    from cml.experiment import Experiment

    write_topic_data(tmp_path / "data", n=(72, 12, 12))
    lora = {"r": 4, "target_modules": ["query", "value"], "layers": [1], "dropout": 0.0}
    strategies = [{"method": "laft_uriel", "name": name, "n_groups": 2, "lora": {**lora, "cache_frozen_layers": keep},
                   "training": {"learning_rate": 3e-2}} for name, keep in (("kept", True), ("through", False))]
    path = write_config(tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
                        model={"name": dropout_free_backbone, "max_length": 32, "freeze_embeddings": False},
                        training={"epochs": 4, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0},
                        update_training={"epochs": 2},
                        stream={"stages": [{"name": "initial", "amount": 48, "per_language": {"fra": 6, "hin": 6}},
                                           {"name": "update", "languages": ["fra", "hin"], "amount": 48}]},
                        strategies=strategies)
    from cml.prefix import FrozenPrefix

    layer_calls, keeps = [], []
    keep, forget = FrozenPrefix.keep, FrozenPrefix.forget

    def counted_keep(self, *args, **kwargs):
        self.counter = self.stack[0].register_forward_hook(lambda *_: layer_calls.append(1))
        keep(self, *args, **kwargs)
        keeps.append(len(layer_calls))

    def counted_forget(self):
        self.counter.remove()
        keeps.append(len(layer_calls))
        forget(self)

    monkeypatch.setattr(FrozenPrefix, "keep", counted_keep)
    monkeypatch.setattr(FrozenPrefix, "forget", counted_forget)
    results = Experiment(load_config(path)).run()["strategies"]
    # one update kept outputs, in its batches; its training and gate never ran the frozen layer again
    assert len(keeps) == 2 and keeps[0] > 0 and keeps[1] == keeps[0]
    kept, through = (results[name]["stages"][1] for name in ("kept", "through"))
    assert kept["gate"] == through["gate"] and kept["routes"] == through["routes"]
    assert any(route != "previous" for route in kept["routes"].values())  # the update did move languages
    assert kept["scores"] == through["scores"]


def test_the_speed_benchmark_writes_its_figures_with_their_spread(tmp_path, tiny_backbone):
    from helpers import load_benchmark, write_config
    from tiny import write_topic_data

    write_topic_data(tmp_path / "data", n=(24, 6, 6))
    lora = {"r": 2, "target_modules": ["query", "value"], "layers": [1]}
    path = write_config(tmp_path / "tiny.yaml", data={"format": "sib200", "path": "data"},
                        model={"name": tiny_backbone, "max_length": 32},
                        training={"epochs": 1, "batch_size": 4},
                        stream={"stages": [{"name": "initial", "amount": 8},
                                           {"name": "update", "languages": ["hin"], "amount": 16}]},
                        strategies=[{"method": "full_finetune"}, {"method": "laft_uriel", "lora": lora}])
    speed = load_benchmark("speed")
    output = tmp_path / "speed-tiny.json"
    assert speed.main(["--stream", str(path), "--repeats", "2", "--threads", "1", "--limit", "8",
                       "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["stream"] == "tiny" and report["update"]["examples"] == 8 and len(report["repeats"]) == 2
    for figure in speed.FIGURES:
        spread = report["figures"][figure]
        assert spread["runs"] == [r["figures"][figure] for r in report["repeats"]]
        assert spread["min"] <= spread["median"] <= spread["max"] and spread["min"] > 0
    first = report["repeats"][0]
    assert first["figures"]["laft_uriel_over_full_finetune_update_time"] == pytest.approx(
        first["updates"]["laft_uriel"]["update_seconds"] / first["updates"]["full_finetune"]["update_seconds"])
    assert 0 < first["laft_uriel_over_full_finetune_update_flops"] < 2  # a count of the work, whatever the clock
    header, rows = speed.table([report])
    assert len(rows[0]) == len(header) and rows[0][0] == "tiny" and report["modular_strategy"] == "laft_uriel"
    assert report["suite"] is None and report["suite_overrides"] == {}  # the v2 suite does not run this config

    # a stream a suite runs is timed with the suite's settings for its update, not its config file's alone
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "s", "references": ["full_finetune"], "default_strategy": "laft_uriel",
        "benchmarks": {"tiny": {"config": "tiny.yaml", "update_kinds": {"subset": {"update_training.epochs": 2}}}},
        "strategies": ["full_finetune", "laft_uriel"],
        "quick": {"benchmarks": ["tiny"], "update_kinds": ["subset"], "strategies": ["full_finetune", "laft_uriel"]}}))
    assert speed.main(["--stream", str(path), "--repeats", "1", "--threads", "1", "--limit", "8", "--suite", str(suite),
                       "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["update"]["epochs"] == 2 and report["suite_overrides"] == {"update_training.epochs": 2}
    assert all(r["updates"]["full_finetune"]["epochs_run"] == 2 for r in report["repeats"])


def test_the_speed_benchmark_times_a_laft_uriel_variant_in_its_place(tmp_path, tiny_backbone):
    from helpers import load_benchmark, write_config
    from tiny import write_topic_data

    write_topic_data(tmp_path / "data", n=(24, 6, 6))
    lora = {"r": 2, "target_modules": ["query", "value"]}
    path = write_config(tmp_path / "tiny.yaml", data={"format": "sib200", "path": "data"},
                        model={"name": tiny_backbone, "max_length": 32},
                        training={"epochs": 1, "batch_size": 4},
                        stream={"stages": [{"name": "initial", "amount": 8},
                                           {"name": "update", "languages": ["hin"], "amount": 16}]},
                        strategies=[{"method": "full_finetune"}, {"method": "no_update"},
                                    {"method": "laft_uriel", "lora": {**lora, "layers": [0, 1]}},
                                    {"method": "laft_uriel", "name": "laft_top", "lora": {**lora, "layers": [1]}},
                                    {"method": "laft_replay", "name": "laft_rehearsing", "per_language": 4,
                                     "lora": {**lora, "layers": [1]}}])
    speed = load_benchmark("speed")
    reports = {}
    for label in ("laft_uriel", "laft_top", "laft_rehearsing"):
        output = tmp_path / f"speed-{label}.json"
        assert speed.main(["--stream", str(path), "--repeats", "1", "--threads", "1", "--limit", "4",
                           "--modular", label, "--output", str(output)]) == 0
        reports[label] = json.loads(output.read_text())
    assert reports["laft_top"]["modular_strategy"] == "laft_top"
    # the variant's modules sit in layer 1 only: the layer below runs once, so it counts less work than laft_uriel
    floors = {label: r["repeats"][0]["laft_uriel_over_full_finetune_update_flops"] for label, r in reports.items()}
    assert floors["laft_top"] < floors["laft_uriel"]
    # the same modules trained on the update and a memory of stage 0's examples: more work, and counted so
    rehearsed = reports["laft_rehearsing"]["repeats"][0]["updates"]["laft_uriel"]["examples_seen"]
    assert rehearsed > reports["laft_top"]["repeats"][0]["updates"]["laft_uriel"]["examples_seen"]
    assert floors["laft_rehearsing"] > floors["laft_top"]
    assert reports["laft_top"]["update"]["memory_examples"] == 0
    assert reports["laft_rehearsing"]["update"]["memory_examples"] == 3 * 4  # 4 per language of stage 0's three
    assert speed.table([reports["laft_top"]])[1][0][0] == "tiny (laft_top)"
    for wrong in ("no_update", "laft_missing"):
        with pytest.raises(SystemExit, match=wrong):
            speed.main(["--stream", str(path), "--repeats", "1", "--limit", "4", "--modular", wrong,
                        "--output", str(tmp_path / "wrong.json")])
    assert not (tmp_path / "wrong.json").exists()


def test_the_speed_benchmark_starts_from_the_benchmark_s_trained_stage0_and_leaves_its_folder_as_it_was(
        tmp_path, tiny_backbone, monkeypatch):
    import logging

    from helpers import load_benchmark, snapshot, write_config
    from tiny import write_topic_data

    from cml.errors import CMLError
    from cml.experiment import Experiment

    speed = load_benchmark("speed")  # puts the quality package beside it on the path
    from quality.run import stage0_model
    from quality.suite import load_suite, run_config

    write_topic_data(tmp_path / "data", n=(24, 6, 6))
    lora = {"r": 2, "target_modules": ["query", "value"], "layers": [1]}
    path = write_config(tmp_path / "tiny.yaml", data={"format": "sib200", "path": "data"},
                        model={"name": tiny_backbone, "max_length": 32},
                        training={"epochs": 2, "batch_size": 4, "learning_rate": 3e-3},
                        stream={"stages": [{"name": "initial", "amount": 8},
                                           {"name": "subset", "languages": ["hin"], "amount": 16}]},
                        strategies=[{"method": "full_finetune"}, {"method": "no_update"},
                                    {"method": "laft_uriel", "lora": lora}])
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(yaml.safe_dump({
        "name": "v2", "references": ["full_finetune", "no_update"], "default_strategy": "laft_uriel",
        "benchmarks": {"tiny": {"config": "tiny.yaml", "update_kinds": {"subset": {}}}},
        "strategies": ["full_finetune", "no_update", "laft_uriel"],
        "quick": {"benchmarks": ["tiny"], "update_kinds": ["subset"], "strategies": ["full_finetune", "no_update"]}}))
    runs, output = tmp_path / "runs", tmp_path / "speed-tiny.json"
    argv = ["--stream", str(path), "--repeats", "1", "--threads", "1", "--limit", "4", "--suite", str(suite_path),
            "--output-dir", str(runs), "--output", str(output)]
    with pytest.raises(CMLError, match="stage 0 of v2-tiny-subset-full-seed0 is not finished; train it first: "
                                       "python benchmarks/cml_quality.py --v2 --benchmarks tiny --seeds 0"):
        speed.main([*argv, "--stage0-seed", "0"])
    assert not output.exists()

    suite = load_suite(suite_path)
    config = run_config({"name": "tiny", **suite["benchmarks"]["tiny"]}, "subset", 0, False, suite, runs,
                        ["full_finetune", "no_update"])
    handlers = set(logging.getLogger("cml").handlers)
    Experiment(config, resume=True).run()  # stage 0 as cml_quality.py --v2 leaves it
    for handler in set(logging.getLogger("cml").handlers) - handlers:  # the run's run.log handler
        logging.getLogger("cml").removeHandler(handler)
        handler.close()
    before = snapshot(runs)
    experiment = Experiment(config, resume=True)
    stage0 = stage0_model(experiment, "")
    untrained = RoutedModel(experiment.task.seeded_model(0), experiment.stream.languages)
    assert not all(torch.equal(value, untrained.state_dict()[key]) for key, value in stage0.state_dict().items())
    bases = []
    measure_repeat = speed.measure_repeat
    monkeypatch.setattr(speed, "measure_repeat", lambda experiment, base, *rest: bases.append(base) or measure_repeat(
        experiment, base, *rest))
    assert speed.main([*argv, "--stage0-seed", "0"]) == 0
    started, = bases
    assert all(torch.equal(value, stage0.state_dict()[key]) for key, value in started.state_dict().items())
    assert snapshot(runs) == before  # nothing written into the benchmark's run folder: no checkpoint, lock or log
    report = json.loads(output.read_text())
    assert report["stage0"] == {"seed": 0, "run": str(runs / "v2-tiny-subset-full-seed0")}
    assert speed.table([report])[1][0][1].endswith(" epochs, from stage 0 of seed 0")

    with pytest.raises(SystemExit, match="--stage0-seed needs a stream of the suite"):  # v2's suite runs no tiny.yaml
        speed.main(["--stream", str(path), "--stage0-seed", "0", "--output", str(tmp_path / "elsewhere.json")])
    assert not (tmp_path / "elsewhere.json").exists()


def test_a_seq2seq_stream_is_timed_only_from_a_trained_stage0(tmp_path, tiny_backbone):
    from helpers import load_benchmark, write_config

    path = write_config(tmp_path / "s2s.yaml", task="seq2seq", data={"format": "jsonl", "path": "data"},
                        model={"name": tiny_backbone, "max_length": 16, "max_new_tokens": 3},
                        stream={"stages": [{"name": "s0", "amount": 12}, {"name": "s1", "languages": ["deu"]}]})
    with pytest.raises(SystemExit, match="s2s is a seq2seq stream: pass --stage0-seed K"):
        load_benchmark("speed").main(["--stream", str(path), "--output", str(tmp_path / "s.json")])
    assert not (tmp_path / "s.json").exists()


def test_the_counted_work_of_a_modular_update_includes_what_it_rehearses(tiny_backbone):
    from types import SimpleNamespace

    from transformers import AutoModel

    from helpers import load_benchmark

    speed = load_benchmark("speed")
    model = AutoModel.from_pretrained(tiny_backbone)
    update = [{"input_ids": [1] * 10}] * 4
    ctx = SimpleNamespace(train_features=update, dev={"hin": (None, [{"input_ids": [1] * 8}] * 2)})
    gate = {"hin": {"dev": {"previous:previous": 0.5, "own:g1": 0.6}}}

    def floor(laft_train=None):
        return speed.flops_floor(model, ctx, gate, prefix_depth=1, laft_epochs=2, full_epochs=2, dev_passes=2,
                                 laft_train=laft_train)

    assert floor(update) == floor()  # what the update alone trains on is the default
    layers, per_example = model.config.num_hidden_layers, speed.layer_flops(model, update[:1])
    full = 3 * layers * 4 * per_example * 2 + layers * speed.layer_flops(model, ctx.dev["hin"][1]) * 2
    # four rehearsed examples more: the prefix once and the layers above it forward and back, each epoch
    extra = (1 + 2 * (layers - 1) * 2) * 4 * per_example
    assert floor(update + update) == pytest.approx(floor() + extra / full)

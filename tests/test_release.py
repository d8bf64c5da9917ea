"""Releases end to end on the tiny model: train -> export hf -> update from that folder with a TSV batch -> check
-> export peft -> a process with transformers and PEFT alone reproduces cml's outputs; plus chains, label maps,
the ship gate and the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from cml.cli import main
from tiny import LANGS, TOPICS, write_topic_data

TRAINING = {"epochs": 6, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0}


def cml(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_batch(path: Path, data: Path, langs: dict[str, str], rows: slice, relabel: dict[str, str] | None = None):
    """A TSV batch in the user's layout (one file, a language column) cut from the topic data's train files."""
    lines = ["lang\tlabel\ttext"]
    for lang, folder in langs.items():
        for row in (data / folder / "train.tsv").read_text().splitlines()[1:][rows]:
            _, label, text = row.split("\t")
            lines.append(f"{lang}\t{(relabel or {}).get(label, label)}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


UNSORTED = ["sport", "food", "music"]


def unsort_labels(folder: Path, order: list[str]) -> None:
    """The same model with its labels in another id order: the head's rows and id2label permuted together."""
    from safetensors.torch import load_file, save_file

    config = json.loads((folder / "config.json").read_text())
    old = [config["id2label"][str(i)] for i in range(len(order))]
    rows = torch.tensor([old.index(label) for label in order])
    weights = load_file(folder / "model.safetensors")
    for name in ("classifier.weight", "classifier.bias"):
        weights[name] = weights[name][rows].contiguous()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config["id2label"] = {str(i): label for i, label in enumerate(order)}
    config["label2id"] = {label: i for i, label in enumerate(order)}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("releases")
    write_topic_data(root / "data", n=(72, 12, 24))
    write_yaml(root / "train.yaml", {"name": "v1", "task": "classification",
                                     "data": {"format": "sib200", "path": "data"},
                                     "model": {"name": tiny_backbone, "max_length": 32, "freeze_embeddings": False},
                                     "training": TRAINING})
    write_batch(root / "batch.tsv", root / "data", {"hin": "hin_Deva"}, slice(0, 40))
    write_yaml(root / "update.yaml", {"name": "v2", "task": "classification",
                                      "data": {"format": "tsv", "path": "batch.tsv", "columns": {"language": "lang"}},
                                      "eval": {"format": "sib200", "path": "data"},
                                      "strategy": {"method": "laft_uriel", "gate": False, "n_groups": 2},
                                      "ship": {"max_significant_losses": 0, "min_mean_delta": -1.0},
                                      "references": [{"method": "full_finetune"}],
                                      "training": {**TRAINING, "epochs": 3}})
    return root


@pytest.fixture(scope="module")
def chain(workspace):
    """v1 (cml train) -> hf1 (export hf) -> v2 (cml update --from hf1) -> peft2 (export peft)."""
    root = workspace
    result = cml("train", str(root / "train.yaml"), "--out", str(root / "v1"))
    assert result.exit_code == 0, result.output
    result = cml("export", str(root / "v1"), "--format", "hf", "--out", str(root / "hf1"))
    assert result.exit_code == 0, result.output
    unsort_labels(root / "hf1", UNSORTED)
    result = cml("update", str(root / "update.yaml"), "--from", str(root / "hf1"), "--out", str(root / "v2"))
    assert result.exit_code == 0, result.output
    result = cml("export", str(root / "v2"), "--format", "peft", "--out", str(root / "peft2"))
    assert result.exit_code == 0, result.output
    return root


def test_a_train_release_holds_its_model_labels_scores_and_report(chain):
    from cml.release.manifest import read_manifest

    record = read_manifest(chain / "v1")
    assert record.kind == "train" and record.format_version == 1 and record.verdict is None
    assert record.labels == sorted(TOPICS)
    assert set(record.languages) == set(LANGS)
    assert all(result.scores["accuracy"] > 0.5 for result in record.results.values())
    assert json.loads((chain / "v1" / "model" / "config.json").read_text())["id2label"] == \
        {str(i): label for i, label in enumerate(sorted(TOPICS))}
    assert {"model/model.safetensors", "model/config.json", "model/tokenizer.json"} <= set(record.files)
    assert (chain / "v1" / "report.html").is_file()
    assert {f"{lang}_{script}/{split}.tsv" for lang, script in zip(LANGS, ("Latn", "Latn", "Deva"))
            for split in ("train", "dev", "test")} <= set(record.data)


def test_an_update_from_a_hugging_face_folder_keeps_its_label_order_and_scores(chain):
    from cml.release.manifest import read_manifest

    v1, v2 = read_manifest(chain / "v1"), read_manifest(chain / "v2")
    assert v2.origin.kind == "checkpoint" and {"model.safetensors", "config.json"} <= set(v2.origin.files)
    assert v2.labels == UNSORTED  # the checkpoint's id2label order, not sorted
    # "before" is v1 with its head's rows permuted with id2label: v1's own scores, so no label was misread
    assert {lang: r.changes["accuracy"].before for lang, r in v2.results.items()} == \
        {lang: r.scores["accuracy"] for lang, r in v1.results.items()}
    assert v2.modules and v2.results["hin"].route and v2.results["hin"].updated
    assert set(v2.summary) == {"accuracy", "macro_f1"} and v2.verdict.ship
    reference = v2.references["full_finetune"]
    assert set(reference.changes) == set(LANGS) and reference.verdict.metric == "accuracy"
    text = (chain / "v2" / "report.md").read_text()
    assert text.index("Verdict: may ship") < text.index("Every language") < text.index("Against other strategies")
    assert "`full_finetune` would have made" in text


def test_check_exits_0_or_3_by_criterion(chain):
    passing = cml("check", str(chain / "v2"))
    assert passing.exit_code == 0 and "may ship" in passing.output
    failing = cml("check", str(chain / "v2"), "--min-mean-delta", "0.5")
    assert failing.exit_code == 3, failing.output
    assert "below the required +50.00" in failing.output and "must not ship" in failing.output
    assert cml("check", str(chain / "v2"), "--max-significant-losses", "-1").exit_code == 2
    assert cml("check", str(chain / "v1")).exit_code == 2  # an initial release has nothing to compare
    assert cml("check", str(chain / "absent")).exit_code == 2


def test_update_exits_3_and_still_writes_a_release_that_must_not_ship(chain):
    out = chain / "v2-strict"
    result = cml("update", str(chain / "update.yaml"), "--from", str(chain / "v1"), "--out", str(out),
                 "--set", "ship.min_mean_delta=0.9")
    assert result.exit_code == 3, result.output
    assert "must not ship" in (out / "report.md").read_text()
    assert cml("check", str(out)).exit_code == 3


STANDALONE = textwrap.dedent("""
    import json, sys
    class NoCml:  # prove that nothing of cml is needed
        def find_spec(self, name, path=None, target=None):
            if name == "cml" or name.startswith("cml."):
                raise ImportError("cml must not be imported")
    sys.meta_path.insert(0, NoCml())
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    folder, inputs = sys.argv[1], json.loads(sys.argv[2])
    routes = json.load(open(f"{folder}/routes.json"))
    tokenizer = AutoTokenizer.from_pretrained(f"{folder}/base")
    model = AutoModelForSequenceClassification.from_pretrained(f"{folder}/base")
    adapters = sorted({name for route in routes["languages"].values() for name in route})
    model = PeftModel.from_pretrained(model, f"{folder}/adapters/{adapters[0]}", adapter_name=adapters[0])
    for name in adapters[1:]:
        model.load_adapter(f"{folder}/adapters/{name}", adapter_name=name)
    model.eval()
    out = {}
    with torch.no_grad():
        for lang, texts in inputs.items():
            route = routes["languages"].get(lang, routes["default"])
            batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=32)
            if route:
                model.base_model.set_adapter(route)
                logits = model(**batch).logits
            else:
                with model.disable_adapter():
                    logits = model(**batch).logits
            out[lang] = {"logits": logits.tolist(),
                         "labels": [model.config.id2label[i] for i in logits.argmax(-1).tolist()]}
    print(json.dumps(out))
""")


def test_a_peft_export_reproduces_cml_with_transformers_and_peft_alone(chain):
    from cml import Release

    texts = {lang: [row.split("\t")[2] for row in (chain / "data" / folder / "test.tsv").read_text().splitlines()[1:6]]
             for lang, folder in zip(LANGS, ("deu_Latn", "fra_Latn", "hin_Deva"))}
    routes = json.loads((chain / "peft2" / "routes.json").read_text())["languages"]
    assert routes["hin"] and any(not route for route in routes.values()) is not None
    done = subprocess.run([sys.executable, "-c", STANDALONE, str(chain / "peft2"), json.dumps(texts)],
                          capture_output=True, text=True, check=True)
    standalone = json.loads(done.stdout.splitlines()[-1])
    release = Release.load(chain / "v2")
    model, task = release.predictor.model, release.predictor.task
    for lang, lang_texts in texts.items():
        served = release.predict(lang_texts, lang=lang)
        assert [output["prediction"] for output in served] == standalone[lang]["labels"]
        assert {output["route"] for output in served} == {"+".join(routes[lang]) or "base"}
        encoded = task.tokenizer(lang_texts, return_tensors="pt", padding=True, truncation=True, max_length=32)
        with torch.no_grad():
            ours = model(lang_ids=torch.full((len(lang_texts),), release.languages.index(lang)), **encoded).logits
        torch.testing.assert_close(ours, torch.tensor(standalone[lang]["logits"]), atol=1e-5, rtol=0)
    predicted = cml("predict", str(chain / "v2"), "--lang", "hin", input="\n".join(texts["hin"]) + "\n")
    assert predicted.exit_code == 0, predicted.output
    assert [json.loads(line)["prediction"] for line in predicted.output.splitlines()] == standalone["hin"]["labels"]


def test_a_merged_export_serves_each_route_as_a_plain_model(chain):
    from transformers import AutoModelForSequenceClassification

    from cml import Release

    out = chain / "merged2"
    assert cml("export", str(chain / "v2"), "--format", "merged", "--out", str(out)).exit_code == 0
    routes = json.loads((out / "routes.json").read_text())["languages"]
    release = Release.load(chain / "v2")
    text = (chain / "data" / "hin_Deva" / "test.tsv").read_text().splitlines()[1].split("\t")[2]
    plain = AutoModelForSequenceClassification.from_pretrained(out / routes["hin"]).eval()
    encoded = release.predictor.task.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        merged = plain(**encoded).logits
        ours = release.predictor.model(lang_ids=torch.tensor([release.languages.index("hin")]), **encoded).logits
    torch.testing.assert_close(merged, ours, atol=1e-5, rtol=0)
    assert "may ship" in (out / "README.md").read_text()
    assert cml("export", str(chain / "v2"), "--format", "hf", "--out", str(chain / "hf2")).exit_code == 2


def test_releases_chain_and_modules_persist(chain):
    from cml.release.manifest import read_manifest

    root = chain
    write_batch(root / "batch3.tsv", root / "data", {"deu": "deu_Latn"}, slice(0, 40))
    write_yaml(root / "update3.yaml", {**yaml.safe_load((root / "update.yaml").read_text()), "name": "v3",
                                       "references": [],
                                       "data": {"format": "tsv", "path": "batch3.tsv", "columns": {"language": "lang"}}})
    result = cml("update", str(root / "update3.yaml"), "--from", str(root / "v2"), "--out", str(root / "v3"))
    assert result.exit_code == 0, result.output
    v2, v3 = read_manifest(root / "v2"), read_manifest(root / "v3")
    assert v3.origin.kind == "release" and v3.origin.release == "v2" and v3.origin.files == v2.files
    assert set(v2.modules) <= set(v3.modules) and v3.strategy_state.groups == v2.strategy_state.groups
    # the base is v2's, unchanged (linked or copied): every route starts from the same network
    assert v3.files["model/model.safetensors"] == v2.files["model/model.safetensors"]
    full = write_yaml(root / "update-full.yaml", {**yaml.safe_load((root / "update3.yaml").read_text()),
                                                  "strategy": {"method": "full_finetune"}})
    refused = cml("update", str(full), "--from", str(root / "v2"), "--out", str(root / "v3-full"))
    assert refused.exit_code == 2 and "export --format merged" in refused.output and "update-full.yaml" in refused.output
    # month 2 with month 1's config: a full-model reference cannot apply to a modular parent; it is skipped, said why
    again = write_yaml(root / "update3-ref.yaml", {**yaml.safe_load((root / "update3.yaml").read_text()),
                                                   "references": [{"method": "full_finetune"}]})
    result = cml("update", str(again), "--from", str(root / "v2"), "--out", str(root / "v3-ref"))
    assert result.exit_code == 0, result.output
    skipped = read_manifest(root / "v3-ref").references["full_finetune"]
    assert skipped.verdict is None and "serves its languages through adapters" in skipped.skipped
    assert "not applied" in (root / "v3-ref" / "report.md").read_text()


def test_new_labels_need_grow_head_and_keep_the_old_ids(chain):
    from cml.release.manifest import read_manifest

    root = chain
    write_batch(root / "batch-new.tsv", root / "data", {"hin": "hin_Deva"}, slice(0, 30), relabel={"music": "art"})
    # the eval sets have the new label too: Hindi's music items are art now
    eval_rows = ["lang\tsplit\tlabel\ttext"] + [
        f"{lang}\t{split}\t{'art' if lang == 'hin' and label == 'music' else label}\t{text}"
        for lang, folder in zip(LANGS, ("deu_Latn", "fra_Latn", "hin_Deva")) for split in ("dev", "test")
        for _, label, text in (row.split("\t") for row in
                               (root / "data" / folder / f"{split}.tsv").read_text().splitlines()[1:])]
    (root / "eval-new.tsv").write_text("\n".join(eval_rows) + "\n")
    config = write_yaml(root / "update-new.yaml", {**yaml.safe_load((root / "update.yaml").read_text()),
                                                   "strategy": {"method": "full_finetune"}, "references": [],
                                                   "data": {"format": "tsv", "path": "batch-new.tsv",
                                                            "columns": {"language": "lang"}},
                                                   "eval": {"format": "tsv", "path": "eval-new.tsv",
                                                            "columns": {"language": "lang", "split": "split"}}})
    refused = cml("update", str(config), "--from", str(root / "v1"), "--out", str(root / "v-new"))
    assert refused.exit_code == 2 and "art" in refused.output and "--grow-head" in refused.output
    assert not (root / "v-new").exists()
    grown = cml("update", str(config), "--from", str(root / "v1"), "--out", str(root / "v-new"), "--grow-head")
    assert grown.exit_code in (0, 3), grown.output
    record = read_manifest(root / "v-new")
    assert record.labels == [*sorted(TOPICS), "art"]
    # before and after are scored over the same label set: the parent's head is the grown one's prefix
    v1 = read_manifest(root / "v1")
    assert record.results["deu"].changes["accuracy"].before == v1.results["deu"].scores["accuracy"]
    modular = write_yaml(root / "update-new-modular.yaml", {**yaml.safe_load(config.read_text()),
                                                            "strategy": {"method": "laft_uriel"}})
    refused = cml("update", str(modular), "--from", str(root / "v1"), "--out", str(root / "v-new2"), "--grow-head")
    assert refused.exit_code == 2 and "cannot grow the head" in refused.output


def test_an_unsorted_id2label_checkpoint_keeps_its_labels(tmp_path, tiny_backbone):
    from transformers import AutoModelForTokenClassification

    from cml.release.model import open_source
    from cml.task_family import TaskFamily

    labels = ["VERB", "ADJ", "NOUN", "DET"]
    model = AutoModelForTokenClassification.from_pretrained(tiny_backbone, num_labels=4,
                                                            id2label=dict(enumerate(labels)),
                                                            label2id={label: i for i, label in enumerate(labels)})
    model.save_pretrained(tmp_path / "tagger")
    assert open_source(str(tmp_path / "tagger"), TaskFamily.tagging).labels == labels
    from cml.errors import CMLError

    with pytest.raises(CMLError, match="no classification head"):
        open_source(str(tmp_path / "tagger"), TaskFamily.classification)
    with pytest.raises(CMLError, match="no tagging head"):
        open_source(tiny_backbone, TaskFamily.tagging)


def test_a_release_whose_weights_changed_is_refused(chain, tmp_path):
    import shutil

    copy = tmp_path / "v1"
    shutil.copytree(chain / "v1", copy)
    weights = copy / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    result = cml("predict", str(copy), "--lang", "deu", input="deuw1 deusport1\n")
    assert result.exit_code == 2 and "sha256" in result.output


def test_push_to_hub_uploads_the_export_folder(chain):
    from cml.release.export import push, upload_plan

    calls = []

    class FakeHub:
        def create_repo(self, repo, **kwargs):
            calls.append(("create", repo, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs["repo_id"], sorted(p.name for p in Path(kwargs["folder_path"]).rglob("*"))))
            return type("Commit", (), {"commit_url": "https://hub/commit/1"})()

    assert push(chain / "peft2", "me/model", api=FakeHub()) == "https://hub/commit/1"
    assert calls[0] == ("create", "me/model", {"repo_type": "model", "private": True, "exist_ok": True})
    assert {"README.md", "routes.json", "adapter_model.safetensors", "model.safetensors"} <= set(calls[1][2])
    plan = dict(upload_plan(chain / "peft2"))
    assert "base/model.safetensors" in plan and "README.md" in plan
    dry = cml("export", str(chain / "v2"), "--format", "peft", "--out", str(chain / "peft2b"), "--push-to-hub",
              "me/model", "--dry-run")
    assert dry.exit_code == 0 and "would upload base/model.safetensors" in dry.output


def test_a_seq2seq_release_assembled_around_an_encoder_round_trips(tmp_path):
    """An encoder-decoder cml builds around an encoder (one shared table, a hook) cannot be a plain Hugging Face
    folder: the release stores every tensor and rebuilds the network from its backbone, so serving it gives the
    predictions it was scored with."""
    from test_seq2seq import save_tiny_bert

    from cml import Release
    from cml.release.manifest import read_manifest

    bert = save_tiny_bert(tmp_path / "bert", {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                                              "sep_token": "[SEP]"})
    words = ["walked", "talks", "jumping", "cats", "played", "books", "sings", "dogs", "runs", "hats", "cups", "trees"]
    for lang in ("eng", "deu"):
        for split, chosen in (("train", words), ("dev", words[:4]), ("test", words[4:10])):
            folder = tmp_path / "data" / lang
            folder.mkdir(parents=True, exist_ok=True)
            rows = [f"{lang}-{split}{i}\t{word}\t{word.rstrip('s').removesuffix('ed').removesuffix('ing')}"
                    for i, word in enumerate(chosen)]
            (folder / f"{split}.tsv").write_text("id\tsource\ttarget\n" + "\n".join(rows) + "\n")
    data = {"format": "tsv", "path": "data", "columns": {"id": "id"}}
    write_yaml(tmp_path / "train.yaml", {"name": "s1", "task": "seq2seq", "data": data,
                                         "model": {"name": bert, "max_length": 16, "max_new_tokens": 10,
                                                   "freeze_embeddings": False},
                                         "training": {"epochs": 3, "batch_size": 4, "learning_rate": 3e-3}})
    trained = cml("train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "s1"))
    assert trained.exit_code == 0, trained.output
    write_yaml(tmp_path / "update.yaml", {"name": "s2", "task": "seq2seq", "data": {**data, "languages": ["deu"]},
                                          "eval": data, "strategy": {"method": "laft_uriel", "gate": False},
                                          "ship": {"min_mean_delta": -1.0, "max_significant_losses": 9},
                                          "training": {"epochs": 2, "batch_size": 4, "learning_rate": 3e-3}})
    result = cml("update", str(tmp_path / "update.yaml"), "--from", str(tmp_path / "s1"), "--out", str(tmp_path / "s2"))
    assert result.exit_code == 0, result.output
    record = read_manifest(tmp_path / "s2")
    assert record.base_format == "assembled" and {"exact_match", "chrf"} <= set(record.summary)
    release = Release.load(tmp_path / "s2")
    scored = [json.loads(line) for line in (tmp_path / "s2" / "predictions.jsonl").read_text().splitlines()]
    for lang in ("eng", "deu"):
        sources = words[4:10]
        served = release.predict(sources, lang=lang)
        assert [output["prediction"] for output in served] == [row["prediction"] for row in scored if row["lang"] == lang]
    refused = cml("export", str(tmp_path / "s2"), "--format", "peft", "--out", str(tmp_path / "e"))
    assert refused.exit_code == 2 and "assembled" in refused.output


@pytest.mark.parametrize("plant", ["pickle", "link", "module name", "format", "not json", "adapter config",
                                   "assembled", "route"])
def test_a_hostile_release_folder_is_refused_naming_the_file(chain, tmp_path, plant):
    import shutil

    copy = tmp_path / "v2"
    shutil.copytree(chain / "v2", copy)
    manifest = json.loads((copy / "release.json").read_text())
    if plant == "pickle":
        (copy / "adapters" / manifest["modules"][0] / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
        expected = "adapter_model.bin: a release holds safetensors only"
    elif plant == "link":
        (copy / "model" / "extra.json").symlink_to("/etc/passwd")
        expected = "extra.json: a release folder may not hold links"
    elif plant == "module name":
        manifest["modules"] = ["../../outside"]
        (copy / "release.json").write_text(json.dumps(manifest))
        expected = "release.json: modules.0: not a release record (must be one folder name"
    elif plant == "format":
        manifest["format_version"] = 2
        (copy / "release.json").write_text(json.dumps(manifest))
        expected = "this version of cml reads format 1"
    elif plant == "adapter config":
        path = copy / "adapters" / manifest["modules"][0] / "adapter_config.json"
        path.write_text(path.read_text().replace('"lora_alpha": 16', '"lora_alpha": 4000'))
        expected = "adapter_config.json: this file changed after the release was made"
    elif plant == "assembled":
        manifest["base_format"], manifest["backbone"] = "assembled", "someone/elses-model"
        (copy / "release.json").write_text(json.dumps(manifest))
        expected = "base_format `assembled` is for seq2seq models only"
    elif plant == "route":
        manifest["results"]["deu"]["route"] = ["nope"]
        (copy / "release.json").write_text(json.dumps(manifest))
        expected = "routes name modules the release does not have: nope"
    else:
        (copy / "release.json").write_text("{\"name\": ")
        expected = "release.json:1"
    for command in (["predict", str(copy), "--lang", "deu"], ["export", str(copy), "--format", "peft", "--out",
                                                              str(tmp_path / "out")]):
        result = cml(*command, input="deuw1 deusport1\n")
        assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_the_report_says_when_a_secondary_metric_disagrees():
    from cml.release.manifest import Change, LanguageResult, ReleaseRecord, Origin, Verdict
    from cml.release.report import report_blocks
    from cml.reports.document import to_markdown

    def change(delta, low, high):
        return Change(before=0.5, after=0.5 + delta, delta=delta, ci_low=low, ci_high=high, negative_flip_rate=0.1,
                      positive_flip_rate=0.1)

    figures = {"n_languages": 2, "n_improved": 0, "n_degraded": 0, "n_significant_improved": 0,
               "n_significant_degraded": 0, "mean_delta": 0.0, "mean_loss_magnitude": 0.0, "max_loss": 0.0,
               "aggregate_before": 0.0, "aggregate_after": 0.0, "negative_flip_rate": 0.0}
    record = ReleaseRecord(
        name="v2", kind="update", created="now", task="seq2seq", primary_metric="exact_match", languages=["deu", "fra"],
        origin=Origin(kind="release", name="v1"), backbone="b", strategy={"method": "laft_uriel"},
        results={lang: LanguageResult(test_examples=10, scores={"exact_match": 0.0, "chrf": 0.2},
                                      changes={"exact_match": change(0.0, 0.0, 0.0), "chrf": change(-0.1, -0.2, -0.05)})
                 for lang in ("deu", "fra")},
        summary={"exact_match": figures, "chrf": {**figures, "n_degraded": 2, "n_significant_degraded": 2,
                                                  "mean_delta": -0.1, "mean_loss_magnitude": 0.1}},
        verdict=Verdict(max_significant_losses=0, min_mean_delta=0.0, metric="exact_match", significant_losses=[],
                        mean_delta=0.0, failures=[]),
        files={})
    text = to_markdown(report_blocks(record), lambda image: "")
    assert "Warning: the metrics disagree" in text and "chrf shows a significant loss in 2 of 2 languages" in text


def test_outputs_never_overwrite_inputs_or_what_cml_did_not_write(chain, tmp_path, monkeypatch):
    root = chain
    update = ["update", str(root / "update.yaml"), "--from", str(root / "v1")]
    for out in (root / "v1", root):  # the source itself, a folder holding it
        refused = cml(*update, "--out", str(out), "--overwrite")
        assert refused.exit_code == 2 and "overlap" in refused.output, refused.output
    theirs = tmp_path / "notes"
    theirs.mkdir()
    (theirs / "NOTES.txt").write_text("mine")
    refused = cml(*update, "--out", str(theirs), "--overwrite")
    assert refused.exit_code == 2 and "replaces only what cml wrote" in refused.output
    assert (theirs / "NOTES.txt").read_text() == "mine"
    refused = cml("export", str(root / "v1"), "--format", "hf", "--out", str(root / "v1" / "model"), "--overwrite")
    assert refused.exit_code == 2 and "overlap" in refused.output
    monkeypatch.chdir(tmp_path)
    refused = cml("export", str(root / "v1"), "--format", "hf", "--out", ".", "--overwrite")
    assert refused.exit_code == 2 and "must be a new folder" in refused.output
    # an export may replace an export
    assert cml("export", str(root / "v1"), "--format", "hf", "--out", "e").exit_code == 0
    assert cml("export", str(root / "v1"), "--format", "hf", "--out", "e", "--overwrite").exit_code == 0


def test_a_ship_metric_the_task_lacks_is_refused_before_training(chain):
    result = cml("update", str(chain / "update.yaml"), "--from", str(chain / "v1"), "--out", str(chain / "v-bad"),
                 "--set", "ship.metric=chrf")
    assert result.exit_code == 2 and "computes accuracy, macro_f1, not 'chrf'" in result.output
    result = cml("update", str(chain / "update.yaml"), "--from", str(chain / "v1"), "--out", str(chain / "v-bad"),
                 "--set", "ship.metric=acuracy")
    assert result.exit_code == 2 and "unknown metric 'acuracy'" in result.output
    assert not (chain / "v-bad").exists()


def test_a_batch_of_two_rows_is_a_batch(chain):
    (chain / "tiny-batch.tsv").write_text("lang\tlabel\ttext\nhin\tsport\thinw1 hinsport1\nhin\tfood\thinw2 hinfood2\n")
    config = write_yaml(chain / "update-tiny.yaml", {**yaml.safe_load((chain / "update.yaml").read_text()),
                                                     "references": [], "data": {"format": "tsv", "path": "tiny-batch.tsv",
                                                                                "columns": {"language": "lang"}}})
    result = cml("update", str(config), "--from", str(chain / "v1"), "--out", str(chain / "v-tiny"))
    assert result.exit_code in (0, 3), result.output

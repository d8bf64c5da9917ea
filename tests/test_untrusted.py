"""Untrusted input, class by class (issue: safe on untrusted input): run names, locks, run folders from someone
else, changed inputs, bad bytes, truncated files, malformed overrides and inputs, silent acceptance, IOB2
repair, and errors that point to the right place. Each test failed on main before this work."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import interrupt_run, run_config, write_config, write_sib_like

from cml.cli import main
from cml.config import load_config
from cml.data.readers import read_dataset
from cml.errors import CMLError
from cml.experiment import Experiment
from cml.io import FolderLock

BASE = {"data": {"format": "sib200", "path": "data"}, "stream": {"stages": [{"name": "s0"}]}}


def cml(*args: str, input: bytes | str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_backbone):
    """One finished tiny run (stage 0 and an update), copied by the tests that tamper with it."""
    root = tmp_path_factory.mktemp("finished")
    config = run_config(root, tiny_backbone, epochs=2)
    Experiment(load_config(config)).run()
    return root


def fresh_run(tmp_path: Path, backbone: str) -> tuple[Path, Path]:
    """A finished tiny run of the test's own, for tests that resume it (a copy would read other paths)."""
    config = run_config(tmp_path, backbone, epochs=2)
    Experiment(load_config(config)).run()
    return config, tmp_path / "runs" / "t"


def copy_run(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the finished run: (its config, its run folder)."""
    shutil.copytree(finished_run, tmp_path / "copy")
    config = tmp_path / "copy" / "c.yaml"
    text = yaml.safe_load(config.read_text())
    text["output_dir"] = str(tmp_path / "copy" / "runs")
    config.write_text(yaml.safe_dump(text, sort_keys=False))
    return config, tmp_path / "copy" / "runs" / "t"


def write_splits(root: Path, extension: str, content, languages=("deu", "fra")) -> Path:
    """``<root>/<lang>/<split>.<extension>`` for every language and split, each holding ``content`` (text, or a
    function of the split)."""
    for lang in languages:
        for split in ("train", "dev", "test"):
            path = root / lang / f"{split}.{extension}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content(split) if callable(content) else content, encoding="utf-8")
    return root


def pickled_model(backbone: str, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``backbone`` whose weights are a pickle that would create a marker file when unpickled:
    (the model folder, the marker)."""
    import pickle

    marker = tmp_path / "unpickled"
    folder = tmp_path / "pickled-model"
    shutil.copytree(backbone, folder)
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    return folder, marker


# ------------------------------------------------------------------------------------- 1. run names

@pytest.mark.parametrize("name", ["../x", "/tmp/elsewhere", "a/b", "..", ".", ".hidden", "-rf", "x\ny", ""])
def test_a_run_name_is_one_folder_name(tmp_path, name):
    write_sib_like(tmp_path / "data")
    path = write_config(tmp_path / "c.yaml", **BASE)
    with pytest.raises(CMLError, match="one folder name") as err:
        load_config(path, [f"name={json.dumps(name)}"])
    assert err.value.key == "--set name"
    path.write_text(path.read_text().replace("name: t", f"name: {json.dumps(name)}"))
    with pytest.raises(CMLError, match="one folder name") as err:
        load_config(path)
    assert err.value.line == 1


@pytest.mark.parametrize("where", ["strategies=[{method: full_finetune, name: ../../x}]",
                                   "stream.stages.0.name=../x"])
def test_strategy_and_stage_names_are_folder_names_too(tmp_path, where):
    path = write_config(tmp_path / "c.yaml", **BASE)
    with pytest.raises(CMLError, match="one folder name"):
        load_config(path, [where])


def test_a_run_folder_that_links_elsewhere_is_refused_and_nothing_there_is_touched(tmp_path, tiny_backbone):
    config = run_config(tmp_path, tiny_backbone, epochs=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".cml-precious.x.tmp").write_text("a file that only looks like ours")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "t").symlink_to(elsewhere)
    with pytest.raises(CMLError, match="not a link elsewhere"):
        Experiment(load_config(config)).run()
    assert [p.name for p in elsewhere.iterdir()] == [".cml-precious.x.tmp"]


# ------------------------------------------------------------------------------------------ 2. locks

def test_a_second_process_on_the_same_run_folder_is_refused_with_the_holders_pid(tmp_path, tiny_backbone):
    config = run_config(tmp_path, tiny_backbone, epochs=1)
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from cml.io import FolderLock
        lock = FolderLock({str(run_dir)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)""")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = cml("run", str(config))
        assert_user_error(result, str(run_dir), f"PID {holder.pid}", "in use by another cml process")
        assert not (run_dir / "stages").exists() and not (run_dir / "run.log").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: its lock does not block
    with FolderLock(run_dir):
        pass
    assert cml("run", str(config)).exit_code == 0


# ---------------------------------------------------------------------- 3. run folders from someone else

def _marker_model(folder: Path, marker: Path) -> None:
    """A model folder whose config asks for custom code (auto_map), and whose code would leave a marker."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                     "AutoModelForSequenceClassification": "evil.EvilModel"}}))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import PretrainedConfig\n"
                                    "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")


def _tamper(results_path: Path, **model) -> None:
    results = json.loads(results_path.read_text())
    results["config"]["model"].update(model)
    results_path.write_text(json.dumps(results))


def test_a_run_folder_cannot_turn_on_remote_code(finished_run, tmp_path):
    _, run_dir = copy_run(finished_run, tmp_path)
    _tamper(run_dir / "results.json", trust_remote_code=True)
    result = cml("predict", str(run_dir), "--lang", "deu", input="deuw1 deusport1\n")
    assert_user_error(result, "results.json", "trust_remote_code", "--trust-remote-code")


def test_a_model_named_by_a_run_folder_never_runs_its_code(finished_run, tmp_path):
    _, run_dir = copy_run(finished_run, tmp_path)
    marker = tmp_path / "code-ran"
    _marker_model(tmp_path / "evil-model", marker)
    _tamper(run_dir / "results.json", name=str(tmp_path / "evil-model"))
    result = cml("predict", str(run_dir), "--lang", "deu", input="deuw1 deusport1\n")
    assert_user_error(result, "cannot load the model")
    assert not marker.exists()


def test_pickled_weights_are_never_loaded(tiny_backbone, tmp_path):
    """A model folder whose weights are a pickle (pytorch_model.bin) is refused before anything is unpickled."""
    folder, marker = pickled_model(tiny_backbone, tmp_path)
    write_sib_like(tmp_path / "data")
    path = write_config(tmp_path / "c.yaml", **BASE, model={"name": str(folder)})
    with pytest.raises(CMLError, match="cannot load the model"):
        Experiment(load_config(path)).run()
    assert not marker.exists()


# ------------------------------------------------------------------------------------ 4. stale inputs

def test_resume_refuses_an_input_file_that_changed(tmp_path, tiny_backbone):
    config, run_dir = fresh_run(tmp_path, tiny_backbone)
    test_file = tmp_path / "data" / "hin_Deva" / "test.tsv"
    rows = test_file.read_text().splitlines()
    index, label, text = rows[1].split("\t")
    rows[1] = "\t".join([index, "food" if label != "food" else "sport", text])  # relabel one item
    test_file.write_text("\n".join(rows) + "\n")
    with pytest.raises(CMLError, match="input changed since this finished stage ran") as err:
        Experiment(load_config(config), resume=True).run()
    assert str(test_file) in err.value.message
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["inputs"]) == 10 and "hin_Deva/test.tsv" in results["inputs"]  # 9 splits + labels.txt


# ------------------------------------------------------------------------- 5. bad bytes, BOMs, truncations

def test_bytes_that_are_not_utf8_are_named_by_file_line_and_offset(tmp_path):
    root = write_sib_like(tmp_path / "data")
    bad = root / "fra_Latn" / "dev.tsv"
    data = bad.read_bytes()
    cut = data.index(b"\n", data.index(b"\n") + 1) + 5  # inside line 3
    bad.write_bytes(data[:cut] + b"\xff\xfe" + data[cut:])
    from cml.config import SIB200Source
    from cml.task_family import TaskFamily

    with pytest.raises(CMLError, match=f"byte 0xff at byte offset {cut}") as err:
        read_dataset(SIB200Source(format="sib200", path=str(root)), TaskFamily.classification)
    assert (err.value.file, err.value.line) == (str(bad), 3)
    config = write_config(tmp_path / "c.yaml", **BASE)
    config.write_bytes(config.read_bytes().replace(b"name: t", b"name: t\xe9"))
    with pytest.raises(CMLError, match="not valid UTF-8") as err:
        load_config(config)
    assert (err.value.file, err.value.line) == (str(config), 1)


def test_a_byte_order_mark_is_accepted_everywhere(tmp_path):
    from cml.config import ConlluSource, DelimitedSource, SIB200Source
    from cml.task_family import TaskFamily

    bom = "\ufeff"
    sib = write_sib_like(tmp_path / "sib")
    for path in [*sib.glob("*/*.tsv"), *sib.glob("*/labels.txt")]:
        path.write_text(bom + path.read_text(), encoding="utf-8")
    assert read_dataset(SIB200Source(format="sib200", path=str(sib)), TaskFamily.classification).label_set == \
        ("a", "b", "c")
    write_splits(tmp_path / "tsv", "tsv",
                 lambda split: bom + f"id\ttext\tlabel\n{split}1\tein satz\ta\n{split}2\tnoch einer\tb\n")
    dataset = read_dataset(DelimitedSource(format="tsv", path=str(tmp_path / "tsv"), columns={"id": "id"}),
                           TaskFamily.classification)
    assert dataset.splits["deu"]["train"][0].id == "train1"
    conllu = tmp_path / "ud" / "de_pud-ud-test.conllu"
    conllu.parent.mkdir()
    conllu.write_text(bom + "".join(f"# sent_id = s{i}\n1\tDer\tder\tDET\t_\t_\t2\tdet\t_\t_\n"
                                    "2\tHund\tHund\tNOUN\t_\t_\t0\troot\t_\t_\n\n" for i in range(30)),
                      encoding="utf-8")
    dataset = read_dataset(ConlluSource(format="conllu", path=str(tmp_path / "ud")), TaskFamily.tagging)
    assert sum(len(examples) for examples in dataset.splits["deu"].values()) == 30


def test_an_output_dir_that_cannot_be_written_is_an_error_naming_it(tmp_path, tiny_backbone):
    # Mode bits do not stop root (CI runs as root), so the unwritable place is a path through a file.
    config = run_config(tmp_path, tiny_backbone, epochs=1)
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = cml("run", str(config), "--set", f"output_dir={tmp_path / 'blocker' / 'runs'}")
    assert_user_error(result, "cannot create the run folder", str(tmp_path / "blocker"))


def test_truncated_weights_are_named_and_a_resumed_run_redoes_that_stage(tmp_path, tiny_backbone, caplog):
    config, run_dir = fresh_run(tmp_path, tiny_backbone)
    weights = run_dir / "stages" / "full_finetune" / "1-update" / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[:len(intact) // 2])
    assert_user_error(cml("predict", str(run_dir), "--lang", "hin", input="hinw1\n"), str(weights), "truncated")
    reference = json.loads((run_dir / "results.json").read_text())
    with caplog.at_level(logging.WARNING, logger="cml"):
        resumed = Experiment(load_config(config), resume=True).run()
    assert "a saved stage cannot be read" in caplog.text and str(weights) in caplog.text
    assert [s["scores"] for s in resumed["stages"]] == [s["scores"] for s in reference["stages"]]
    assert weights.read_bytes() == intact


def test_a_truncated_in_progress_checkpoint_restarts_the_stage_and_says_so(tmp_path, tiny_backbone, caplog):
    path = run_config(tmp_path, tiny_backbone, checkpoint_every_steps=2)
    reference = Experiment(load_config(path, ["name=reference"])).run()
    interrupt_run(path, "full_finetune/update", 7, ["name=cut"])
    latest = tmp_path / "runs" / "cut" / "checkpoints" / "full_finetune" / "1" / "latest" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="cml"):
        resumed = Experiment(load_config(path, ["name=cut"]), resume=True).run()
    assert "in-progress checkpoint cannot be read" in caplog.text and "restarting this stage" in caplog.text
    assert [s["scores"] for s in resumed["stages"]] == [s["scores"] for s in reference["stages"]]


@pytest.mark.parametrize("command", ["report", "compare", "predict"])
def test_a_truncated_results_file_is_named_with_its_line(finished_run, tmp_path, command):
    _, run_dir = copy_run(finished_run, tmp_path)
    results = run_dir / "results.json"
    results.write_text(results.read_text()[:300])
    result = cml(command, str(run_dir), input="hinw1\n")
    assert_user_error(result, str(results), "not valid JSON", "truncated")


@pytest.mark.parametrize("override, message", [
    ("name.sub=1", "name is a value ('t'), not a section with a setting 'sub'"),
    ("training.epochs.x=1", "training.epochs is a value (2), not a section"),
    ("stream.stages.7.amount=1", "stream.stages has 1 entries; there is no entry 7"),
    ("data.languages=[de,", "--set data.languages: invalid YAML"),
    ("training..epochs=1", "--set expects key.path=value"),
    ("stream.stages.x.amount=1", "expected a list index"),
])
def test_malformed_set_forms_are_errors(tmp_path, override, message):
    path = write_config(tmp_path / "c.yaml", **BASE, training={"epochs": 2})
    with pytest.raises(CMLError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(path, [override])


@pytest.mark.parametrize("stdin, message", [
    (b"\x00\x01\x02\xff binary\n", "<stdin>:1: not valid UTF-8"),
    (b"ok line\n\x00\x00\x00\n", "<stdin>:2: binary input"),
    (b'{"text": 5}\n', "<stdin>:1: `text` must be a non-empty string, got 5"),
    (b'{"text": null}\n', "`text` must be a non-empty string, got null"),
    (b'{"text": "x", "lang": 7}\n', "`lang` must be a string"),
    (b'{"text": "x",}\n', "<stdin>:1: invalid JSON"),
    (b'{"text": "x", "lang": "klingonx"}\n', "<stdin>:1: unknown language code 'klingonx'; did you mean: tlh"),
])
def test_predict_refuses_malformed_input_lines(finished_run, stdin, message):
    result = cml("predict", str(finished_run / "runs" / "t"), "--lang", "deu", input=stdin)
    assert_user_error(result, message)


# ------------------------------------------------------------------------------- 6. silent acceptance

@pytest.mark.parametrize("fmt, content, message, line", [
    ("jsonl", '{"text": "ein satz", "label": "a"}\n{"text": null, "label": "b"}\n',
     "column 'text' must be a string, got null", 2),  # an error, not the string "None"
    ("tsv", "text\tlabel\ttext\na\tb\tc\n", "the header names a column twice: text", 1),
])
def test_a_file_that_would_be_misread_is_an_error_naming_its_line(tmp_path, fmt, content, message, line):
    from cml.config import DelimitedSource
    from cml.task_family import TaskFamily

    write_splits(tmp_path, fmt, content)
    with pytest.raises(CMLError, match=message) as err:
        read_dataset(DelimitedSource(format=fmt, path=str(tmp_path)), TaskFamily.classification)
    assert err.value.line == line


@pytest.mark.parametrize("section, text, key", [
    ("training", "  epochs: '2'", "training.epochs"),
    ("update_training", "  learning_rat: 1.0e-3", "update_training.learning_rat"),
    ("strategies", "  - {method: full_finetune, training: {learning_rat: 1.0e-3}}",
     "strategies.0.full_finetune.training.learning_rat"),
    ("update_training", "  epochs: 0", "update_training.epochs"),
])
def test_values_are_strict_and_overrides_are_validated(tmp_path, section, text, key):
    path = write_config(tmp_path / "c.yaml", **BASE)
    path.write_text(path.read_text() + f"{section}:\n{text}\n")
    with pytest.raises(CMLError) as err:
        load_config(path)
    assert (err.value.key, err.value.line) == (key, len(path.read_text().splitlines()))


def test_training_overrides_apply_and_are_stored_as_given(tmp_path):
    from cml.experiment import stage_training_config

    path = write_config(tmp_path / "c.yaml", **BASE, training={"epochs": 3, "learning_rate": 1.0e-4},
                        update_training={"epochs": 1, "learning_rate": 1.0e-3})
    config = load_config(path)
    assert (stage_training_config(config, 1).epochs, stage_training_config(config, 1).learning_rate) == (1, 1e-3)
    assert stage_training_config(config, 0).epochs == 3
    assert config.model_dump(mode="json")["update_training"] == {"epochs": 1, "learning_rate": 1e-3}
    assert load_config(path, ["learning_rate=3e-5"] and ["training.learning_rate=3e-5"]).training.learning_rate \
        == 3e-5  # YAML 1.2 float: 3e-5 without a dot is a number, not a string


@pytest.mark.parametrize("name, suggestion", [("klingonx", "tlh (Klingon)"), ("germanx", "deu (German)")])
def test_an_inexact_language_name_is_an_error_with_suggestions(tmp_path, name, suggestion):
    path = write_config(tmp_path / "c.yaml", **BASE)
    with pytest.raises(CMLError, match=rf"unknown language code '{name}'; did you mean: .*{re.escape(suggestion)}"):
        load_config(path, [f"data.languages=[{name}]"])


def test_a_run_over_a_finished_run_is_refused_without_resume_or_overwrite(finished_run, tmp_path):
    config, run_dir = copy_run(finished_run, tmp_path)
    before = (run_dir / "results.json").read_bytes()
    assert_user_error(cml("run", str(config)), "holds a finished run", "--resume", "--overwrite")
    assert (run_dir / "results.json").read_bytes() == before
    assert cml("run", str(config), "--resume", "--overwrite").exit_code == 2
    assert cml("run", str(config), "--overwrite").exit_code == 0


def test_a_stage_that_learned_nothing_is_a_loud_warning(tmp_path, tiny_backbone):
    config = run_config(tmp_path, tiny_backbone, epochs=2, learning_rate=1.0e-12)
    result = cml("run", str(config))
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "runs" / "t" / "results.json").read_text())
    warnings = results["stages"][0]["warnings"]
    assert any("stayed at" in w for w in warnings), warnings
    assert "warning: full_finetune, stage initial" in result.output
    assert "## Warnings" in (tmp_path / "runs" / "t" / "report.md").read_text()
    assert "stayed at" in (tmp_path / "runs" / "t" / "run.log").read_text()


def test_one_label_everywhere_is_a_warning():
    from types import SimpleNamespace

    from cml.experiment import learning_warnings
    from cml.task_family import TaskFamily

    task = SimpleNamespace(primary_metric="accuracy", family=TaskFamily.tagging)
    one = learning_warnings(task, {"train": {"dev_history": [0.2, 0.3]}}, {"deu": [["O", "O"]], "fra": [["O"]]})
    assert one == ["every test prediction of every language is 'O': the model predicts one label for everything"]
    assert learning_warnings(task, {"train": {"dev_history": [0.2, 0.3]}}, {"deu": [["O", "B-PER"]]}) == []


# ------------------------------------------------------------------------------------------- 7. IOB2

def test_iob2_repair_reads_a_stray_inside_tag_as_a_beginning_and_counts_it(tmp_path):
    from cml.config import ConllSource
    from cml.task_family import TaskFamily

    write_splits(tmp_path / "ner", "txt", "Ade B-PER\nOla I-PER\nlana I-DATE\n\nEko B-LOC\n", languages=("yor", "hau"))
    source = ConllSource(format="conll", path=str(tmp_path / "ner"), repair=True)
    dataset = read_dataset(source, TaskFamily.tagging)
    assert dataset.splits["yor"]["train"][0].tags == ("B-PER", "I-PER", "B-DATE")
    assert set(dataset.repairs.values()) == {1} and len(dataset.repairs) == 6
    config = write_config(tmp_path / "c.yaml", task="tagging", data={"format": "conll", "path": "ner", "repair": True},
                          stream={"stages": [{"name": "s0"}]})
    result = cml("data", "stats", str(config))
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'ner' / 'hau' / 'dev.txt'}: 1 IOB2 tags repaired" in result.output


# ---------------------------------------------------------------------- 8. errors point to the right place

def test_a_bad_value_given_with_set_names_the_set_argument(tmp_path):
    path = write_config(tmp_path / "c.yaml", **BASE, training={"epochs": 2})
    with pytest.raises(CMLError) as err:
        load_config(path, ["training.epochs=0"])
    assert (err.value.file, err.value.key) == (None, "--set training.epochs")
    with pytest.raises(CMLError) as err:
        load_config(path, ["training={epochs: 0}"])
    assert err.value.key == "--set training (training.epochs)"


def test_stream_errors_name_the_stage_line_or_the_set_argument(tmp_path):
    write_sib_like(tmp_path / "data")
    path = write_config(tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
                        stream={"stages": [{"name": "s0", "amount": 10},
                                           {"name": "s1", "languages": ["deu"], "amount": 50}]})
    result = cml("data", "stats", str(path))
    line = path.read_text().splitlines().index("  - name: s1") + 1
    assert_user_error(result, f"{path}:{line}: stream.stages.1", "asks for 50 deu examples")
    result = cml("data", "stats", str(path), "--set", "stream.stages.1.languages=[ekk]")
    assert_user_error(result, "--set stream.stages.1.languages", "data does not have: ekk")


# ----------------------------------------------------------------- found by reading the change as a stranger

def test_a_planted_lock_link_is_never_written_through(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (run_dir / ".cml.lock").symlink_to(victim)
    with pytest.raises(CMLError, match="cannot open the lock file"):
        FolderLock(run_dir).acquire()
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("entry", ["run.log", "predictions", "stages/full_finetune"])
def test_a_run_folder_holding_a_link_is_refused(finished_run, tmp_path, entry):
    config, run_dir = copy_run(finished_run, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    link = run_dir / entry
    shutil.rmtree(link) if link.is_dir() else link.unlink()
    link.symlink_to(victim)
    assert_user_error(cml("run", str(config), "--resume"), "may not hold links", str(link))
    assert_user_error(cml("report", str(run_dir)), "may not hold links")
    assert list(victim.iterdir()) == []


def test_overwrite_removes_the_old_run_and_predict_serves_the_configs_stage(finished_run, tmp_path):
    config, run_dir = copy_run(finished_run, tmp_path)
    (run_dir / "notes.txt").write_text("a user's file beside the run")
    result = cml("run", str(config), "--overwrite", "--set", "stream.stages.1.name=other")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run_dir / "stages" / "full_finetune").iterdir()) == ["1-other"]
    assert (run_dir / "notes.txt").exists()
    (run_dir / "stages" / "full_finetune" / "1-update").mkdir()  # a stale folder: never served
    result = cml("predict", str(run_dir), "--lang", "hin", input="hinw1\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["stage"] == 1


@pytest.mark.parametrize("version", [None, 2])
def test_run_folders_of_another_format_are_refused_by_name_and_their_stages_redone(tmp_path, tiny_backbone,
                                                                                    caplog, version):
    """A run folder records its format version: one written in another format (an earlier cml wrote none) is
    never read by guesswork. Serving and reports name the file and the version; --resume redoes its stages."""
    config, run_dir = fresh_run(tmp_path, tiny_backbone)
    results = json.loads((run_dir / "results.json").read_text())
    for path in [run_dir / "results.json", *(run_dir / "stages").rglob("state.json")]:
        record = json.loads(path.read_text())
        record.pop("format_version") if version is None else record.update(format_version=version)
        path.write_text(json.dumps(record))
    message = "an earlier format" if version is None else "format 2"
    for command in (["predict", str(run_dir), "--lang", "hin"], ["report", str(run_dir)]):
        assert_user_error(cml(*command, input="hinw1\n"), str(run_dir / "results.json"), message)
    (run_dir / "results.json").unlink()
    with caplog.at_level(logging.WARNING, logger="cml"):
        resumed = Experiment(load_config(config), resume=True).run()
    assert resumed["stages"][1]["scores"] == results["stages"][1]["scores"]
    assert sum("redoing that stage" in r.getMessage() and message in r.getMessage() for r in caplog.records) == 2
    assert json.loads((run_dir / "results.json").read_text())["format_version"] == 1


def test_resume_refuses_a_stage_in_progress_whose_input_changed(tmp_path, tiny_backbone):
    path = run_config(tmp_path, tiny_backbone, checkpoint_every_steps=2)
    interrupt_run(path, "initial/initial", 4)
    train_file = tmp_path / "data" / "hin_Deva" / "train.tsv"
    train_file.write_text(train_file.read_text().replace("\tsport\t", "\tfood\t", 1))
    with pytest.raises(CMLError, match="input changed since the stage in progress ran") as err:
        Experiment(load_config(path), resume=True).run()
    assert str(train_file) in err.value.message and err.value.file.endswith("settings.json")


@pytest.mark.parametrize("state", ['{"complete": true}', '{"complete": true, "record": {}, "settings": []}', "[]"])
def test_a_hand_edited_stage_state_is_redone_on_resume_and_named_by_predict(tmp_path, tiny_backbone, caplog,
                                                                               state):
    config, run_dir = fresh_run(tmp_path, tiny_backbone)
    state_file = run_dir / "stages" / "full_finetune" / "1-update" / "state.json"
    state_file.write_text(state)
    assert_user_error(cml("predict", str(run_dir), "--lang", "hin", input="hinw1\n"), str(state_file))
    with caplog.at_level(logging.WARNING, logger="cml"):
        Experiment(load_config(config), resume=True).run()
    assert "a saved stage cannot be read" in caplog.text


def test_weights_of_another_shape_are_named(finished_run, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    _, run_dir = copy_run(finished_run, tmp_path)
    weights = run_dir / "stages" / "initial" / "0-initial" / "model.safetensors"
    tensors = load_file(weights)
    name = next(key for key, value in tensors.items() if value.ndim == 2)
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, weights)
    assert_user_error(cml("predict", str(run_dir), "--lang", "hin", input="hinw1\n"), "another shape", name)


def test_clean_up_skips_names_it_could_not_have_made(tmp_path):
    from cml.io import remove_stale_temporaries

    for name in (".cml-.old", ".cml-..old", ".cml-...old"):
        (tmp_path / name).mkdir()
    assert remove_stale_temporaries(tmp_path) == []
    assert (tmp_path / ".cml-.old").is_dir() and (tmp_path / ".cml-..old").is_dir()


@pytest.mark.parametrize("results", ['{"format_version": 1, "strategies": {}}',
                                     '{"format_version": 1, "strategies": {"x": {"stages": [{}]}}, "languages": []}'])
def test_results_without_a_runs_shape_are_named(tmp_path, results):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(results)
    assert_user_error(cml("report", str(run_dir)), str(run_dir / "results.json"), "not the results of a cml run")
    assert_user_error(cml("compare", str(run_dir)), str(run_dir / "results.json"))


def _edit(path: str, value=None, *, delete: bool = False, append=None):
    """An edit of results.json at a dotted path (list positions as numbers)."""
    def edit(results: dict) -> None:
        *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]
        node = results
        for key in parents:
            node = node[key]
        if delete:
            del node[last]
        elif append is not None:
            node[last].append(append)
        else:
            node[last] = value(node[last]) if callable(value) else value
    return edit


UPDATE = "summary.full_finetune.update"


@pytest.mark.parametrize("edit", [
    lambda r: r["summary"].update(ghost=r["summary"]["full_finetune"]),
    lambda r: r["summary"]["full_finetune"].update(other=r["summary"]["full_finetune"]["update"]),
    _edit(f"{UPDATE}.languages.deu", delete=True),
    _edit(f"{UPDATE}.metrics.accuracy.languages.fra", delete=True),
    _edit("languages", append="yor"),
    _edit("strategies.full_finetune.stages.0.scores.deu", delete=True),
    _edit(f"{UPDATE}.mean_delta", None),
    _edit(f"{UPDATE}.by_category.far", delete=True),
    _edit(f"{UPDATE}.languages.hin.category", "weird"),
    _edit(f"{UPDATE}.settings.neighbour_threshold", "x"),
    _edit("strategies.full_finetune.stages.1.index", "1"),
    _edit("strategies.full_finetune.stages.1.groups", "x"),  # a strategy's own field: the report's boundary
], ids=["summary-of-no-strategy", "summary-of-no-stage", "language-missing", "metric-language-missing",
        "language-without-scores", "scores-missing", "null-mean", "category-missing", "unknown-category",
        "threshold-not-a-number", "index-a-string", "groups-a-string"])
def test_a_hand_edited_results_file_is_named_by_report_and_compare(finished_run, tmp_path, edit):
    """What the typed check (and, for a strategy's own fields, the report's boundary) must catch: parts of
    results.json that disagree with each other, or values of the wrong kind, are an error naming the file, never
    a traceback."""
    _, run_dir = copy_run(finished_run, tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    edit(results)
    (run_dir / "results.json").write_text(json.dumps(results))
    assert_user_error(cml("report", str(run_dir)), str(run_dir / "results.json"), "not the results of a cml run")
    assert cml("compare", str(run_dir)).exit_code in (0, 2)


def test_a_refused_write_names_the_file(tmp_path, monkeypatch):
    import errno

    import cml.io
    from cml.io import write_text

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cml.io.os, "fsync", no_space)
    with pytest.raises(CMLError, match="cannot write: No space left on device") as err:
        write_text(tmp_path / "results.json", "{}")
    assert err.value.file == str(tmp_path / "results.json")
    assert list(tmp_path.iterdir()) == []  # and no temporary left


@pytest.mark.parametrize("override, key", [
    ("update_training.epochs=null", "--set update_training.epochs"),
    ("strategies.0.training.learning_rate=null", "--set strategies.0.training.learning_rate (strategies)"),
    ("stream.stages.-1.amount='x'", "--set stream.stages.0.amount"),
])
def test_override_errors_name_the_set_argument(tmp_path, override, key):
    path = write_config(tmp_path / "c.yaml", **BASE)
    with pytest.raises(CMLError) as err:
        load_config(path, [override])
    assert err.value.key.startswith(key) and err.value.file is None


def test_stdin_errors_give_the_line_of_the_whole_input(finished_run):
    result = cml("predict", str(finished_run / "runs" / "t"), "--lang", "deu", input=b"hello\nworld\n\xff bad\n")
    assert_user_error(result, "<stdin>:3: not valid UTF-8")


@pytest.mark.parametrize("section", [{"format": "conll", "path": "d", "file_pattern": "{lang}.txt"},
                                     {"format": "huggingface", "dataset": "x", "languages": ["deu"],
                                      "config_template": "{code}_{split}"}])
def test_format_patterns_are_checked_when_the_config_loads(tmp_path, section):
    path = write_config(tmp_path / "c.yaml", task="tagging", data=section, stream={"stages": [{"name": "s0"}]})
    with pytest.raises(CMLError, match="a pattern may only use"):
        load_config(path)


def test_model_info_never_unpickles(tiny_backbone, tmp_path):
    folder, marker = pickled_model(tiny_backbone, tmp_path)
    assert_user_error(cml("model", "info", str(folder)), "cannot load the model")
    assert not marker.exists()


def test_predict_serves_a_seq2seq_run(tmp_path, tiny_backbone):
    for lang in ("deu", "fra"):
        for split, count in (("train", 24), ("dev", 6), ("test", 6)):
            path = tmp_path / "data" / lang / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"id": f"{split}{i}", "source": f"{lang}sport{i % 4}",
                                                "target": f"{lang}food{i % 4}"}) + "\n" for i in range(count)))
    config = write_config(tmp_path / "c.yaml", task="seq2seq", data={"format": "jsonl", "path": "data",
                                                                      "columns": {"id": "id"}},
                          model={"name": tiny_backbone, "max_length": 16, "max_new_tokens": 3},
                          training={"epochs": 1, "batch_size": 8},
                          stream={"stages": [{"name": "s0", "amount": 12}, {"name": "s1", "languages": ["deu"]}]})
    assert cml("run", str(config)).exit_code == 0
    result = cml("predict", str(tmp_path / "runs" / "t"), "--lang", "deu", input="deusport1\n")
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout)["prediction"], str)
    result = cml("predict", str(tmp_path / "runs" / "t"), "--lang", "deu", "--top-k", "2", input="deusport1\n")
    assert_user_error(result, "--top-k is for classification and tagging")


# ------------------------------------------------------------- found by an adversarial tester, second pass

BOMB = "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
               for prev, name in zip([None, *"abcdefg"], "abcdefgh"))


@pytest.mark.parametrize("where", ["file", "set"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, where):
    path = write_config(tmp_path / "c.yaml", **BASE)
    overrides = []
    if where == "file":
        path.write_text(BOMB + path.read_text())
    else:  # the same document as one flow mapping
        overrides = ["name={" + ", ".join(BOMB.strip().splitlines()) + "}"]
    with pytest.raises(CMLError, match="expands to more than 100,000 values"):
        load_config(path, overrides)


def test_a_key_set_twice_is_an_error_naming_both_lines(tmp_path):
    path = write_config(tmp_path / "c.yaml", **BASE, training={"epochs": 6})
    path.write_text(path.read_text() + "training:\n  epochs: 2\n")
    with pytest.raises(CMLError, match=r"'training' is set twice in one section \(also on line \d+\)") as err:
        load_config(path)
    assert err.value.line == len(path.read_text().splitlines()) - 1
    languages_twice = write_config(tmp_path / "d.yaml", data=BASE["data"],
                                   stream={"stages": [{"name": "s0", "per_language": {"deu": 5, "de": 7}}]})
    with pytest.raises(CMLError, match="two keys name the same language"):
        load_config(languages_twice)


@pytest.mark.parametrize("override", ["name=\"t\\n\"", "training.learning_rate=.inf", "seed=100000000000000000000000",
                                      "data.split={train: .inf, dev: 0.1, test: 0.1}", "evaluation.resamples=1000000000",
                                      "training.max_grad_norm=.nan"])
def test_numbers_and_names_out_of_bounds_are_refused(tmp_path, override):
    path = write_config(tmp_path / "c.yaml", **BASE)
    with pytest.raises(CMLError) as err:
        load_config(path, [override])
    assert err.value.key.startswith("--set")


@pytest.mark.parametrize("stdin, message", [
    (b'{"text": "deuw1 \\ud800 x"}\n', "<stdin>:1: invalid JSON: a \\u escape names a lone surrogate"),
    (b'{"text": "deuw1", "x": 1e400}\n', "<stdin>:1: invalid JSON"),
    (b'{"text": "deuw1", "x": NaN}\n', "<stdin>:1: invalid JSON"),
    (b"deuw1 " * 20_000 + b"\n", "<stdin>:1: line of 120,000 characters; at most 100,000"),
    (b'{"text": "\\u001b]0;PWNED\\u0007", "lang": "\\u001b[2J"}\n', r"unknown language code '\x1b[2J'"),
])
def test_predict_refuses_what_json_allows_but_text_is_not(finished_run, stdin, message):
    result = cml("predict", str(finished_run / "runs" / "t"), "--lang", "deu", input=stdin)
    assert_user_error(result, message)
    assert "\x1b" not in result.output  # a quoted escape sequence never reaches the terminal


def test_jsonl_data_with_a_lone_surrogate_is_an_error(tmp_path):
    from cml.config import DelimitedSource
    from cml.task_family import TaskFamily

    write_splits(tmp_path, "jsonl", '{"text": "ok", "label": "a"}\n{"text": "x", "label": "sp\\udc00ort"}\n')
    with pytest.raises(CMLError, match="lone surrogate") as err:
        read_dataset(DelimitedSource(format="jsonl", path=str(tmp_path)), TaskFamily.classification)
    assert err.value.line == 2


@pytest.mark.parametrize("tamper", ["outside", "languages", "huge"])
def test_results_that_point_outside_or_ask_too_much_are_refused(finished_run, tmp_path, tamper):
    _, run_dir = copy_run(finished_run, tmp_path)
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    if tamper == "outside":
        results["strategies"]["full_finetune"]["stages"][1]["predictions"] = "/etc/passwd"
    elif tamper == "languages":
        results["languages"] = [f"l{i}" for i in range(2500)]
    else:
        results["summary"]["full_finetune"]["update"]["mean_delta"] = 10 ** 400
    path.write_text(json.dumps(results))
    for command in ("report", "compare"):
        result = cml(command, str(run_dir))
        assert_user_error(result, str(path))
        assert "root:" not in result.output


def test_report_never_writes_into_a_folder_that_is_no_run(tmp_path):
    assert_user_error(cml("report", str(tmp_path)), "no results.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["record", "predictions", "weights"])
def test_a_damaged_finished_stage_is_redone_on_resume(tmp_path, tiny_backbone, caplog, damage):
    config, run_dir = fresh_run(tmp_path, tiny_backbone)
    stage = run_dir / "stages" / "full_finetune" / "1-update"
    if damage == "record":
        state = json.loads((stage / "state.json").read_text())
        state["record"] = {"x": 1}
        (stage / "state.json").write_text(json.dumps(state))
    elif damage == "predictions":
        (run_dir / "predictions" / "full_finetune" / "1-update.jsonl").unlink()
    else:
        (stage / "model.safetensors").unlink()
    reference = json.loads((run_dir / "results.json").read_text())
    with caplog.at_level(logging.WARNING, logger="cml"):
        resumed = Experiment(load_config(config), resume=True).run()
    assert "a saved stage cannot be read" in caplog.text
    assert resumed["stages"][1]["scores"] == reference["stages"][1]["scores"]


def test_an_in_progress_checkpoint_that_does_not_fit_is_named(tmp_path, tiny_backbone):
    path = run_config(tmp_path, tiny_backbone, checkpoint_every_steps=2)
    interrupt_run(path, "initial/initial", 4)
    state_file = tmp_path / "runs" / "t" / "checkpoints" / "initial" / "0" / "latest" / "state.json"
    state = json.loads(state_file.read_text())
    state["scheduler"] = {}
    state_file.write_text(json.dumps(state))
    with pytest.raises(CMLError, match="does not fit this training") as err:
        Experiment(load_config(path), resume=True).run()
    assert err.value.file == str(state_file.parent)


@pytest.mark.parametrize("break_it", ["empty weights", "zero heads", "deep config"])
def test_a_broken_model_folder_is_named(tiny_backbone, tmp_path, break_it):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_backbone, folder)
    if break_it == "empty weights":
        (folder / "model.safetensors").write_bytes(b"")
    elif break_it == "zero heads":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": 0}))
    else:
        (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_user_error(cml("model", "info", str(folder)), "cannot load the model")


@pytest.mark.parametrize("code, expected", [("zh-yue", "yue"), ("ar-arz", "arz"), ("sgn-ase", "ase"),
                                            ("de_pud", "deu"), ("zh-TW", "cmn_Hant")])
def test_an_extended_language_subtag_is_the_language(code, expected):
    from cml.languages import canonical

    assert canonical(code) == expected


def test_line_numbers_count_lone_carriage_returns_and_quoted_csv_lines(tmp_path):
    from cml.config import DelimitedSource
    from cml.io import decode_text
    from cml.task_family import TaskFamily

    with pytest.raises(CMLError) as err:
        decode_text(b"a\rb\rc\xff\r", "f")
    assert err.value.line == 3
    write_splits(tmp_path, "csv", 'text,label\n"one\ntwo\nthree",a\nok,b\nbad\n')
    with pytest.raises(CMLError, match="expected 2 columns") as err:
        read_dataset(DelimitedSource(format="csv", path=str(tmp_path)), TaskFamily.classification)
    assert err.value.line == 6


def test_a_nan_loss_and_an_overlong_max_length_are_said(tiny_backbone):
    from types import SimpleNamespace

    from cml.config import ModelConfig
    from cml.experiment import learning_warnings
    from cml.task_family import TaskFamily
    from cml.tasks import make_task

    task = SimpleNamespace(primary_metric="accuracy", family=TaskFamily.seq2seq)
    assert "NaN" in learning_warnings(task, {"train": {"epoch_losses": [1.0, float("nan")]}}, {})[0]
    tagging = make_task(TaskFamily.tagging, ["O", "X"], ModelConfig(name=tiny_backbone, max_length=1000))
    assert tagging.max_length == 64  # the tiny backbone's positions


def test_predict_keeps_stderr_quiet(finished_run):
    """transformers' load report ("MISSING ... newly initialized") is about the head that the stage's weights
    replace at once: on a terminal it read like an error."""
    result = cml("predict", str(finished_run / "runs" / "t"), "--lang", "hin", input="hinw1\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["lang"] == "hin"
    assert result.stderr == ""


def test_predict_top_k_ranks_labels_with_probabilities(finished_run):
    run = str(finished_run / "runs" / "t")
    lines = "deusport1 deuw2\nhinfood0 hinw1\nframusic3\n"
    plain = [json.loads(line) for line in cml("predict", run, "--lang", "deu", input=lines).stdout.splitlines()]
    result = cml("predict", run, "--lang", "deu", "--top-k", "2", input=lines)
    assert result.exit_code == 0, result.output
    ranked = [json.loads(line) for line in result.stdout.splitlines()]
    for with_k, without in zip(ranked, plain):
        assert with_k["prediction"] == without["prediction"] == with_k["top_k"][0]["label"]
        first, second = with_k["top_k"]
        assert 1.0 >= first["probability"] >= second["probability"] >= 0.0 and first["label"] != second["label"]
    assert cml("predict", run, "--top-k", "0", input=lines).exit_code == 2


def test_tagging_top_k_ranks_each_word(tiny_backbone):
    import torch

    from cml.config import ModelConfig
    from cml.data.examples import Example
    from cml.evaluation.inference import predict
    from cml.task_family import TaskFamily
    from cml.tasks import make_task

    task = make_task(TaskFamily.tagging, ["O", "B-X", "I-X"], ModelConfig(name=tiny_backbone))
    torch.manual_seed(0)
    model = task.build_model()
    examples = [Example(str(i), "deu", tokens=("deusport1", "deuw2", "deufood0")[: i + 1], tags=("O",) * (i + 1))
                for i in range(3)]
    features = task.encode(examples)
    tags = predict(model, task, features, 8)
    ranked = predict(model, task, features, 8, top_k=3)
    assert [[word[0]["label"] for word in sentence] for sentence in ranked] == tags
    assert all(abs(sum(t["probability"] for t in word) - 1) < 1e-5 for sentence in ranked for word in sentence)

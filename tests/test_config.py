import pytest
import yaml
from helpers import write_config

from cml.config import load_config
from cml.errors import CMLError

BASE = {"data": {"format": "sib200", "path": "data"}, "stream": {"stages": [{"name": "s0"}]}}


def test_paths_resolve_against_the_config_folder(tmp_path):
    config = load_config(write_config(tmp_path / "c.yaml", **BASE))
    assert config.data.path == str(tmp_path / "data")
    assert config.stream.stages[0].amount == 1.0


def test_set_overrides_parse_yaml_values(tmp_path):
    path = write_config(tmp_path / "c.yaml", **BASE)
    config = load_config(path, ["seed=7", "stream.stages.0.amount=12", "data.languages=[de, hi]"])
    assert (config.seed, config.stream.stages[0].amount, config.data.languages) == (7, 12, ["deu", "hin"])


def test_yaml_booleans_are_true_and_false_only(tmp_path):
    """YAML 1.1 reads a bare no/yes/on/off as a boolean: Accelerate's `no` and Norwegian's `no` must stay
    strings, in the file and after --set, while boolean settings still take true/false (and yes/no)."""
    path = tmp_path / "c.yaml"
    path.write_text("name: t\ntask: classification\ndata: {format: sib200, path: data, languages: [de, no]}\n"
                    "stream: {stages: [{name: s0, languages: [no]}]}\ntraining: {mixed_precision: no}\n")
    config = load_config(path)
    assert (config.training.mixed_precision, config.data.languages) == ("no", ["deu", "nor"])
    assert config.stream.stages[0].languages == ["nor"]
    assert load_config(path, ["training.mixed_precision=bf16"]).training.mixed_precision == "bf16"
    assert load_config(path, ["training.mixed_precision=no"]).training.mixed_precision == "no"
    assert load_config(path, ["training.select_best=false"]).training.select_best is False
    assert load_config(path, ["training.select_best=no"]).training.select_best is False
    with pytest.raises(CMLError, match="mixed_precision"):
        load_config(path, ["training.mixed_precision=yes"])


def test_error_names_file_line_and_key_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "task": "classification", **BASE}, sort_keys=False).replace(
        "- name: s0", "- name: s0\n    amount: 1.5"))
    with pytest.raises(CMLError) as err:
        load_config(path)
    assert (err.value.file, err.value.key) == (str(path), "stream.stages.0.amount")
    assert err.value.line == path.read_text().splitlines().index("    amount: 1.5") + 1
    assert "fraction must be in (0, 1]" in err.value.message


@pytest.mark.parametrize("change, key, message", [
    ({"task": "regression"}, "task", "Input should be"),
    ({"data": {"format": "sib200", "path": "d", "languages": ["xx"]}}, "data.sib200.languages", "unknown language code 'xx'"),
    ({"stream": {"stages": []}}, "stream.stages", "at least 1 item"),
    ({"strem": {}}, "strem", "unknown setting"),
    ({"data": {"format": "parquet"}}, "data", "format"),
])
def test_validation_errors(tmp_path, change, key, message):
    path = write_config(tmp_path / "c.yaml", **{**BASE, **change})
    with pytest.raises(CMLError, match=message) as err:
        load_config(path)
    assert err.value.key == key


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(CMLError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  task: [\n")
    with pytest.raises(CMLError, match="invalid YAML") as err:
        load_config(bad)
    assert err.value.line == 2


def _literals(union) -> set[str]:
    from typing import get_args

    members = get_args(get_args(union)[0])  # Annotated[Union[...], ...] -> the Union's members
    return {value for member in members for field in ("format", "method") if field in member.model_fields
            for value in get_args(member.model_fields[field].annotation)}


def test_every_configurable_format_and_method_has_an_importable_implementation():
    from pkgutil import resolve_name

    from cml.config import DataSource, StrategyConfig
    from cml.data.readers import READERS
    from cml.strategies import METHODS

    for union, registry, package in ((DataSource, READERS, "cml.data.readers"),
                                     (StrategyConfig, METHODS, "cml.strategies")):
        assert set(registry) == _literals(union)
        for target in registry.values():
            assert callable(resolve_name(f"{package}.{target}"))


def test_max_per_split_caps_each_split_or_all():
    from pydantic import ValidationError

    from cml.config import ConlluSource

    caps = ConlluSource.model_validate({"format": "conllu", "max_per_split": {"train": 400, "test": 200}}).max_per_split
    assert (caps.train, caps.dev, caps.test) == (400, None, 200)
    assert ConlluSource.model_validate({"format": "conllu", "max_per_split": 5}).max_per_split == 5
    for wrong in ({"train": 0}, {"trian": 3}, 0, "x", True):
        with pytest.raises(ValidationError):
            ConlluSource.model_validate({"format": "conllu", "max_per_split": wrong})


def test_max_per_split_keeps_the_first_examples_of_each_split(tmp_path):
    from cml.config import DelimitedSource
    from cml.data.readers import read_dataset
    from cml.task_family import TaskFamily

    for split, n in (("train", 9), ("dev", 6), ("test", 7)):
        folder = tmp_path / "eng"
        folder.mkdir(exist_ok=True)
        rows = "".join(f"{split}{i}\tpos\n" for i in range(n))
        (folder / f"{split}.tsv").write_text(f"text\tlabel\n{rows}", encoding="utf-8")
    source = DelimitedSource.model_validate({"format": "tsv", "path": str(tmp_path),
                                             "max_per_split": {"train": 4, "test": 2}})
    splits = read_dataset(source, TaskFamily.classification).splits["eng"]
    assert {split: [e.text for e in examples] for split, examples in splits.items()} == {
        "train": ["train0", "train1", "train2", "train3"], "dev": [f"dev{i}" for i in range(6)],
        "test": ["test0", "test1"]}

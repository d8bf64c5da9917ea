import json
import subprocess
import sys

import pytest
from conftest import ROOT, needs_shared_data
from helpers import write_config, write_sib_like

CML = [sys.executable, "-m", "cml.cli"]


def cml(*args, cwd=None):
    return subprocess.run([*CML, *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def config(tmp_path):
    write_sib_like(tmp_path / "data", n=(30, 5, 6))
    return write_config(tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
                        stream={"stages": [{"name": "initial", "amount": 10},
                                           {"name": "update", "languages": ["hin"], "amount": 5}]})


def test_help_of_every_command():
    for args in ([], ["data"], ["data", "stats"], ["run"], ["report"], ["typology"], ["model"], ["predict"]):
        result = cml(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_stats_table_and_json(config):
    table = cml("data", "stats", str(config), "--labels")
    assert table.returncode == 0, table.stderr
    assert "initial" in table.stdout and "hin" in table.stdout
    data = json.loads(cml("data", "stats", str(config), "--json").stdout)
    assert data["stages"] == [{"name": "initial", "counts": {"deu": 10, "fra": 10, "hin": 10}},
                              {"name": "update", "counts": {"hin": 5}}]
    assert data["test"] == {"deu": 6, "fra": 6, "hin": 6}


def test_stats_is_deterministic_per_seed(config):
    labelled = lambda *extra: cml("data", "stats", str(config), "--json", "--labels", *extra).stdout  # noqa: E731
    assert labelled() == labelled()
    assert labelled() != labelled("--set", "seed=3")


def test_bad_input_exits_nonzero_with_location_and_no_output(config, tmp_path):
    bad_row = tmp_path / "data" / "deu_Latn" / "train.tsv"
    bad_row.write_text(bad_row.read_text() + "99\ta\n")
    result = cml("data", "stats", str(config), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{bad_row}:32: expected 3 tab-separated columns, got 2" in result.stderr


def test_override_error_names_the_key(config):
    result = cml("data", "stats", str(config), "--set", "stream.stages.0.amount=500")
    assert result.returncode == 2
    # the value came from --set, so the error names the argument (and the stage it reached), not a config line
    assert ("--set stream.stages.0.amount (stream.stages.0): stage 'initial' asks for 500 deu examples, but only "
            "30 remain") in result.stderr


@needs_shared_data()
@pytest.mark.integration
@pytest.mark.parametrize("name", ["sib200", "pud_pos"])
def test_shipped_configs_on_shared_data(name):
    result = cml("data", "stats", str(ROOT / "configs" / f"{name}.yaml"), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert len(stats["languages"]) >= 12 and len(stats["stages"]) == 2
    assert 0 < len(stats["stages"][1]["counts"]) <= len(stats["languages"]) / 3


@needs_shared_data()
@pytest.mark.integration
def test_all_sib200_and_pud_languages_read(tmp_path):
    from conftest import SHARED_DATA

    from cml.config import ConlluSource, SIB200Source
    from cml.data.readers import read_dataset
    from cml.task_family import TaskFamily

    sib = read_dataset(SIB200Source(format="sib200", path=str(SHARED_DATA / "sib200")), TaskFamily.classification)
    assert len(sib.languages) == 205
    assert all(c == {"train": 701, "dev": 99, "test": 204} for c in sib.counts().values())
    pud = read_dataset(ConlluSource(format="conllu", path=str(SHARED_DATA / "ud_pud")), TaskFamily.tagging)
    assert len(pud.languages) == 20
    assert all(sum(c.values()) == 1000 for c in pud.counts().values())

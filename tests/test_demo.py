"""The demo (`make demo`, scripts/demo.sh, docs/demo.md) without running it: its two configs are valid release
configs and agree with each other (the update scores every language v1 serves on v1's own dev and test
sentences, its batch is new data for some of them, its strategy and reference are the ones the docs describe),
and, where ../shared/data is present, the data they name reads as the docs say."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA, needs_shared_data

from cml.config import TrainConfig, UpdateConfig, load_config
from cml.task_family import TaskFamily

DEMO = ROOT / "configs" / "demo"
SCRIPT = ROOT / "scripts" / "demo.sh"


@pytest.fixture(scope="module")
def configs() -> tuple[TrainConfig, UpdateConfig]:
    return (load_config(DEMO / "train.yaml", kind=TrainConfig),
            load_config(DEMO / "update.yaml", kind=UpdateConfig))


def test_the_demo_configs_are_valid_and_consistent(configs):
    train, update = configs
    assert train.task is update.task is TaskFamily.tagging
    assert train.model.name == "embedded:multilingual-e5-small" and train.model.max_length <= 64
    assert "max_length" not in update.model.model_fields_set  # the update inherits v1's model settings
    # paths are relative to the config file and land in the shared data, read in place
    for source in (train.data, update.data, update.eval):
        assert Path(source.path).is_relative_to(SHARED_DATA.resolve()), source.path
    # the update scores v1's languages on v1's own dev and test sentences: the same source, selection and cap
    assert update.eval.model_dump() == train.data.model_dump()
    assert 4 <= len(train.data.languages) <= 6
    # the batch is new data from another source for one or two of those languages
    assert update.data.path != train.data.path
    assert 1 <= len(update.data.languages) <= 2 and set(update.data.languages) <= set(train.data.languages)
    assert update.strategy.method == "laft_uriel"
    assert [reference.method for reference in update.references] == ["full_finetune"]
    assert (update.ship.max_significant_losses, update.ship.min_mean_delta) == (0, 0.0)
    assert train.resolved_training.epochs <= 3 and update.resolved_training.epochs <= 3


def test_the_script_runs_the_demo_configs_and_make_demo_runs_the_script():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    for command in ("train configs/demo/train.yaml --out runs/demo/v1 --overwrite",
                    "update configs/demo/update.yaml --from runs/demo/v1 --out runs/demo/v2 --overwrite",
                    "check runs/demo/v2", "export runs/demo/v2 --format peft --out runs/demo/v2-peft --overwrite",
                    "predict runs/demo/v2 --lang fin"):
        assert command in text, command
    assert "configs/.." not in text and "../runs" not in text
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe and "bash scripts/demo.sh" in recipe.group(1)


@needs_shared_data()
def test_the_demo_data_reads_as_documented(configs):
    from cml.data.readers import read_dataset

    train, update = configs
    v1 = read_dataset(train.data, train.task)
    assert v1.languages == sorted(train.data.languages)
    assert all(counts == {"train": 100, "dev": 100, "test": 100} for counts in v1.counts().values()), v1.counts()
    batch = read_dataset(update.data, update.task)
    assert batch.languages == ["fin"] and sum(batch.counts()["fin"].values()) == 300
    evaluation = read_dataset(update.eval, update.task)
    for lang in v1.languages:
        for split in ("dev", "test"):
            assert [e.id for e in evaluation.splits[lang][split]] == [e.id for e in v1.splits[lang][split]]
    # no sentence of the batch is one of the sentences the update is chosen or scored on
    scored = {e.tokens for split in ("dev", "test") for e in evaluation.splits["fin"][split]}
    assert not scored & {e.tokens for split in ("train", "dev", "test") for e in batch.splits["fin"][split]}

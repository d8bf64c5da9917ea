"""docs/api.md's examples run as written, in order, in a folder holding the README quickstart's files (with
the tiny backbone as the model, so that they run in seconds)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from test_readme import ROOT, quickstart, write_data


def test_the_api_examples_run(tmp_path, monkeypatch, tiny_backbone):
    files, _, header = quickstart()
    for name, body in files.items():
        config = yaml.safe_load(body)
        if name == "train.yaml":
            config["model"] = {"name": tiny_backbone, "max_length": 32, "freeze_embeddings": False}
        config["training"] = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3}
        (tmp_path / name).write_text(yaml.safe_dump(config), encoding="utf-8")
    write_data(tmp_path / "data", header)
    monkeypatch.chdir(tmp_path)
    examples = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), flags=re.S)
    assert len(examples) == 4
    namespace: dict = {}
    for code in examples:
        exec(compile(code, "docs/api.md", "exec"), namespace)  # noqa: S102 (our own documentation)
    assert Path("export/v2/routes.json").is_file()
    assert namespace["first"]["route"] and len(namespace["mixed"]) == 2

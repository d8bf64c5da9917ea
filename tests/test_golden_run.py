"""A refactor changes no result: a tiny run with every kind of strategy (full model, LoRA, gated modules, replay,
a penalty, no update) writes the same ``results.json`` as the one kept in ``tests/golden/`` (made before the
run-folder, strategy and benchmark code moved, issue 32), apart from what differs between any two runs: times,
package versions and the temporary paths. Floats are kept to 6 significant digits and compared to a relative
1e-5: the CPU's kernels (another machine's vector width) move a training loss in its sixth digit, and rounding at a
digit's boundary turns that into a difference of one in the last digit kept. The run uses one thread, as the golden
file's did: another thread count sums in another order, which can move a prediction."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers import run_config

from cml.config import load_config
from cml.experiment import Experiment

GOLDEN = Path(__file__).parent / "golden" / "run_results.json"
STRATEGIES = ("strategies=[{method: full_finetune}, {method: no_update}, {method: lora_per_language, "
              "training: {learning_rate: 0.01}}, {method: laft_uriel, training: {learning_rate: 0.01}}, "
              "{method: laft_uriel, name: laft_ungated, gate: false, hierarchical: true, training: {learning_rate: 0.01}}, "
              "{method: replay, per_language: 4}, {method: ewc}]")


def comparable(value, key: str = ""):
    """``value`` without what any two runs differ in, floats to 6 significant digits."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in sorted(value.items())
                if not (k.endswith("seconds") or k.endswith("per_second") or k in {"versions", "inputs"})}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    if isinstance(value, str) and key in {"output_dir", "path", "name"} and os.sep in value:
        return Path(value).name
    return value


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_tiny_run_writes_the_golden_results(tmp_path, tiny_backbone, one_thread):
    results = Experiment(load_config(run_config(tmp_path, tiny_backbone, epochs=4), [STRATEGIES])).run()
    got = comparable(json.loads((tmp_path / "runs" / "t" / "results.json").read_text(encoding="utf-8")))
    assert got == comparable(results)
    if os.environ.get("CML_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    assert_same(got, json.loads(GOLDEN.read_text(encoding="utf-8")))


def assert_same(got, want, where: str = "results") -> None:
    """``got`` equals ``want`` but for floats within a relative 1e-5; the first difference is named by its path."""
    if isinstance(want, dict) and isinstance(got, dict):
        assert got.keys() == want.keys(), f"{where}: keys {sorted(got.keys() ^ want.keys())} differ"
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), f"{where}: {len(got)} items, the golden file has {len(want)}"
        for position, (item, wanted) in enumerate(zip(got, want)):
            assert_same(item, wanted, f"{where}[{position}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-9), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"

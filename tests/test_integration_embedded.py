"""The embedded model end to end on a small slice of the real data (a minute or less on 2 cores)."""

import json

import pytest
from conftest import ROOT, needs_shared_data

from cml.config import load_config
from cml.experiment import Experiment

pytestmark = [pytest.mark.integration, needs_shared_data()]


@pytest.mark.parametrize("config, overrides", [
    ("sib200.yaml", ["data.languages=[deu_Latn, yor_Latn]", "stream.stages.1.languages=[deu]"]),
    ("pud_pos.yaml", ["data.languages=[de, ko]", "stream.stages.1.languages=[deu]"]),
])
def test_embedded_model_runs_a_small_cml_stream(tmp_path, config, overrides):
    cfg = load_config(ROOT / "configs" / config, [
        *overrides, f"output_dir={tmp_path}", "data.max_per_split=24", "stream.disjoint_sentences=false",
        "stream.stages.0.amount=8", "stream.stages.0.per_language={}", "stream.stages.1.amount=8",
        "model.max_length=48", "training.epochs=1", "training.batch_size=8", "training.eval_batch_size=32",
        "strategies=[{method: full_finetune}, {method: laft_uriel, n_groups: 2, lora: {layers: [10, 11]}}]"])
    results = Experiment(cfg).run()
    assert [s["name"] for s in results["stages"]] == ["initial", "update"]
    assert set(results["summary"]) == {"full_finetune", "laft_uriel"}
    for stage in results["stages"]:
        assert set(stage["scores"]) == set(results["languages"])
        assert all(0.0 <= v <= 1.0 for v in stage["scores"].values())
        assert stage["train"]["steps"] >= 1
    saved = json.loads((tmp_path / cfg.name / "results.json").read_text())
    assert saved["metric"] in ("accuracy", "token_accuracy")

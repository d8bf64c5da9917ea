"""Small builders for test data and configs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves a script's annotations through its module
    spec.loader.exec_module(module)
    return module


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` with its bytes (None for a folder)."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def write_config(path: Path, **sections) -> Path:
    config = {"name": "t", "task": "classification", "seed": 0, "output_dir": str(path.parent / "runs")}
    config.update(sections)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_sib_like(root: Path, langs=("deu_Latn", "fra_Latn", "hin_Deva"), n=(20, 5, 6),
                   labels=("a", "b", "c")) -> Path:
    """A SIB-200-shaped folder with parallel ids: the same index_id in every language."""
    for lang in langs:
        folder = root / lang
        folder.mkdir(parents=True)
        (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        start = 0
        for split, count in zip(("train", "dev", "test"), n):
            rows = ["index_id\tcategory\ttext"]
            rows += [f"{i}\t{labels[i % len(labels)]}\t{lang} sentence {i}" for i in range(start, start + count)]
            (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
            start += count
    return root


def run_config(tmp_path: Path, backbone: str, **training) -> Path:
    """A tiny two-stage run on the tiny backbone: stage 0 on three languages, an update on Hindi."""
    from tiny import write_topic_data

    write_topic_data(tmp_path / "data", n=(72, 12, 12))
    return write_config(tmp_path / "c.yaml", data={"format": "sib200", "path": "data"},
                        model={"name": backbone, "max_length": 32, "freeze_embeddings": False},
                        training={"epochs": 6, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0,
                                  **training},
                        stream={"stages": [{"name": "initial", "amount": 48},
                                           {"name": "update", "languages": ["hin"], "amount": 24}]})


class Interrupted(Exception):
    """Raised inside a training loop to stop a run as a crash would (the run's checkpoints stay)."""


def interrupt_run(config_path: Path, stage: str, step: int, overrides: list[str] | tuple[str, ...] = (),
                  strategy_module: str = "cml.strategies.full_finetune") -> None:
    """Run ``config_path`` until optimizer step ``step`` of the training described as ``stage``
    (``"initial/initial"`` for stage 0, ``"full_finetune/update"`` for the update), and stop it there.
    ``strategy_module`` is the module whose ``train`` that stage calls (``cml.strategies.modular.strategy`` for the
    LoRA methods)."""
    import importlib

    import pytest

    from cml.config import load_config
    from cml.experiment import Experiment

    def crash(done: int) -> None:
        if done == step:
            raise Interrupted

    module = importlib.import_module(strategy_module)
    original = module.train
    module.train = lambda *a, **k: original(*a, **{**k, "on_step": crash}) \
        if k["description"] == stage else original(*a, **k)
    try:
        with pytest.raises(Interrupted):
            Experiment(load_config(config_path, list(overrides))).run()
    finally:
        module.train = original


class PairDistances:
    """A typology matrix reduced to what routing reads (``distance``): a table of language pairs, ``default``
    for the pairs it lacks. Lets a test put each language exactly where a routing rule's boundary is."""

    def __init__(self, pairs: dict[tuple[str, str], float], default: float = 1.0):
        self.pairs = {frozenset(pair): value for pair, value in pairs.items()}
        self.default = default

    def distance(self, a: str, b: str) -> float:
        return 0.0 if a == b else self.pairs.get(frozenset((a, b)), self.default)


def grouped_strategy(groups: dict[str, str], distances: PairDistances, **options):
    """A LAFT-URIEL strategy whose groups and typology are given rather than computed from URIEL."""
    from cml.config import ModularConfig
    from cml.strategies.laft_uriel import LaftUriel

    strategy = LaftUriel(ModularConfig(method="laft_uriel", **options))
    strategy.groups, strategy.typology = dict(groups), distances
    return strategy


def gate_with_dev_items(monkeypatch, strategy, modules: list[str], dev_items: dict[str, dict[tuple, list[float]]],
                        seed: int = 0):
    """``strategy.choose_routes`` after training ``modules``, where a language's dev evaluation on a route
    gives the item scores ``dev_items[lang][route]`` (accuracy: their mean). The fake evaluation reads the route
    from the model it is handed, as the real one does, so a gate that scores one route and deploys another
    gets another answer. Returns the routes, the gate's record and the (language, route) pairs evaluated."""
    from types import SimpleNamespace

    import cml.strategies.modular.gate as gate

    evaluated = []

    def evaluate_languages(model, task, data, batch_size):
        results = {}
        for lang in data:
            route = model.routes[lang]
            evaluated.append((lang, route))
            items = dev_items[lang][route]
            results[lang] = ({"accuracy": sum(items) / len(items)}, list(items))
        return results

    monkeypatch.setattr(gate, "evaluate_languages", evaluate_languages)
    task = SimpleNamespace(primary_metric="accuracy", item_scores=lambda examples, predictions: predictions)
    ctx = SimpleNamespace(languages=sorted(dev_items), task=task, dev={lang: ([], []) for lang in dev_items},
                          training=SimpleNamespace(eval_batch_size=8), seed=seed)
    routes, record = strategy.choose_routes(SimpleNamespace(routes={}), sorted(modules), ctx)
    return routes, record, evaluated

"""The CML experiment recipe: train the initial model on stage 0, apply each update stage, evaluate every
language after every stage, and write ``results.json``. Interrupted runs continue with ``resume``.

Run folder::

    <output_dir>/<name>/results.json, run.log
    <output_dir>/<name>/stages/<strategy>/<k>-<stage>/{model.safetensors, state.json}
    <output_dir>/<name>/predictions/<strategy>/<k>-<stage>.jsonl      # per example: prediction, score
    <output_dir>/<name>/checkpoints/...                                # in-progress training, removed after
"""

from __future__ import annotations

import json
import logging
import platform
import time
from importlib.metadata import version
from pathlib import Path

import torch

from .config import ExperimentConfig, TrainingConfig
from .data.readers import read_dataset
from .data.stream import Stream, build_stream
from .evaluation.inference import predict
from .io import atomic_open, write_json
from .tasks import make_task
from .training.checkpoint import load_model_state, read_state, save_checkpoint
from .training.trainer import make_accelerator, train

log = logging.getLogger("cml.run")
NAIVE = "full_finetune"


def _versions() -> dict[str, str]:
    names = ["continual-multilingual", "torch", "transformers", "accelerate", "peft", "tokenizers", "sacrebleu",
             "seqeval"]
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def _setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("cml")
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.FileHandler)] + [handler]
    root.setLevel(logging.INFO)


def _frozen_embedding_names(model: torch.nn.Module) -> tuple[str, ...]:
    weight = model.get_input_embeddings().weight
    return tuple(name for name, tensor in model.state_dict(keep_vars=True).items()
                 if tensor.data_ptr() == weight.data_ptr())


def build_model(task, config: ExperimentConfig) -> torch.nn.Module:
    torch.manual_seed(config.seed)  # the head's random init is part of the experiment's determinism
    model = task.build_model()
    if config.model.freeze_embeddings:
        # The embedding table is ~80% of the embedded model's parameters and barely moves in fine-tuning.
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


class Experiment:
    def __init__(self, config: ExperimentConfig, *, resume: bool = False):
        self.config = config
        self.resume = resume
        self.run_dir = Path(config.output_dir) / config.name
        dataset = read_dataset(config.data, config.task)
        self.stream: Stream = build_stream(dataset, config.stream, config.stream_seed)
        labels = dataset.label_set or dataset.observed_labels()
        self.task = make_task(config.task, labels, config.model)
        self.accelerator = make_accelerator(config.training, self.run_dir)
        started = time.perf_counter()
        self.dev = {lang: (ex, self.task.encode(ex)) for lang, ex in self.stream.dev.items()}
        self.test = {lang: (ex, self.task.encode(ex)) for lang, ex in self.stream.test.items()}
        self.tokenize_seconds = time.perf_counter() - started

    def stage_dir(self, strategy: str, index: int) -> Path:
        return self.run_dir / "stages" / strategy / f"{index}-{self.stream.stages[index].name}"

    def training_config(self, index: int) -> TrainingConfig:
        if index == 0 or not self.config.update_training:
            return self.config.training
        return self.config.training.model_copy(update=self.config.update_training)

    def run(self) -> dict:
        _setup_logging(self.run_dir)
        if not self.resume and (self.run_dir / "results.json").exists():
            log.info("overwriting the results of an earlier run in %s", self.run_dir)
        model = build_model(self.task, self.config)
        frozen = _frozen_embedding_names(model) if self.config.model.freeze_embeddings else ()
        stages = []
        for index, stage in enumerate(self.stream.stages):
            stage_dir = self.stage_dir(NAIVE, index)
            saved = read_state(stage_dir) if self.resume else None
            if saved and saved.get("complete"):
                load_model_state(model, stage_dir)
                stages.append(saved["record"])
                log.info("stage %s: reused from %s", stage.name, stage_dir)
                continue
            features = [f for lang in stage.languages for f in self.task.encode(stage.train[lang])]
            result = train(model, self.task, features, self.training_config(index), accelerator=self.accelerator,
                           seed=self.config.seed + index, dev={lang: self.dev[lang] for lang in self.stream.languages},
                           checkpoint_dir=self.run_dir / "checkpoints" / NAIVE / str(index), resume=self.resume,
                           description=f"{stage.name}")
            model = self.accelerator.unwrap_model(model)
            record = {"name": stage.name, "index": index, "updated_languages": stage.languages,
                      "train_examples": stage.counts(), "train": result.to_json(),
                      **self.evaluate(model, NAIVE, index)}
            save_checkpoint(stage_dir, {k: v for k, v in model.state_dict().items() if k not in frozen},
                            {"complete": True, "record": record})
            stages.append(record)
        results = self.results(stages)
        write_json(self.run_dir / "results.json", results)
        return results

    def evaluate(self, model, strategy: str, index: int) -> dict:
        started = time.perf_counter()
        scores, metrics, n = {}, {}, 0
        path = self.run_dir / "predictions" / strategy / f"{index}-{self.stream.stages[index].name}.jsonl"
        with atomic_open(path) as handle:
            for lang, (examples, features) in self.test.items():
                predictions = predict(model, self.task, features, self.config.training.eval_batch_size)
                metrics[lang] = self.task.score(examples, predictions)
                scores[lang] = metrics[lang][self.task.primary_metric]
                for example, prediction, item in zip(examples, predictions,
                                                     self.task.item_scores(examples, predictions)):
                    handle.write(json.dumps({"lang": lang, "id": example.id, "prediction": prediction,
                                             "score": item}, ensure_ascii=False) + "\n")
                n += len(examples)
        seconds = time.perf_counter() - started
        return {"scores": scores, "metrics": metrics, "eval_seconds": seconds, "eval_examples_per_second": n / seconds,
                "predictions": str(path.relative_to(self.run_dir))}

    def results(self, stages: list[dict]) -> dict:
        return {"name": self.config.name, "task": self.config.task.value, "metric": self.task.primary_metric,
                "seed": self.config.seed, "languages": self.stream.languages, "stages": stages,
                "strategies": {NAIVE: {"stages": stages}},
                "tokenize_seconds": self.tokenize_seconds,
                "config": self.config.model_dump(mode="json"), "versions": _versions()}

"""The interface every task family implements, and the pieces they share."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import torch

from ..data.examples import Example
from ..errors import CMLError
from ..models.embedded import loading_model
from ..task_family import TaskFamily

log = logging.getLogger("cml.task")

IGNORE = -100
"""Label value the losses skip: padding, special tokens, continuation sub-words."""


class Task(ABC):
    """Turns examples into tensors and model outputs into predictions and scores.

    Features are tokenised once (``encode``) and reused by every stage and strategy; ``predict`` returns
    one decoded prediction per example of the batch; ``score`` maps predictions to metrics where
    ``primary_metric`` is the one deltas and gates compare; ``item_metric_scores`` gives each example's score
    in every metric (1/0, a fraction of tokens, a sentence's chrF) for paired bootstraps and flip rates.
    """

    family: TaskFamily
    metrics: tuple[str, ...]
    """The numeric metrics ``score`` returns (``cml.metrics``), the family's default primary metric first."""

    def __init__(self, labels: Sequence[str] | None, model_config, primary_metric: str | None = None):
        self.labels = list(labels) if labels else []
        self.model_config = model_config
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.primary_metric = self.metrics[0] if primary_metric is None else self.computed(primary_metric)

    def computed(self, metric: str) -> str:
        """``metric`` if this task computes it; else a CMLError naming the setting that asked for it (the config
        layer knows every metric name, but only the labels tell a NER tag set from a POS one)."""
        if metric not in self.metrics:
            raise CMLError(f"this {self.family.value} task computes {', '.join(self.metrics)}, not {metric!r}",
                           key="evaluation.primary_metric")
        return metric

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        from ..models.embedded import resolve_model_path

        with loading_model(self.model_config.name):
            return AutoTokenizer.from_pretrained(resolve_model_path(self.model_config.name),
                                                 trust_remote_code=self.model_config.trust_remote_code)

    @cached_property
    def max_length(self) -> int:
        """``model.max_length``, cut to what the model's tokenizer says its positions take: a longer input
        would fail inside the model, and only on the first long example."""
        limit = self.tokenizer.model_max_length
        if isinstance(limit, int) and limit < self.model_config.max_length:
            log.warning("model.max_length %d is longer than the %d tokens %s takes: inputs are cut at %d",
                        self.model_config.max_length, limit, self.model_config.name, limit)
            return limit
        return self.model_config.max_length

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    def seeded_model(self, seed: int) -> torch.nn.Module:
        """``build_model`` with its random parts (a new head) drawn from ``seed``, part of a run's determinism,
        and the input embeddings frozen where ``model.freeze_embeddings`` says so: the table is ~80% of the
        embedded model's parameters and barely moves in fine-tuning."""
        torch.manual_seed(seed)
        model = self.build_model()
        if self.model_config.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    @abstractmethod
    def encode(self, examples: Sequence[Example]) -> list[dict[str, Any]]: ...

    @abstractmethod
    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def predict(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list: ...

    def top_k(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], k: int) -> list:
        """Per example, the ``k`` most probable labels with their probabilities (``predict`` ranked)."""
        raise CMLError(f"--top-k is for classification and tagging; a {self.family.value} task generates text")

    @staticmethod
    def ranked(logits: torch.Tensor, labels: Sequence[str], k: int) -> list:
        """The last dimension of ``logits`` as lists of ``{"label", "probability"}``, most probable first."""
        probabilities, indices = logits.float().softmax(-1).topk(min(k, len(labels)), dim=-1)

        def rank(values, positions):
            if positions and isinstance(positions[0], list):
                return [rank(v, p) for v, p in zip(values, positions)]
            return [{"label": labels[i], "probability": p} for i, p in zip(positions, values)]
        return rank(probabilities.tolist(), indices.tolist())

    @abstractmethod
    def score(self, examples: Sequence[Example], predictions: Sequence) -> dict[str, Any]: ...

    @abstractmethod
    def item_metric_scores(self, examples: Sequence[Example], predictions: Sequence) -> dict[str, list[float]]:
        """{metric: one score per example} for every metric in ``metrics``, on the scale ``score`` reports it.
        For corpus-level metrics the item scores stand in for the metric's spread (:mod:`cml.bootstrap`)."""

    def item_scores(self, examples: Sequence[Example], predictions: Sequence) -> list[float]:
        """The primary metric's item scores."""
        return self.item_metric_scores(examples, predictions)[self.primary_metric]

    new_parameter_names: frozenset[str] = frozenset()
    """Set by ``build_model``: the parameters its checkpoint lacked (a label head; an assembled decoder's
    cross-attention and output transform). ``training.new_parameters_lr_scale`` applies to them."""

    languages: list[str] | None = None
    """Set by the experiment: batches then carry ``lang_ids`` (indices into this list) for routing."""

    def features(self, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """``encode`` plus each example's language, tokenised once and reused by every stage and strategy."""
        encoded = self.encode(examples)
        for feature, example in zip(encoded, examples):
            feature["lang"] = example.lang
        return encoded

    def batch(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """``collate`` plus ``lang_ids`` when the task knows its languages (a routed model needs them)."""
        batch = self.collate(features)
        if self.languages is not None and features and "lang" in features[0]:
            index = {lang: i for i, lang in enumerate(self.languages)}
            batch["lang_ids"] = torch.tensor([index[f["lang"]] for f in features], dtype=torch.long)
        return batch

    @staticmethod
    def inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch without its labels: what a model gets at prediction time."""
        return {k: v for k, v in batch.items() if k != "labels"}

    def pad(self, sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
        # Hand-written on purpose: tokenizer.pad() cannot pad label sequences with -100.
        width = max(len(s) for s in sequences)
        return torch.tensor([list(s) + [value] * (width - len(s)) for s in sequences], dtype=torch.long)

    def collate_sequence_labels(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Inputs plus per-token labels padded with -100 (ignored by the loss): tagging and seq2seq."""
        batch = self.pad_inputs(features)
        batch["labels"] = self.pad([f["labels"] for f in features], IGNORE)
        return batch

    def pretrained_with_head(self, auto_class) -> torch.nn.Module:
        """The backbone with a fresh label head of this task's size (classification, tagging)."""
        from ..models.embedded import resolve_model_path

        with loading_model(self.model_config.name):
            model, loading = auto_class.from_pretrained(
                resolve_model_path(self.model_config.name), num_labels=len(self.labels),
                id2label=dict(enumerate(self.labels)), label2id=self.label_to_id,
                trust_remote_code=self.model_config.trust_remote_code, output_loading_info=True,
                use_safetensors=True)  # never a pickle: a model name may come from a file someone else wrote
        self.new_parameter_names = frozenset(loading["missing_keys"])
        return model

    def pad_inputs(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = self.pad([f["input_ids"] for f in features], self.tokenizer.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.tokenizer.pad_token_id).long()
                if self.tokenizer.pad_token_id is not None else torch.ones_like(input_ids)}

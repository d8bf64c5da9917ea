"""Sentence classification: a sequence-classification head; accuracy (primary) and macro-F1."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.examples import Example
from ..metrics import CLASSIFICATION_METRICS, accuracy, macro_f1
from ..task_family import TaskFamily
from .base import Task


class ClassificationTask(Task):
    family = TaskFamily.classification
    metrics = CLASSIFICATION_METRICS

    def build_model(self):
        from transformers import AutoModelForSequenceClassification

        return self.pretrained_with_head(AutoModelForSequenceClassification)

    def encode(self, examples: Sequence[Example]):
        encoded = self.tokenizer([e.text for e in examples], truncation=True,
                                 max_length=self.max_length)["input_ids"]
        return [{"input_ids": ids, "labels": self.label_to_id[e.label]} for ids, e in zip(encoded, examples)]

    def collate(self, features):
        batch = self.pad_inputs(features)
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch

    @torch.no_grad()
    def predict(self, model, batch):
        logits = model(**self.inputs(batch)).logits
        return [self.labels[i] for i in logits.argmax(-1).tolist()]

    @torch.no_grad()
    def top_k(self, model, batch, k):
        return self.ranked(model(**self.inputs(batch)).logits, self.labels, k)

    def score(self, examples, predictions):
        references = [e.label for e in examples]
        return {"accuracy": accuracy(references, predictions),
                "macro_f1": macro_f1(references, predictions, self.labels)}

    def item_metric_scores(self, examples, predictions):
        # Macro-F1 has no per-item score; an item's correctness stands in for it (the interval is moved to
        # macro-F1's own delta, see cml.bootstrap).
        correct = [float(e.label == p) for e, p in zip(examples, predictions)]
        return {"accuracy": correct, "macro_f1": correct}

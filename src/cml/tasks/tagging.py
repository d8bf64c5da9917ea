"""Token classification (POS, NER): the label sits on each word's first sub-word; the others are ignored.

Metrics: token accuracy for POS-like tag sets; seqeval entity F1 (strict IOB2; + precision, recall and token
accuracy) when the tag set is IOB2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.examples import Example
from ..metrics import (NER_METRICS, POS_METRICS, SEQEVAL_MODE, SEQEVAL_SCHEME, entity_f1, is_iob2,
                       sentence_entity_scores, token_accuracy)
from ..task_family import TaskFamily
from .base import IGNORE, Task


class TaggingTask(Task):
    family = TaskFamily.tagging

    def __init__(self, labels, model_config, primary_metric=None):
        self.ner = is_iob2(list(labels or []))
        self.metrics = NER_METRICS if self.ner else POS_METRICS
        super().__init__(labels, model_config, primary_metric)

    def build_model(self):
        from transformers import AutoModelForTokenClassification

        return self.pretrained_with_head(AutoModelForTokenClassification)

    def encode(self, examples: Sequence[Example]):
        encoded = self.tokenizer([list(e.tokens) for e in examples], is_split_into_words=True, truncation=True,
                                 max_length=self.max_length)
        return [{"input_ids": encoded["input_ids"][i],
                 "labels": first_subword_labels(encoded.word_ids(i), [self.label_to_id[t] for t in e.tags]),
                 "n_words": len(e.tokens)}
                for i, e in enumerate(examples)]

    def collate(self, features):
        return self.collate_sequence_labels(features)

    @torch.no_grad()
    def predict(self, model, batch):
        logits = model(**self.inputs(batch)).logits
        predicted = logits.argmax(-1)
        labelled = batch["labels"] != IGNORE
        # Words cut off by truncation have no prediction: they count as wrong ("O" for NER).
        return [[self.labels[i] for i in predicted[row][labelled[row]].tolist()]
                for row in range(predicted.shape[0])]

    @torch.no_grad()
    def top_k(self, model, batch, k):
        """Per word (its first sub-word, as ``predict``), the ``k`` most probable tags."""
        logits = model(**self.inputs(batch)).logits
        labelled = batch["labels"] != IGNORE
        return [self.ranked(logits[row][labelled[row]], self.labels, k) for row in range(logits.shape[0])]

    def _complete(self, examples, predictions):
        filler = "O" if self.ner else ""
        return [list(p) + [filler] * (len(e.tags) - len(p)) for e, p in zip(examples, predictions)]

    def score(self, examples, predictions):
        predictions = self._complete(examples, predictions)
        references = [list(e.tags) for e in examples]
        scores = {"token_accuracy": token_accuracy(references, predictions)}
        if self.ner:
            scores.update(entity_f1(references, predictions))
            scores["seqeval"] = {"mode": SEQEVAL_MODE, "scheme": SEQEVAL_SCHEME}
        return scores

    def item_metric_scores(self, examples, predictions):
        """Token accuracy: a sentence's share of correct tags. Entity metrics: the sentence's own entity scores
        (``sentence_entity_scores``)."""
        predictions = self._complete(examples, predictions)
        scores = {"token_accuracy": [sum(r == p for r, p in zip(e.tags, pred)) / len(e.tags)
                                     for e, pred in zip(examples, predictions)]}
        if self.ner:
            scores.update(sentence_entity_scores([e.tags for e in examples], predictions))
        return {metric: scores[metric] for metric in self.metrics}


def first_subword_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Label each word's first sub-word with the word's label; special tokens and continuations get IGNORE."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else word_labels[word])
        previous = word
    return labels

"""Task metrics as pure functions of references and predictions.

Each family computes several metrics; the first of its tuple below is its default primary metric (what deltas,
gates and the run's summary count; ``evaluation.primary_metric`` picks another): classification accuracy
(+ macro-F1), tagging token accuracy (POS) or entity F1 (NER, seqeval strict IOB2, + entity precision and
recall, + token accuracy), seq2seq exact match (+ chrF from sacrebleu, whose signature is recorded).

Every metric is a fraction in [0, 1], chrF included (sacrebleu's 0-100 score / 100), so that "points" are
100 x a value for every metric alike. Besides corpus scores, each metric has per-item scores (the ``sentence_``
functions here; :meth:`cml.tasks.base.Task.item_metric_scores`) for paired bootstraps.
"""

from __future__ import annotations

from collections.abc import Sequence

SEQEVAL_MODE = "strict"
SEQEVAL_SCHEME = "IOB2"

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
POS_METRICS = ("token_accuracy",)
NER_METRICS = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
SEQ2SEQ_METRICS = ("exact_match", "chrf")
METRIC_NAMES = frozenset(CLASSIFICATION_METRICS + POS_METRICS + NER_METRICS + SEQ2SEQ_METRICS)
"""Every metric some task computes: what ``evaluation.primary_metric`` may name."""


def accuracy(references: Sequence, predictions: Sequence) -> float:
    if len(references) != len(predictions):
        raise ValueError("references and predictions differ in length")
    if not references:
        return 0.0
    return sum(r == p for r, p in zip(references, predictions)) / len(references)


def macro_f1(references: Sequence[str], predictions: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-label F1 over ``labels`` (default: labels seen in the references)."""
    labels = sorted(set(references)) if labels is None else list(labels)
    scores = []
    for label in labels:
        tp = sum(r == label and p == label for r, p in zip(references, predictions))
        fp = sum(r != label and p == label for r, p in zip(references, predictions))
        fn = sum(r == label and p != label for r, p in zip(references, predictions))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def token_accuracy(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> float:
    flat_ref = [tag for sentence in references for tag in sentence]
    flat_pred = [tag for sentence in predictions for tag in sentence]
    return accuracy(flat_ref, flat_pred)


def entity_f1(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, strict IOB2: an entity counts only if exact)."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    kwargs = {"mode": SEQEVAL_MODE, "scheme": IOB2, "zero_division": 0}
    refs, preds = [list(s) for s in references], [list(s) for s in predictions]
    return {"entity_f1": float(f1_score(refs, preds, **kwargs)),
            "entity_precision": float(precision_score(refs, preds, **kwargs)),
            "entity_recall": float(recall_score(refs, preds, **kwargs))}


def sentence_entity_scores(references: Sequence[Sequence[str]],
                           predictions: Sequence[Sequence[str]]) -> dict[str, list[float]]:
    """Per sentence, entity F1, precision and recall over its own entities (strict IOB2, as :func:`entity_f1`).

    Why per sentence: the paired bootstrap needs an item score, and corpus entity F1 is no mean of anything. A
    sentence where there is nothing to get wrong counts as right: precision is 1 when it predicts no entity,
    recall 1 when its reference has none, F1 1 when both have none (a spurious entity makes F1 0).
    """
    from seqeval.scheme import IOB2, Entities

    def entities(sentences: Sequence[Sequence[str]]) -> list[set[tuple]]:
        return [{entity.to_tuple()[1:] for entity in sentence}
                for sentence in Entities([list(s) for s in sentences], IOB2, suffix=False).entities]

    scores: dict[str, list[float]] = {"entity_f1": [], "entity_precision": [], "entity_recall": []}
    for wanted, found in zip(entities(references), entities(predictions)):
        right = len(wanted & found)
        scores["entity_f1"].append(2 * right / (len(wanted) + len(found)) if wanted or found else 1.0)
        scores["entity_precision"].append(right / len(found) if found else 1.0)
        scores["entity_recall"].append(right / len(wanted) if wanted else 1.0)
    return scores


def exact_match(references: Sequence[str], predictions: Sequence[str]) -> float:
    return accuracy([r.strip() for r in references], [p.strip() for p in predictions])


def chrf(references: Sequence[str], predictions: Sequence[str]) -> tuple[float, str]:
    """Corpus chrF as a fraction (sacrebleu's 0-100 score / 100) and sacrebleu's signature string, which pins
    the metric's settings."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    score = metric.corpus_score(list(predictions), [list(references)])
    return float(score.score) / 100, str(metric.get_signature())


def sentence_chrf(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
    """Per item, sentence-level chrF as a fraction: the item score that :func:`chrf`'s paired bootstrap uses."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [float(metric.sentence_score(p, [r]).score) / 100 for r, p in zip(references, predictions)]


def is_iob2(tag_set: Sequence[str]) -> bool:
    """A tag set is NER-like when every tag is O or B-/I- prefixed (and at least one is prefixed)."""
    return any(t[:2] in ("B-", "I-") for t in tag_set) and all(t == "O" or t[:2] in ("B-", "I-") for t in tag_set)

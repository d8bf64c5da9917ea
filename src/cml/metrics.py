"""Task metrics as pure functions of references and predictions.

Each family has a primary metric (what deltas and gates compare) and secondary ones:
classification accuracy (+ macro-F1), tagging token accuracy (POS) or entity F1 (NER, seqeval strict
IOB2), seq2seq exact match (+ chrF from sacrebleu, whose signature is recorded).
"""

from __future__ import annotations

from collections.abc import Sequence

SEQEVAL_MODE = "strict"
SEQEVAL_SCHEME = "IOB2"


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


def exact_match(references: Sequence[str], predictions: Sequence[str]) -> float:
    return accuracy([r.strip() for r in references], [p.strip() for p in predictions])


def chrf(references: Sequence[str], predictions: Sequence[str]) -> tuple[float, str]:
    """Corpus chrF (0-100) and sacrebleu's signature string, which pins the metric's settings."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    score = metric.corpus_score(list(predictions), [list(references)])
    return float(score.score), str(metric.get_signature())


def is_iob2(tag_set: Sequence[str]) -> bool:
    """A tag set is NER-like when every tag is O or B-/I- prefixed (and at least one is prefixed)."""
    return any(t[:2] in ("B-", "I-") for t in tag_set) and all(t == "O" or t[:2] in ("B-", "I-") for t in tag_set)

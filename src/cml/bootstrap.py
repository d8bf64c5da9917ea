"""Paired bootstrap intervals and flip rates over per-item scores: pure functions of numbers, shared by the run
summaries (:mod:`cml.evaluation.cml_metrics`), releases and the modular strategies' gate; and the fields of the
change they describe (:class:`IntervalChange`), which run folders and releases store.

**Interval** (:func:`paired_bootstrap_interval`). A 95% paired bootstrap percentile interval over the test items:
each resample draws item indices with replacement, the same indices for before and after (which is resampling
the per-item differences), and takes the mean difference; the interval is the 2.5th and 97.5th percentiles of
``resamples`` such means. Per-item scores are the prediction files' ``scores`` (``score`` holds the primary
metric's, and is all that files written before per-metric scores hold): 1/0 for accuracy and exact match, the
fraction of correct tokens of a sentence for token accuracy, a sentence's chrF for chrF, its own entities' F1,
precision and recall for the entity metrics, and an item's correctness for macro-F1 (which has no item score of
its own). For accuracy and exact match the metric *is* the mean item score, so the interval is exactly that of
``delta``. For corpus-level metrics (token accuracy pools tokens over sentences, entity F1 pools entities, chrF
pools character n-gram statistics, macro-F1 averages per-label F1) the items do not add up to the metric, so we
bootstrap the mean item score instead and translate its interval by ``delta - (mean item difference)``
(:func:`delta_interval`): the spread of the item mean stands in for the metric's. That is an approximation, exact
when the two coincide, and it keeps every interval around the delta it qualifies (so "significant" never
contradicts the sign of ``delta``). A language is significantly improved (degraded) when the whole interval lies
above (below) zero.

Each language's resamples are seeded by ``(seed, language)`` (:func:`language_seed`): reruns are identical, and two
strategies are compared on the same resampled item sets (common random numbers), so their intervals differ only
by their predictions.

**Flip rates** (:func:`flip_rates`). The negative flip rate is the share of items whose score dropped from
before to after, the positive one the share whose score rose. For 1/0 scores that is exactly "right before and
wrong after" (and the reverse); for tagging it counts sentences with fewer correct tokens, however many.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

RESAMPLES = 1000
CONFIDENCE = 0.95
_BOOTSTRAP_BLOCK = 1 << 20  # resampled indices held in memory at once


def paired_bootstrap_interval(before: Sequence[float] | np.ndarray, after: Sequence[float] | np.ndarray, *,
                              resamples: int = RESAMPLES, seed: int | Sequence[int] = 0,
                              confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of the mean of ``after - before`` over item resamples (see the module docstring)."""
    before, after = _item_arrays(before, after)
    differences = after - before
    n = len(differences)
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_BLOCK // n)
    means = np.concatenate([differences[rng.integers(0, n, size=(min(rows, resamples - start), n))].mean(axis=1)
                            for start in range(0, resamples, rows)])
    tail = 50 * (1 - confidence)
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def delta_interval(before_score: float, after_score: float, before_items: Sequence[float] | np.ndarray,
                   after_items: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES,
                   seed: int | Sequence[int] = 0, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The interval of ``after_score - before_score``: the items' :func:`paired_bootstrap_interval`, moved by
    ``delta - (mean item difference)``, which is 0 unless the metric is corpus-level (see the module docstring)."""
    low, high = paired_bootstrap_interval(before_items, after_items, resamples=resamples, seed=seed,
                                          confidence=confidence)
    shift = (after_score - before_score) - float(np.mean(after_items) - np.mean(before_items))
    return low + shift, high + shift


def flip_rates(before: Sequence[float] | np.ndarray, after: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(negative, positive) flip rate: the shares of items whose score dropped, and rose, from before to after."""
    before, after = _item_arrays(before, after)
    return float(np.mean(after < before)), float(np.mean(after > before))


def _item_arrays(before: Sequence[float] | np.ndarray,
                 after: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape or before.ndim != 1 or len(before) == 0:
        raise ValueError("need two equally long, non-empty sequences of item scores")
    return before, after


def language_change(before_score: float, after_score: float, before_items: np.ndarray, after_items: np.ndarray,
                    *, resamples: int = RESAMPLES, seed: int | Sequence[int] = 0) -> dict[str, float]:
    """``before``, ``after``, ``delta``, its interval (``ci_low``, ``ci_high``) and both flip rates of one language."""
    low, high = delta_interval(before_score, after_score, before_items, after_items, resamples=resamples, seed=seed)
    negative, positive = flip_rates(before_items, after_items)
    return {"before": before_score, "after": after_score, "delta": after_score - before_score, "ci_low": low,
            "ci_high": high, "negative_flip_rate": negative, "positive_flip_rate": positive}


class IntervalChange(BaseModel):
    """The fields of :func:`language_change`: one language's change of one metric, with its 95% paired-bootstrap
    interval. The records that store it (a run's summary, a release's changes) add their own fields and settings."""

    before: float
    after: float
    delta: float
    ci_low: float
    ci_high: float
    negative_flip_rate: float
    positive_flip_rate: float


def language_seed(seed: int, language: str) -> list[int]:
    """The bootstrap seed of one language: the same in every strategy and stage (common random numbers)."""
    return [seed, zlib.crc32(language.encode("utf-8"))]

"""The ship gate: whether a release may replace its parent, read from its per-language changes.

A language counts as a loss only when its whole 95% interval lies below zero: a drop within the noise of a test
set of a few hundred items is not evidence. The mean change is over languages (each weighs the same).
"""

from __future__ import annotations

from ..config import ShipCriteria
from ..errors import CMLError
from .manifest import Change, Verdict


def judge(by_language: dict[str, dict[str, Change]], primary_metric: str, criteria: ShipCriteria) -> Verdict:
    """The verdict on an update whose per-language changes are ``by_language`` ({language: {metric: Change}})
    under ``criteria`` (``metric`` defaults to the primary metric)."""
    metric = criteria.metric or primary_metric
    changes = {lang: per_metric[metric] for lang, per_metric in by_language.items() if metric in per_metric}
    if not changes:
        known = sorted({name for per_metric in by_language.values() for name in per_metric})
        raise CMLError(f"the release has no per-language changes of {metric!r}; it has: {', '.join(known) or 'none'}")
    losses = sorted(lang for lang, change in changes.items() if change.significant_loss)
    mean = sum(change.delta for change in changes.values()) / len(changes) if changes else None
    failures = [f"{lang}: {metric} {changes[lang].before:.4f} -> {changes[lang].after:.4f} "
                f"(delta {changes[lang].delta:+.4f}, 95% CI [{changes[lang].ci_low:+.4f}, {changes[lang].ci_high:+.4f}])"
                " is a significant loss" for lang in losses] if len(losses) > criteria.max_significant_losses else []
    if len(losses) > criteria.max_significant_losses:
        failures.append(f"{len(losses)} significant losses, at most {criteria.max_significant_losses} allowed")
    if mean is not None and mean < criteria.min_mean_delta:
        failures.append(f"mean {metric} change {mean:+.4f} over {len(changes)} languages is below the required "
                        f"{criteria.min_mean_delta:+.4f}")
    return Verdict(max_significant_losses=criteria.max_significant_losses, min_mean_delta=criteria.min_mean_delta,
                   metric=metric, significant_losses=losses, mean_delta=mean, failures=failures)

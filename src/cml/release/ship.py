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
    mean = sum(change.delta for change in changes.values()) / len(changes)
    failures = [f"{lang}: {metric} {100 * changes[lang].before:.1f} -> {100 * changes[lang].after:.1f} points "
                f"(change {100 * changes[lang].delta:+.1f}, 95% CI [{100 * changes[lang].ci_low:+.1f}, "
                f"{100 * changes[lang].ci_high:+.1f}]) is a significant loss"
                for lang in losses] if len(losses) > criteria.max_significant_losses else []
    if len(losses) > criteria.max_significant_losses:
        failures.append(f"{len(losses)} significant losses, at most {criteria.max_significant_losses} allowed")
    if mean < criteria.min_mean_delta:
        failures.append(f"mean {metric} change {100 * mean:+.2f} points over {len(changes)} languages is below the "
                        f"required {100 * criteria.min_mean_delta:+.2f}")
    return Verdict(max_significant_losses=criteria.max_significant_losses, min_mean_delta=criteria.min_mean_delta,
                   metric=metric, significant_losses=losses, mean_delta=mean, failures=failures)


def check_metric(metric: str | None, task, key: str) -> None:
    """Refuse, before any training, criteria that name a metric the task does not compute."""
    if metric is not None and metric not in task.metrics:
        raise CMLError(f"this {task.family.value} task computes {', '.join(task.metrics)}, not {metric!r}", key=key)

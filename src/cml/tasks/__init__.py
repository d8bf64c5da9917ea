"""Task families: each one owns its model head, encoding, collation, decoding and metrics."""

from __future__ import annotations

from ..task_family import TaskFamily
from .base import Task


def make_task(family: TaskFamily, labels, model_config, primary_metric: str | None = None) -> Task:
    """The family's task; ``primary_metric`` (``evaluation.primary_metric``) replaces its default primary metric,
    and one the task does not compute is a CMLError keyed ``evaluation.primary_metric``."""
    if family is TaskFamily.classification:
        from .classification import ClassificationTask as cls
    elif family is TaskFamily.tagging:
        from .tagging import TaggingTask as cls
    else:
        from .seq2seq import Seq2SeqTask as cls
    return cls(labels, model_config, primary_metric)

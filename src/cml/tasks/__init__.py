"""Task families: each one owns its model head, encoding, collation, decoding and metrics."""

from __future__ import annotations

from ..data.examples import TaskFamily
from .base import Task


def make_task(family: TaskFamily, labels, model_config) -> Task:
    if family is TaskFamily.classification:
        from .classification import ClassificationTask as cls
    elif family is TaskFamily.tagging:
        from .tagging import TaggingTask as cls
    else:
        from .seq2seq import Seq2SeqTask as cls
    return cls(labels, model_config)

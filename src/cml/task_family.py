"""The task families: a leaf module, because configs, data readers, tasks and releases all name a family."""

from __future__ import annotations

from enum import Enum


class TaskFamily(str, Enum):
    """What an example predicts: one label per sentence, one tag per token, or a text."""

    classification = "classification"
    tagging = "tagging"
    seq2seq = "seq2seq"

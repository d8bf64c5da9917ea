"""Readers turn a configured data source into a :class:`MultilingualDataset`.

Each reader yields examples of one language with stable ids; :func:`read_dataset` then applies what is
common to all of them: language selection, the label set, per-split caps and the deterministic split of
test-only sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from pkgutil import resolve_name

from ...config import DataSource
from ...task_family import TaskFamily
from ..examples import SPLITS, MultilingualDataset
from .common import finish_dataset

# format -> "module:function"; imported on demand to keep optional dependencies (datasets, simplemma) off the
# common path.
READERS = {
    "sib200": "sib200:read_sib200",
    "tsv": "delimited:read_delimited",
    "csv": "delimited:read_delimited",
    "jsonl": "delimited:read_delimited",
    "conllu": "conllu:read_conllu",
    "conll": "conll:read_conll",
    "simplemma": "lemmas:read_simplemma",
    "huggingface": "huggingface:read_huggingface",
}


def read_dataset(source: DataSource, task: TaskFamily, required: Sequence[str] = SPLITS) -> MultilingualDataset:
    """The examples of ``source``; every language must have the ``required`` splits (all three by default; a
    release's new batch needs none in particular, its eval sets dev and test)."""
    # the config admits exactly the keys of READERS (tests/test_config.py checks both ways)
    dataset = resolve_name(f"{__name__}.{READERS[source.format]}")(source, task)
    return finish_dataset(dataset, source, required)

"""Readers turn a configured data source into a :class:`MultilingualDataset`.

Each reader yields examples of one language with stable ids; :func:`read_dataset` then applies what is
common to all of them: language selection, the label set, per-split caps and the deterministic split of
test-only sources.
"""

from __future__ import annotations

from ...config import DataSource
from ..examples import MultilingualDataset, TaskFamily
from .common import finish_dataset


def read_dataset(source: DataSource, task: TaskFamily) -> MultilingualDataset:
    # Imports per format keep optional dependencies (datasets, simplemma) off the common path.
    if source.format == "sib200":
        from .sib200 import read_sib200 as reader
    elif source.format in ("tsv", "csv", "jsonl"):
        from .delimited import read_delimited as reader
    elif source.format == "conllu":
        from .conllu import read_conllu as reader
    elif source.format == "conll":
        from .conll import read_conll as reader
    elif source.format == "simplemma":
        from .lemmas import read_simplemma as reader
    elif source.format == "huggingface":
        from .huggingface import read_huggingface as reader
    else:  # pragma: no cover - the config's discriminated union admits no other format
        raise AssertionError(source.format)
    dataset = reader(source, task)
    return finish_dataset(dataset, source)

"""Examples and the multilingual dataset they form."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import CMLError
from ..task_family import TaskFamily

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Example:
    """One labelled example of one language.

    ``id`` is stable across runs; for parallel corpora (SIB-200, PUD) it is the sentence's parallel id,
    the same in every language, so splits and stream stages can keep a sentence in one place everywhere.
    Fields by task family: classification ``text`` + ``label``; tagging ``tokens`` + ``tags``;
    seq2seq ``text`` (source) + ``target``.
    """

    id: str
    lang: str
    text: str | None = None
    label: str | None = None
    tokens: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    target: str | None = None

    def labels(self) -> tuple[str, ...]:
        """The label(s) this example carries, for label statistics."""
        if self.label is not None:
            return (self.label,)
        return self.tags or ()


@dataclass
class MultilingualDataset:
    """``splits[lang][split]`` lists the examples of one language and split, in reading order."""

    task: TaskFamily
    splits: dict[str, dict[str, list[Example]]] = field(default_factory=dict)
    label_set: tuple[str, ...] | None = None
    source: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    """What was read, for a resumed run to notice a change: {file path inside the source: sha256 of its bytes},
    or for a packaged or hub source {its name: its version or fingerprint}."""
    repairs: dict[str, int] = field(default_factory=dict)
    """{file path: IOB2 tags read as B-X instead of a stray I-X} where the source allows repairs."""

    @property
    def languages(self) -> list[str]:
        return sorted(self.splits)

    def add(self, split: str, examples: Iterable[Example], lang: str | None = None) -> None:
        """Add examples; naming ``lang`` registers the language even when it has no examples, so an empty
        language is reported by :meth:`check` rather than silently dropped."""
        if lang is not None:
            self.splits.setdefault(lang, {s: [] for s in SPLITS})
        for example in examples:
            self.splits.setdefault(example.lang, {s: [] for s in SPLITS})[split].append(example)

    def counts(self) -> dict[str, dict[str, int]]:
        return {lang: {s: len(self.splits[lang][s]) for s in SPLITS} for lang in self.languages}

    def observed_labels(self) -> list[str]:
        seen: Counter[str] = Counter()
        for by_split in self.splits.values():
            for examples in by_split.values():
                for example in examples:
                    seen.update(example.labels())
        return sorted(seen)

    def check(self, required: Sequence[str] = SPLITS) -> None:
        """Every language has examples, in each of the ``required`` splits (a training set, a dev set and a test
        set by default); ids are unique per language."""
        if not self.splits:
            raise CMLError(f"no examples were read from {self.source}")
        for lang, by_split in self.splits.items():
            for split in required:
                if not by_split[split]:
                    raise CMLError(f"language {lang} has no {split} examples in {self.source}")
            if not any(by_split[split] for split in SPLITS):
                raise CMLError(f"language {lang} has no examples in {self.source}")
            ids = Counter(e.id for s in SPLITS for e in by_split[s])
            duplicates = [i for i, n in ids.items() if n > 1]
            if duplicates:
                raise CMLError(f"language {lang} has duplicate example ids in {self.source}: {duplicates[:5]}")


def stable_hash(*parts: object) -> int:
    """A hash that is the same in every process and Python version (``hash()`` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def split_by_id(examples: Sequence[Example], ratios: dict[str, float], seed: int) -> dict[str, list[Example]]:
    """Deterministic train/dev/test split of a test-only source, by example id.

    Ids are ordered by a seeded hash and cut at the ratios' cumulative counts. Parallel ids order the
    same way in every language, so a sentence lands in the same split everywhere (no test sentence
    is seen in training in another language).
    """
    ordered = sorted(examples, key=lambda e: (stable_hash(seed, e.id), e.id))
    n = len(ordered)
    total = sum(ratios.values())
    cut_train = round(n * ratios.get("train", 0.0) / total)
    cut_dev = cut_train + round(n * ratios.get("dev", 0.0) / total)
    parts = {"train": ordered[:cut_train], "dev": ordered[cut_train:cut_dev], "test": ordered[cut_dev:]}
    # Keep each split in reading order: nicer to inspect, and independent of the hash.
    position = {id(e): i for i, e in enumerate(examples)}
    return {s: sorted(part, key=lambda e: position[id(e)]) for s, part in parts.items()}

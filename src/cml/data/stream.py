"""CML streams: an initial stage over all languages, then update stages over some of them.

Each language's training examples are put in one seeded order (by a hash of the example id, so parallel
sentences order alike in every language); every stage takes the next examples in that order, so no
example appears in two stages. Dev and test sets are the same for every stage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..config import AllExcept, StageConfig, StreamConfig
from ..errors import CMLError
from ..task_family import TaskFamily
from .examples import Example, MultilingualDataset, stable_hash


@dataclass
class Stage:
    name: str
    train: dict[str, list[Example]]

    @property
    def languages(self) -> list[str]:
        return sorted(self.train)

    def counts(self) -> dict[str, int]:
        return {lang: len(examples) for lang, examples in sorted(self.train.items())}


@dataclass
class Stream:
    task: TaskFamily
    languages: list[str]
    stages: list[Stage]
    dev: dict[str, list[Example]]
    test: dict[str, list[Example]]
    label_set: tuple[str, ...] | None
    seed: int

    def stats(self, labels: bool = False) -> dict:
        """The stage x language example counts (and label counts) as plain data."""
        def label_counts(examples_by_lang):
            return {lang: dict(sorted(Counter(label for e in examples for label in e.labels()).items()))
                    for lang, examples in sorted(examples_by_lang.items())}

        stages = []
        for stage in self.stages:
            entry = {"name": stage.name, "counts": stage.counts()}
            if labels:
                entry["labels"] = label_counts(stage.train)
            stages.append(entry)
        out = {"task": self.task.value, "seed": self.seed, "languages": self.languages, "stages": stages,
               "dev": {lang: len(v) for lang, v in sorted(self.dev.items())},
               "test": {lang: len(v) for lang, v in sorted(self.test.items())}}
        if labels:
            out["test_labels"] = label_counts(self.test)
        return out


def _stage_languages(stage: StageConfig, index: int, languages: list[str]) -> list[str]:
    if stage.languages == "all":
        return list(languages)
    named = stage.languages.all_except if isinstance(stage.languages, AllExcept) else stage.languages
    unknown = [lang for lang in named if lang not in languages]
    if unknown:
        raise CMLError(f"stage {stage.name!r} names languages that the data does not have: {', '.join(unknown)}",
                       key=f"stream.stages.{index}.languages")
    if isinstance(stage.languages, AllExcept):
        return [lang for lang in languages if lang not in named]
    return sorted(named)


def _take(amount: int | float, available: int, stage: StageConfig, lang: str, index: int) -> int:
    count = round(amount * available) if isinstance(amount, float) else amount
    key = f"stream.stages.{index}"
    if count > available:
        raise CMLError(f"stage {stage.name!r} asks for {count} {lang} examples, but only {available} remain",
                       key=key)
    if count == 0:
        raise CMLError(f"stage {stage.name!r} gives {lang} no examples ({amount} of {available})", key=key)
    return count


def build_stream(dataset: MultilingualDataset, config: StreamConfig, seed: int) -> Stream:
    languages = dataset.languages
    remaining = {lang: sorted(dataset.splits[lang]["train"], key=lambda e: (stable_hash(seed, e.id), e.id))
                 for lang in languages}
    used_ids: set[str] = set()
    stages = []
    for index, stage_config in enumerate(config.stages):
        stage_langs = _stage_languages(stage_config, index, languages)
        extra = [lang for lang in stage_config.per_language if lang not in stage_langs]
        if extra:
            raise CMLError(f"per_language names languages outside stage {stage_config.name!r}: {', '.join(extra)}",
                           key=f"stream.stages.{index}.per_language")
        taken: dict[str, list[Example]] = {}
        for lang in stage_langs:
            pool = [e for e in remaining[lang] if e.id not in used_ids] if config.disjoint_sentences else remaining[lang]
            amount = stage_config.per_language.get(lang, stage_config.amount)
            taken[lang] = pool[:_take(amount, len(pool), stage_config, lang, index)]
        for lang, examples in taken.items():
            chosen = {e.id for e in examples}
            remaining[lang] = [e for e in remaining[lang] if e.id not in chosen]
            used_ids |= chosen
        stages.append(Stage(stage_config.name, taken))
    return Stream(task=dataset.task, languages=languages, stages=stages,
                  dev={lang: dataset.splits[lang]["dev"] for lang in languages},
                  test={lang: dataset.splits[lang]["test"] for lang in languages},
                  label_set=dataset.label_set, seed=seed)

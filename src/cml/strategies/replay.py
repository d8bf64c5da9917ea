"""Experience replay: full fine-tuning on the update data mixed with a memory of up to k examples per language
kept from earlier stages.

The memory is a reservoir sample per language (Vitter's algorithm R) over all earlier stages' examples of
that language, so every example seen so far is in it with the same probability and later stages' examples
can replace earlier ones. Each stage folds in the stages since the last one (the stage-0 data at the first
update), drawing from a generator seeded by (seed, language, stage): the memory depends only on the seed
and the stream, also when a run resumes. The memory used by a stage is in its record (example ids per
language); ``restore`` takes it from there.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import TypeVar

from ..data.examples import Example
from ..data.stream import Stage
from .base import StageContext
from .full_finetune import FullFinetune

T = TypeVar("T")


def reservoir_sample(memory: Sequence[T], seen: int, items: Sequence[T], k: int, rng: random.Random) -> list[T]:
    """Algorithm R: continue a reservoir of at most ``k`` items, drawn uniformly from ``seen`` earlier items,
    with ``items``. Item number t (counting from 0) replaces a random slot with probability k / (t + 1)."""
    memory = list(memory)
    for t, item in enumerate(items, start=seen):
        if len(memory) < k:
            memory.append(item)
        elif (slot := rng.randrange(t + 1)) < k:
            memory[slot] = item
    return memory


class Memory:
    """Up to ``per_language`` examples per language of the earlier stages, as ids (a stage's record keeps them)."""

    def __init__(self, per_language: int, seed: int):
        self.per_language, self.seed = per_language, seed
        self.ids: dict[str, list[str]] = {}  # language -> example ids, from the first `absorbed` stages
        self.absorbed = 0

    def remember(self, history: Sequence[Stage]) -> dict[str, list[Example]]:
        """The memory after the stages in ``history``: fold in the ones not yet absorbed."""
        by_id = {(lang, e.id): e for stage in history for lang, examples in stage.train.items() for e in examples}
        memory = {lang: [by_id[lang, i] for i in ids] for lang, ids in self.ids.items()}
        for index in range(self.absorbed, len(history)):
            for lang, examples in sorted(history[index].train.items()):
                seen = sum(len(stage.train.get(lang, ())) for stage in history[:index])
                rng = random.Random(f"{self.seed}/{lang}/{index}")
                memory[lang] = reservoir_sample(memory.get(lang, []), seen, examples, self.per_language, rng)
        self.ids = {lang: [e.id for e in examples] for lang, examples in sorted(memory.items())}
        self.absorbed = len(history)
        return memory

    def replayed(self, ctx: StageContext) -> tuple[dict[str, list[Example]], list[dict]]:
        """The memory for ``ctx``'s stage and its examples' features, by language."""
        memory = self.remember(ctx.history)
        return memory, ctx.task.features([e for lang in sorted(memory) for e in memory[lang]])

    def restore(self, record: dict, index: int) -> None:
        """The memory stage ``index`` trained with (its record's): the stages before it, absorbed."""
        self.ids, self.absorbed = {lang: list(ids) for lang, ids in record["memory"].items()}, index


class Replay(FullFinetune):
    def __init__(self, config):
        super().__init__(config)
        self.memory = Memory(config.per_language, config.seed)

    def update(self, model, ctx: StageContext):
        _, replayed = self.memory.replayed(ctx)
        model, record = super().update(model, dataclasses.replace(ctx, train_features=ctx.train_features + replayed))
        record["memory"] = self.memory.ids
        return model, record

    def restore(self, model, record, ctx):
        self.memory.restore(record, ctx.index)
        return model

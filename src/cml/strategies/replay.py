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


class Replay(FullFinetune):
    def __init__(self, config):
        super().__init__(config)
        self.memory: dict[str, list[str]] = {}  # language -> example ids, from the first `absorbed` stages
        self.absorbed = 0

    def remember(self, history: Sequence[Stage]) -> dict[str, list[Example]]:
        """The memory after the stages in ``history``: fold in the ones not yet absorbed."""
        by_id = {(lang, e.id): e for stage in history for lang, examples in stage.train.items() for e in examples}
        memory = {lang: [by_id[lang, i] for i in ids] for lang, ids in self.memory.items()}
        for index in range(self.absorbed, len(history)):
            for lang, examples in sorted(history[index].train.items()):
                seen = sum(len(stage.train.get(lang, ())) for stage in history[:index])
                rng = random.Random(f"{self.config.seed}/{lang}/{index}")
                memory[lang] = reservoir_sample(memory.get(lang, []), seen, examples, self.config.per_language, rng)
        self.memory = {lang: [e.id for e in examples] for lang, examples in sorted(memory.items())}
        self.absorbed = len(history)
        return memory

    def update(self, model, ctx: StageContext):
        memory = self.remember(ctx.history)
        replayed = ctx.task.features([e for lang in sorted(memory) for e in memory[lang]])
        model, record = super().update(model, dataclasses.replace(ctx, train_features=ctx.train_features + replayed))
        record["memory"] = self.memory
        return model, record

    def restore(self, model, record, ctx):
        # The memory this stage trained with: the stages before it, absorbed.
        self.memory, self.absorbed = {lang: list(ids) for lang, ids in record["memory"].items()}, ctx.index
        return model

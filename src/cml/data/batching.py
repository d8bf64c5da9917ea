"""Length-bucketed batch sampling: few pad tokens, yet a shuffled, seeded order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffle, cut into chunks of ``batch_size * multiplier`` examples, sort each chunk by length,
    batch it, and shuffle the batches; the one short batch (if any) goes last. The order depends only on
    (seed, epoch), so an interrupted epoch resumes with the same batches. Without ``shuffle``
    (evaluation) examples are simply sorted by length. With ``groups`` (one key per example) each chunk is sorted
    by group first, so that most batches hold one group (a batch at a group's boundary holds two or more, where a
    small group has fewer than a batch of examples in the chunk); the number of batches stays the same.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0,
                 multiplier: int = 50, groups: Sequence[str] | None = None):
        self.lengths = list(lengths)
        self.groups = list(groups) if groups is not None else None
        if self.groups is not None and len(self.groups) != len(self.lengths):
            raise ValueError(f"{len(self.groups)} groups for {len(self.lengths)} examples")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.multiplier = multiplier
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            return sorted_batches(self.lengths, self.batch_size)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=generator).tolist()
        chunk = self.batch_size * self.multiplier
        batches = []
        for start in range(0, n, chunk):
            part = sorted(order[start:start + chunk], key=self._key)
            batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        # Under `accelerate launch` the loader splits each batch across processes and treats only the
        # last batch as possibly short: a short batch elsewhere would be silently dropped.
        return sorted((batches[i] for i in permutation), key=lambda batch: len(batch) < self.batch_size)

    def _key(self, i: int):
        return self.lengths[i] if self.groups is None else (self.groups[i], self.lengths[i])

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def sorted_batches(lengths: Sequence[int], batch_size: int, groups: Sequence[str] | None = None) -> list[list[int]]:
    """Evaluation batches: indices sorted by length, and with ``groups`` cut within each group, so that a batch
    holds one group's items (one language's: a routed model then serves the batch with one route, merged)."""
    keys = groups if groups is not None else [""] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (keys[i], lengths[i], i))
    batches = []
    for _, members in itertools.groupby(order, key=lambda i: keys[i]):
        members = list(members)
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    return batches


"""LAFT-URIEL: one LoRA module per group of languages that URIEL typology says are close.

Groups: average-linkage clustering of the task languages on the combined URIEL distance, into
``n_groups`` (default: a third of the languages) or cut at ``group_threshold``, and with ``max_group_size``
groups larger than that split at their top merge until none is. A group's module trains
on the update data of its languages, so related languages share what they learn while distant ones keep
the previous model (or, with ``route_to_nearest`` or the gate, borrow the nearest group's module).
"""

from __future__ import annotations

from .modular import ModularStrategy


class LaftUriel(ModularStrategy):
    def assign_groups(self, languages):
        from ..typology.grouping import cluster

        matrix = self._distances(languages)
        n_groups = None if self.config.group_threshold else (self.config.n_groups or max(2, len(languages) // 3))
        grouping = cluster(matrix, n_groups=n_groups, threshold=self.config.group_threshold,
                           max_size=self.config.max_group_size)
        return {lang: f"g{grouping.group_of(lang)}" for lang in languages}

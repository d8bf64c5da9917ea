"""LAFT-URIEL: one LoRA module per group of languages that URIEL typology says are close.

Groups: average-linkage clustering of the task languages on the combined URIEL distance, into
``n_groups`` (default: :func:`default_group_count`) or cut at ``group_threshold``, and with ``max_group_size``
groups larger than that split at their top merge until none is. A group's module trains
on the update data of its languages, so related languages share what they learn while distant ones keep
the previous model (or, with ``route_to_nearest`` or the gate, borrow the nearest group's module).
"""

from __future__ import annotations

from .modular import ModularStrategy
from .modular.groups import load_typology


def default_group_count(n_languages: int) -> int:
    """A third of the languages, rounded down, and at least two groups (one group would make the method
    ``lora_shared``), but never more groups than languages: a model serving one language gets one."""
    return min(n_languages, max(2, n_languages // 3))


class LaftUriel(ModularStrategy):
    def assign_groups(self, languages, typology=None):
        from ..typology.grouping import cluster

        matrix = typology if typology is not None else load_typology(languages, self.config.kinds)
        n_groups = None if self.config.group_threshold else self.config.n_groups or default_group_count(len(languages))
        grouping = cluster(matrix, n_groups=n_groups, threshold=self.config.group_threshold,
                           max_size=self.config.max_group_size)
        return {lang: f"g{grouping.group_of(lang)}" for lang in languages}

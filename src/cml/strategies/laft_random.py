"""The ablation of LAFT-URIEL: groups of the same sizes, languages assigned at random (seeded).

If it does as well as ``laft_uriel``, typology is not what helps."""

from __future__ import annotations

import random

from .laft_uriel import LaftUriel


class LaftRandom(LaftUriel):
    def assign_groups(self, languages, typology=None):
        typological = super().assign_groups(languages, typology)
        shuffled = sorted(languages)
        random.Random(self.config.group_seed).shuffle(shuffled)
        groups_in_order = [typological[lang] for lang in sorted(languages)]
        return dict(zip(shuffled, groups_in_order))

"""LAFT-URIEL with rehearsal: the modules of every group train on the update's data plus a memory of earlier
stages' examples of every language (``replay``'s reservoir memory), and the gate routes each language.

Why: on the v2 ``ud_pos`` stream full fine-tuning with a replay memory improved ten of fourteen languages, six of
them outside the update (docs/benchmarks.md), where a module trained on the update alone can only help the
update's groups. Rehearsal gives every group's module data of its own languages, and the gate still keeps a
language on the previous model unless its module scores better on dev. Like ``replay`` it needs the earlier
stages' data, which a release does not keep.
"""

from __future__ import annotations

from .base import StageContext
from .laft_uriel import LaftUriel
from .replay import Memory


class LaftReplay(LaftUriel):
    def __init__(self, config):
        super().__init__(config)
        self.memory = Memory(config.per_language, config.seed)

    def training_data(self, ctx: StageContext) -> tuple[list[str], list[dict], dict]:
        memory, replayed = self.memory.replayed(ctx)
        languages = sorted({*ctx.stage.languages, *(lang for lang, examples in memory.items() if examples)})
        return languages, ctx.train_features + replayed, {"memory": self.memory.ids}

    def restore(self, model, record, ctx):
        self.memory.restore(record, ctx.index)
        return super().restore(model, record, ctx)

"""The "do nothing" reference: deploy the previous model as it is. It trains nothing and stores nothing, so
every language's score after the update equals its score before (all deltas 0). In a results table it is the
floor a strategy must beat to be worth its training: one that protects every language but adds nothing looks
exactly like ``no_update``."""

from __future__ import annotations

from .base import Strategy


class NoUpdate(Strategy):
    def update(self, model, ctx):
        examples = len(ctx.train_features)
        return model, {"trained": False,
                       "note": f"no_update: the previous model is kept as is; the stage's {examples} training "
                               "examples were not used"}

    def saved_state(self, model, frozen):
        """Nothing: the deployed weights are the previous stage's, rebuilt from the stages before this one."""
        return {}

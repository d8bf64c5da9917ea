"""The naive baseline: fine-tune every parameter (but frozen embeddings) on the stage's data."""

from __future__ import annotations

from ..training.trainer import train
from .base import Strategy


class FullFinetune(Strategy):
    def update(self, model, ctx, loss_fn=None):
        """``loss_fn`` lets the regularised baselines (EWC, distillation) add their terms to the task loss."""
        embeddings = model.get_input_embeddings().weight
        frozen = not embeddings.requires_grad
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        embeddings.requires_grad_(not frozen)
        result = train(model, ctx.task, ctx.train_features, self.training_config(ctx), accelerator=ctx.accelerator,
                       seed=ctx.seed, dev=ctx.dev, checkpoint_dir=ctx.checkpoint_dir, resume=ctx.resume,
                       description=f"{self.name}/{ctx.stage.name}", loss_fn=loss_fn, tracking=ctx.tracking)
        return ctx.accelerator.unwrap_model(model), {"train": result.to_json()}

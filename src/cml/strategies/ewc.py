"""Elastic weight consolidation (Kirkpatrick et al. 2017): full fine-tuning plus a quadratic pull towards the
previous stage's weights, each parameter weighted by its diagonal Fisher information.

The Fisher of a stage is computed at the end of that stage on that stage's data (later stages no longer have
it) and added to the earlier stages' Fishers. The sum travels with the deployed model as buffers
``ewc.fisher.<parameter>``, so it is saved with the stage's weights (``model.safetensors``) and loaded back on
resume and by ``cml predict``. The anchor, the previous stage's weights, is the incoming model itself: it is
already stored as that stage's weights, so it is not stored twice. Stage 0 is trained by the experiment, not
by this strategy, so the first update computes stage 0's Fisher on the incoming model and stage-0 data,
exactly what the end of stage 0 would have computed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import torch

from ..routing import RoutedModel
from .base import StageContext
from .full_finetune import FullFinetune

HOLDER = "ewc"


def diagonal_fisher(model: torch.nn.Module, task, features: Sequence[dict]) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of the trainable parameters: the mean over ``features`` of the squared
    gradient of each example's loss (batch size 1, so every squared gradient is one example's).
    Frozen parameters get no entry: they cannot move, so they need no penalty."""
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # the sensitivity of the deployed model, without dropout noise
    for feature in features:
        batch = {k: v.to(device) for k, v in task.batch([feature]).items()}
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        for name, parameter in parameters.items():
            if parameter.grad is not None:
                fisher[name] += parameter.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: f / max(len(features), 1) for name, f in fisher.items()}


def ewc_penalty(parameters: Iterable[tuple[str, torch.Tensor]], fisher: dict[str, torch.Tensor],
                anchor: dict[str, torch.Tensor], strength: float) -> torch.Tensor:
    """strength / 2 * sum_i F_i (theta_i - theta*_i)^2 over the parameters that have a Fisher."""
    terms = [(fisher[name] * (p - anchor[name]) ** 2).sum() for name, p in parameters if name in fisher]
    return strength / 2 * torch.stack(terms).sum()


def attach_fisher(model: RoutedModel, fisher: dict[str, torch.Tensor]) -> None:
    """Hang the Fisher on the model as buffers ``ewc.fisher.<parameter>``. Buffer names cannot hold dots, so
    the parameter names become a tree of empty modules: the state-dict keys are then the parameter names."""
    holder = torch.nn.Module()
    for name, tensor in fisher.items():
        *path, leaf = f"fisher.{name}".split(".")
        module = holder
        for part in path:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        module.register_buffer(leaf, tensor)
    setattr(model, HOLDER, holder)


def detach_fisher(model: RoutedModel) -> dict[str, torch.Tensor]:
    """Take the Fisher off the model (training would otherwise carry and, on several GPUs, broadcast it)."""
    holder = getattr(model, HOLDER)
    delattr(model, HOLDER)
    return {name.removeprefix("fisher."): tensor for name, tensor in holder.named_buffers()}


def sample(items: Sequence, k: int, seed: int) -> list:
    return random.Random(seed).sample(list(items), min(k, len(items)))


class EWC(FullFinetune):
    def update(self, model, ctx: StageContext):
        model.to(ctx.accelerator.device)  # the Fisher and the anchor are made beside the weights
        if ctx.index == 1:
            stage0 = [e for lang in ctx.history[0].languages for e in ctx.history[0].train[lang]]
            fisher = diagonal_fisher(model, ctx.task,
                                     ctx.task.features(sample(stage0, self.config.fisher_examples, ctx.seed)))
        else:
            fisher = detach_fisher(model)
        anchor = {name: p.detach().clone() for name, p in model.named_parameters() if name in fisher}
        parameters = [(name, p) for name, p in model.named_parameters() if name in fisher]

        def loss_fn(_, batch, output):
            return output.loss + ewc_penalty(parameters, fisher, anchor, self.config.ewc_lambda)

        model, record = super().update(model, ctx, loss_fn=loss_fn)
        with torch.no_grad():
            penalty = float(ewc_penalty(parameters, fisher, anchor, self.config.ewc_lambda))
        features = sample(ctx.train_features, self.config.fisher_examples, ctx.seed)
        attach_fisher(model, {name: fisher[name] + f for name, f in diagonal_fisher(model, ctx.task, features).items()})
        return model, {**record, "ewc_penalty": penalty, "fisher_examples": len(features)}

    def restore(self, model, record, ctx):
        # Zeros of the right shapes, which the stage's saved Fisher then overwrites.
        attach_fisher(model, {name: torch.zeros_like(p) for name, p in model.named_parameters() if p.requires_grad})
        return model

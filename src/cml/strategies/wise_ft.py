"""WiSE-FT (Wortsman et al. 2022): fine-tune as ``full_finetune``, then deploy the interpolation
(1 - alpha) * previous + alpha * fine-tuned of the weights; alpha is given, or picked on the dev sets of all
languages from ``alpha_grid`` (the scores and the choice are in the record).
"""

from __future__ import annotations

import torch

from ..evaluation.inference import evaluate_languages, mean_primary
from ..training.checkpoint import trainable_state
from .base import StageContext
from .full_finetune import FullFinetune


def interpolate(previous: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * previous + alpha * finetuned, tensor by tensor (floating point: weights). Written as two
    products rather than a lerp so that alpha 0 and 1 give the endpoints bit for bit."""
    return {name: (1 - alpha) * previous[name] + alpha * tensor for name, tensor in finetuned.items()}


class WiseFT(FullFinetune):
    def update(self, model, ctx: StageContext):
        # The incoming model's trainable parameters are those full_finetune trains (all but frozen embeddings).
        model.to(ctx.accelerator.device)  # where training leaves the fine-tuned weights
        previous = trainable_state(model)
        model, record = super().update(model, ctx)
        finetuned = trainable_state(model)
        alpha = self.config.alpha
        if alpha == "dev":
            scores = {}
            for candidate in sorted(set(self.config.alpha_grid)):
                model.load_state_dict(interpolate(previous, finetuned, candidate), strict=False)
                scores[candidate] = mean_primary(ctx.task, evaluate_languages(model, ctx.task, ctx.dev,
                                                                              ctx.training.eval_batch_size))
            alpha = max(scores, key=scores.__getitem__)  # the first best: ties keep the weights nearer the previous
            record["alpha_dev"] = {str(candidate): score for candidate, score in scores.items()}
        model.load_state_dict(interpolate(previous, finetuned, alpha), strict=False)
        record["alpha"] = alpha
        return model, record

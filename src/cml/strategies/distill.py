"""Learning without forgetting (Li & Hoiem 2017): full fine-tuning plus a distillation term that keeps the
model's outputs on the update data close to those of the previous model (a frozen copy of the incoming one).

loss = task loss + alpha * T^2 * KL(teacher_T || student_T), the KL taken per output position: the sentence
for classification, each labelled token for tagging, each teacher-forced target token for seq2seq (the
positions whose label is not ignored; the teacher gets the same labels, from which a seq2seq model builds its
decoder inputs).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..tasks.base import IGNORE
from .base import StageContext
from .full_finetune import FullFinetune


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over the last (class or vocabulary)
    axis and averaged over the positions where ``mask`` (shape ``logits.shape[:-1]``) is true, or all.
    The T^2 keeps the gradient's scale independent of the temperature (Hinton et al. 2015)."""
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(-1)
    if mask is None:
        mask = torch.ones_like(kl, dtype=torch.bool)
    return temperature ** 2 * kl[mask].sum() / mask.sum().clamp(min=1)


class Distill(FullFinetune):
    def update(self, model, ctx: StageContext):
        model.to(ctx.accelerator.device)
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        temperature, alpha = self.config.temperature, self.config.alpha

        def loss_fn(_, batch, output):
            with torch.no_grad(), ctx.accelerator.autocast():
                teacher_logits = teacher(**batch).logits
            # Classification labels are never ignored, so every sentence counts.
            mask = batch["labels"] != IGNORE
            return output.loss + alpha * distillation_loss(output.logits, teacher_logits, temperature, mask)

        return super().update(model, ctx, loss_fn=loss_fn)

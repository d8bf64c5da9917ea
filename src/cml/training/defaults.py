"""Training settings per task family for ``cml train`` and ``cml update``, where the config leaves them out.

The research harness (``cml run``) keeps ``TrainingConfig``'s own defaults, so its published results stay
reproducible from their configs.
"""

from __future__ import annotations

from typing import Any

from ..data.examples import TaskFamily

FAMILY_TRAINING_DEFAULTS: dict[TaskFamily, dict[str, Any]] = {
    TaskFamily.classification: {"learning_rate": 1e-4, "new_parameters_lr_scale": 10.0, "epochs": 3},
    TaskFamily.tagging: {"learning_rate": 1e-4, "new_parameters_lr_scale": 10.0, "epochs": 3},
    TaskFamily.seq2seq: {"learning_rate": 1e-4, "new_parameters_lr_scale": 10.0, "epochs": 3},
}


def training_defaults(family: TaskFamily) -> dict[str, Any]:
    """The ``training`` settings a release config of ``family`` gets where it does not set them."""
    return dict(FAMILY_TRAINING_DEFAULTS[TaskFamily(family)])

"""What a run shows the experiment trackers it is configured with (``training.trackers``: TensorBoard, MLflow or
W&B, through Accelerate's ``log_with``).

The whole resolved config, as hyperparameters (:func:`flat_config`); then, all on one global step, the optimizer
steps taken in the run so far (stage 0, then each strategy's stages, in the order the run trains them, counting
the stages a resumed run reuses): every training's loss and learning rate at each of its steps, every language's
dev and test score (the primary metric) after every stage, and each update stage's summary figures. Tags begin
with the strategy (``initial`` for stage 0), so a tracker shows one section per strategy:
``<strategy>/train/loss``, ``<strategy>/train/lr``, ``<strategy>/dev/<language>``, ``<strategy>/test/<language>``
and ``<strategy>/summary/<figure>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tracking:
    """Where one strategy logs from global step ``first_step`` on: the steps before its stage are other trainings'."""

    accelerator: Any
    strategy: str
    first_step: int = 0

    def log(self, values: Mapping[str, float], steps: int = 0) -> None:
        """``values`` under the strategy's tags, ``steps`` optimizer steps after ``first_step``."""
        self.accelerator.log({f"{self.strategy}/{key}": value for key, value in values.items()},
                             step=self.first_step + steps)


def start_tracking(accelerator, run_name: str, config: Mapping[str, Any]) -> None:
    """Start the accelerator's trackers for the run, with its resolved config (as JSON) as hyperparameters."""
    accelerator.init_trackers(run_name, config=flat_config(config))


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The config as one level of dotted keys (``training.learning_rate``, ``strategies.1.method``), every value a
    boolean, number or string: what each tracker takes as a hyperparameter. Lists of plain values and nulls
    become JSON text (``["deu", "fra"]``, ``null``) rather than disappearing."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            value = {str(position): item for position, item in enumerate(value)}
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, ensure_ascii=False)
    return flat

"""The interface every update strategy implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainingConfig, with_overrides
from ..data.stream import Stage
from ..routing import RoutedModel
from ..training.tracking import Tracking


@dataclass
class StageContext:
    """What a strategy may use to update the model for one stage."""

    task: Any
    stage: Stage
    index: int
    languages: list[str]
    train_features: list[dict]
    dev: dict[str, tuple[list, list[dict]]]
    training: TrainingConfig
    accelerator: Any
    seed: int
    checkpoint_dir: Path | None = None
    resume: bool = False
    history: list[Stage] = field(default_factory=list)
    tracking: Tracking | None = None  # where the stage's training logs, when the run has experiment trackers


class Strategy(ABC):
    def __init__(self, config):
        self.config = config

    @property
    def name(self) -> str:
        return self.config.label

    def training_config(self, ctx: StageContext) -> TrainingConfig:
        return with_overrides(ctx.training, self.config.training)

    @abstractmethod
    def update(self, model: RoutedModel, ctx: StageContext) -> tuple[RoutedModel, dict]:
        """Train on the stage; return the deployed model and a JSON-able record (routes, choices, timing)."""

    def restore(self, model: RoutedModel, record: dict, ctx: StageContext) -> RoutedModel:
        """Rebuild the model's structure for a finished stage, before its saved weights are loaded."""
        return model

    def route_for_new_language(self, lang: str, languages: list[str]):
        """The route of a language the run never saw (`cml predict`): the previous model by default."""
        return ()

    def saved_state(self, model: RoutedModel, frozen: tuple[str, ...]) -> dict:
        """The tensors that make this stage's deployed model, given the stage-0 model."""
        return {k: v for k, v in model.state_dict().items() if k not in frozen}

"""A run folder's finished stage put back into a model: its strategy's structure rebuilt from its record, then
its weights. Both the experiment (resuming, rolling back) and serving (``cml predict`` on a run folder) do this."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CMLError
from .run_folder import STATE
from .training.checkpoint import load_model_state

if TYPE_CHECKING:
    from .strategies.base import StageContext


def load_finished_stage(strategy, model, record: dict, ctx: StageContext, stage_dir: Path):
    """``model`` as ``strategy`` left it at the stage saved in ``stage_dir`` (``record`` is its checked record):
    ``strategy.restore`` on a record that may lack what the strategy needs, then the stage's weights."""
    try:
        model = strategy.restore(model, record, ctx)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise CMLError(f"the stage's record lacks what {strategy.name} needs to restore it ({err!r})",
                       file=Path(stage_dir) / STATE) from None
    load_model_state(model, stage_dir)
    return model

"""A run folder's finished stages, read back: where each lives, its checked ``state.json``, and its strategy's
structure rebuilt from its record. Both the experiment (resuming, rolling back) and serving (``cml predict`` on a
run folder) read stages this way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CMLError
from .records import SavedStage, checked
from .training.checkpoint import read_state

if TYPE_CHECKING:
    from .strategies.base import StageContext

INITIAL = "initial"
"""The strategy folder of stage 0, the full fine-tuning every strategy starts from."""


def stage_folder(run_dir: Path, strategy: str, index: int, stage_name: str) -> Path:
    """Where a strategy's finished stage lives in a run folder: ``stages/<strategy>/<index>-<stage name>``."""
    return Path(run_dir) / "stages" / strategy / f"{index}-{stage_name}"


def read_stage(stage_dir: Path) -> dict:
    """The ``state.json`` of ``stage_dir`` as written, checked to be a finished stage's state (``SavedStage``,
    its record's prediction file inside the run folder and present); else a CMLError naming what is wrong. The
    weights beside it are checked by whoever loads them."""
    state = read_state(stage_dir)
    predictions = stage_dir.parents[2] / checked(SavedStage, state, stage_dir / "state.json").record.predictions
    if not predictions.is_file():
        raise CMLError("a finished stage's prediction file is missing", file=predictions)
    return state


def restore_stage(strategy, model, record: dict, ctx: StageContext, stage_dir: Path):
    """``strategy.restore`` on a record read from a run folder, which may lack what the strategy needs."""
    try:
        return strategy.restore(model, record, ctx)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise CMLError(f"the stage's record lacks what {strategy.name} needs to restore it ({err!r})",
                       file=stage_dir / "state.json") from None

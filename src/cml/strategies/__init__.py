"""Update strategies: given the deployed model of the previous stage and a stage's data, train and
return the new deployed model plus what the stage should record. One small module per method.
"""

from __future__ import annotations

from .base import Strategy, StageContext


def make_strategy(config) -> Strategy:
    if config.method == "full_finetune":
        from .full_finetune import FullFinetune as cls
    elif config.method == "lora_shared":
        from .lora_shared import LoraShared as cls
    elif config.method == "lora_per_language":
        from .lora_per_language import LoraPerLanguage as cls
    elif config.method == "laft_uriel":
        from .laft_uriel import LaftUriel as cls
    elif config.method == "laft_random":
        from .laft_random import LaftRandom as cls
    elif config.method == "ewc":
        from .ewc import EWC as cls
    elif config.method == "replay":
        from .replay import Replay as cls
    elif config.method == "distill":
        from .distill import Distill as cls
    elif config.method == "wise_ft":
        from .wise_ft import WiseFT as cls
    else:  # pragma: no cover - the config's discriminated union admits no other method
        raise AssertionError(config.method)
    return cls(config)


__all__ = ["Strategy", "StageContext", "make_strategy"]

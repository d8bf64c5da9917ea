"""Update strategies: given the deployed model of the previous stage and a stage's data, train and
return the new deployed model plus what the stage should record. One small module per method.
"""

from __future__ import annotations

from pkgutil import resolve_name

from .base import Strategy, StageContext

# method -> "module:class"; imported on demand so a run loads only the strategies it uses.
METHODS = {
    "full_finetune": "full_finetune:FullFinetune",
    "lora_shared": "lora_shared:LoraShared",
    "lora_per_language": "lora_per_language:LoraPerLanguage",
    "laft_uriel": "laft_uriel:LaftUriel",
    "laft_replay": "laft_replay:LaftReplay",
    "laft_random": "laft_random:LaftRandom",
    "ewc": "ewc:EWC",
    "replay": "replay:Replay",
    "distill": "distill:Distill",
    "wise_ft": "wise_ft:WiseFT",
    "no_update": "no_update:NoUpdate",
}


def make_strategy(config) -> Strategy:
    # the config admits exactly the keys of METHODS (tests/test_config.py checks both ways)
    return resolve_name(f"{__name__}.{METHODS[config.method]}")(config)


__all__ = ["METHODS", "Strategy", "StageContext", "make_strategy"]

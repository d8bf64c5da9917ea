"""Update strategies: given the deployed model of the previous stage and a stage's data, train and
return the new deployed model plus what the stage should record. One small module per method.
"""

from __future__ import annotations

from importlib import import_module

from .base import Strategy, StageContext

# method -> "module:class"; imported on demand so a run loads only the strategies it uses.
METHODS = {
    "full_finetune": "full_finetune:FullFinetune",
    "lora_shared": "lora_shared:LoraShared",
    "lora_per_language": "lora_per_language:LoraPerLanguage",
    "laft_uriel": "laft_uriel:LaftUriel",
    "laft_random": "laft_random:LaftRandom",
    "ewc": "ewc:EWC",
    "replay": "replay:Replay",
    "distill": "distill:Distill",
    "wise_ft": "wise_ft:WiseFT",
}


def make_strategy(config) -> Strategy:
    module, name = METHODS[config.method].split(":")  # the config's discriminated union admits no other method
    return getattr(import_module(f".{module}", __name__), name)(config)


__all__ = ["METHODS", "Strategy", "StageContext", "make_strategy"]

"""The LoRA modules (Hugging Face PEFT) of a routed model: adding them, which parameters train, what is saved.

A module is a PEFT adapter named after its group (or ``shared``); its tensors are named
``...<layer>.lora_A.<module>.weight``, and with ``train_head`` it has its own copy of the task head
(``modules_to_save``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Iterable, Sequence

import torch

from ...config import LoraOptions
from ...data.examples import stable_hash
from ...routing import RoutedModel


def add_modules(model: RoutedModel, names: Iterable[str], options: LoraOptions, task, seed: int) -> None:
    """Give ``model`` a module for each of ``names`` it lacks. The first wraps the plain model in PEFT with the
    layers ``options`` choose; later ones are made like the modules already there, which also holds for modules
    loaded from a release (made with the options of the update that trained them)."""
    from peft import PeftModel, get_peft_model

    model.unmerge()  # PEFT would unmerge a merged route by subtraction, leaving rounding in the base weights
    for name in names:
        # PEFT draws lora_A from the global generator: seed it per module, so a module's start does not depend on
        # what ran before it (other strategies in the run, their order).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_hash(seed, name) % 2**63)
            if not isinstance(model.model, PeftModel):
                model.model = get_peft_model(model.model, _first_module_config(model.model, options, task),
                                             adapter_name=name)
            elif name not in model.model.peft_config:
                model.model.add_adapter(name, _like_existing_modules(model.model))
    model.modules_changed()


def _first_module_config(model: torch.nn.Module, options: LoraOptions, task):
    from peft import LoraConfig

    # Targets are found on the plain model: PEFT replaces the Linear layers it wraps.
    heads = head_modules(model, task) if options.train_head else []
    return LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                      target_modules=target_modules(model, options.target_modules, options.layers, heads),
                      modules_to_save=heads or None)


def _like_existing_modules(model):
    config = copy.copy(next(iter(model.peft_config.values())))
    config.inference_mode = False  # PEFT loads a release's adapters for inference
    return config


def trained_modules(model: RoutedModel) -> list[str]:
    """The names of the model's modules, sorted; none before the first is added."""
    from peft import PeftModel

    return sorted(model.model.peft_config) if isinstance(model.model, PeftModel) else []


def train_only(model: RoutedModel, modules: Collection[str]) -> None:
    """Let exactly the parameters of ``modules`` train (none: the whole model is frozen)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(f".{module}." in name for module in modules))


def module_state(model: RoutedModel) -> dict[str, torch.Tensor]:
    """The tensors of every module (LoRA matrices and head copies): all a stage adds to the frozen model."""
    return {k: v for k, v in model.state_dict().items() if "lora_" in k or "modules_to_save" in k}


def head_modules(model: torch.nn.Module, task) -> list[str]:
    """The task head: the model's top-level modules outside the backbone, plus BERT's pooler for
    classification (it was trained with the head at stage 0); none for seq2seq."""
    if task.family.value == "seq2seq":
        return []  # the output projection is the (frozen, shared) embedding table: no separate head
    prefix = getattr(model, "base_model_prefix", "")
    heads = [name for name, child in model.named_children()
             if name != prefix and any(True for _ in child.parameters())]
    backbone = getattr(model, prefix, None)
    if task.family.value == "classification" and getattr(backbone, "pooler", None) is not None:
        heads.append("pooler")
    return heads


def target_modules(model: torch.nn.Module, suffixes: Sequence[str] | str, layers: list[int] | None,
                   heads: list[str]) -> list[str]:
    """Full names of the linear layers that get LoRA: matching suffixes (or ``all-linear``), inside the chosen
    encoder layers, outside the head. Listing full names lets ``layers`` work for any architecture."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or any(name.split(".")[0] == h or f".{h}" in name for h in heads):
            continue
        if suffixes != "all-linear" and not any(name.endswith(s) for s in suffixes):
            continue
        if layers is not None:
            match = re.search(r"\.(?:layer|layers|block)\.(\d+)\.", name)
            if match is None or int(match.group(1)) not in layers:
                continue
        names.append(name)
    if not names:
        raise ValueError(f"no linear layers match target_modules={suffixes} and layers={layers}")
    return names

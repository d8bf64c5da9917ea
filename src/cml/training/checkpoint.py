"""Checkpoints as safetensors plus JSON, never pickle.

A checkpoint folder holds ``model.safetensors`` (the parameters that training changes), optionally
``optimizer.safetensors`` + ``optimizer.json`` (AdamW moments and hyper-parameters, flattened),
``rng.safetensors`` (each process's dropout streams: torch's CPU RNG, and the GPU's where one is used) and
``state.json``. Folders are written under a temporary name and renamed, so a killed process leaves either the
old checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CMLError
from ..io import make_readable


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied weights); store each once, by value.
    seen: dict[int, str] = {}
    out = {}
    for name, tensor in tensors.items():
        key = tensor.data_ptr()
        out[name] = tensor.clone() if key in seen and tensor.numel() else tensor
        seen.setdefault(key, name)
    return out


def save_checkpoint(folder: Path, model_state: dict[str, torch.Tensor], state: dict,
                    optimizer: torch.optim.Optimizer | None = None,
                    rng_states: dict[str, torch.Tensor] | None = None) -> None:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_file(_unshare(model_state), tmp / "model.safetensors")
        if optimizer is not None:
            tensors, meta = _flatten_optimizer(optimizer)
            save_file(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")
        if rng_states:
            save_file(rng_states, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        make_readable(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_state(folder: Path) -> dict | None:
    path = Path(folder) / "state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_model_state(model: torch.nn.Module, folder: Path) -> None:
    tensors = load_file(Path(folder) / "model.safetensors")
    missing_in_model = set(tensors) - set(model.state_dict())
    if missing_in_model:
        raise CMLError(f"checkpoint has tensors the model lacks: {sorted(missing_in_model)[:5]}", file=folder)
    model.load_state_dict(tensors, strict=False)


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor] | None:
    """Restore the optimizer; return the saved RNG states (dropout's streams) for the caller to set just
    before the resumed epoch's first batch."""
    folder = Path(folder)
    meta = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    tensors = load_file(folder / "optimizer.safetensors")
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rng = folder / "rng.safetensors"
    return load_file(rng) if rng.is_file() else None


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state_dict = optimizer.state_dict()
    tensors = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            tensors[f"{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return {k: v.contiguous() for k, v in tensors.items()}, {"param_groups": state_dict["param_groups"]}

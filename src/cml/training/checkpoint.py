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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import CMLError
from ..io import make_readable, read_json, swap_name, temporary_name, writing


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
    with writing(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temporary_name(folder.name), suffix=".tmp", dir=folder.parent))
    try:
        with writing(folder):
            _write_checkpoint(tmp, model_state, state, optimizer, rng_states)
            if folder.exists():
                old = folder.with_name(swap_name(folder.name))
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_checkpoint(tmp: Path, model_state, state, optimizer, rng_states) -> None:
    try:
        save_file(unshare(model_state), tmp / "model.safetensors")
        if optimizer is not None:
            tensors, meta = _flatten_optimizer(optimizer)
            save_file(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")
        if rng_states:
            save_file(rng_states, tmp / "rng.safetensors")
    except SafetensorError as err:  # safetensors reports a failed write (no space left) as its own error
        raise OSError(str(err)) from None
    (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    make_readable(tmp)


def read_state(folder: Path) -> dict | None:
    """A checkpoint's ``state.json``, or None where there is none; a truncated or malformed one is a CMLError."""
    path = Path(folder) / "state.json"
    if not path.is_file():
        return None
    state = read_json(path, "checkpoint state")
    if not isinstance(state, dict):
        raise CMLError("checkpoint state is not a JSON object", file=path)
    return state


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a truncated or corrupt file is a CMLError naming it."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise CMLError("checkpoint weights missing", file=path) from None
    except (SafetensorError, OSError) as err:
        raise CMLError(f"unreadable safetensors file ({err}); it may be truncated", file=path) from None


def verify_checkpoint(folder: Path) -> None:
    """Raise a CMLError naming the file if any part of the checkpoint in ``folder`` cannot be read back: the
    state, and the header of every safetensors file (which covers truncation: the header records each
    tensor's extent, and safetensors refuses a file that does not hold them all)."""
    folder = Path(folder)
    read_state(folder)
    if not (folder / "model.safetensors").is_file():
        raise CMLError("checkpoint weights missing", file=folder / "model.safetensors")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CMLError(f"unreadable safetensors file ({err}); it may be truncated", file=path) from None
    optimizer = folder / "optimizer.json"
    if optimizer.is_file():
        read_json(optimizer, "optimizer state")


def load_model_state(model: torch.nn.Module, folder: Path, complete: bool = False) -> None:
    """The tensors of ``folder/model.safetensors`` into ``model``; with ``complete``, every tensor of the model
    must be in the file (none may keep the value it was built with)."""
    path = Path(folder) / "model.safetensors"
    tensors = load_tensors(path)
    expected = model.state_dict()
    if complete and set(expected) - set(tensors):
        raise CMLError(f"the file lacks tensors of the model: {sorted(set(expected) - set(tensors))[:5]}", file=path)
    missing_in_model = set(tensors) - set(expected)
    if missing_in_model:
        raise CMLError(f"checkpoint has tensors the model lacks: {sorted(missing_in_model)[:5]}", file=path)
    misshapen = [name for name, tensor in tensors.items() if tensor.shape != expected[name].shape]
    if misshapen:
        raise CMLError(f"checkpoint tensors of another shape than the model's: {misshapen[:5]}", file=path)
    model.load_state_dict(tensors, strict=False)


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor] | None:
    """Restore the optimizer; return the saved RNG states (dropout's streams) for the caller to set just
    before the resumed epoch's first batch."""
    folder = Path(folder)
    meta = read_json(folder / "optimizer.json", "optimizer state")
    tensors = load_tensors(folder / "optimizer.safetensors")
    state: dict[int, dict] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rng = folder / "rng.safetensors"
    return load_tensors(rng) if rng.is_file() else None


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state_dict = optimizer.state_dict()
    tensors = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            tensors[f"{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return {k: v.contiguous() for k, v in tensors.items()}, {"param_groups": state_dict["param_groups"]}

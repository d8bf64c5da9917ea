"""A release's network on disk and back: the base model as a Hugging Face folder, one PEFT adapter folder per
module, and the routes (language -> adapters) in ``release.json``. Also what an update may start from: a
release, or a Hugging Face checkpoint that already has its task head, whose label map is kept as it is.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CMLError
from ..io import read_bytes, sha256_bytes
from ..models.embedded import loading_model, quiet_transformers, resolve_model_path
from ..routing import RoutedModel
from ..task_family import TaskFamily
from ..training.checkpoint import load_model_state, unshare
from .manifest import ADAPTER_DIR, MANIFEST, MODEL_DIR, Origin, ReleaseRecord, read_manifest, verify_files

# The model classes whose checkpoints carry each family's task head (a plain backbone does not).
HEAD_ARCHITECTURES = {TaskFamily.classification: "ForSequenceClassification",
                      TaskFamily.tagging: "ForTokenClassification"}


@dataclass
class Source:
    """Where an update starts: ``model`` is a Hugging Face folder or hub id with the task head; ``labels`` its
    label map in id order; ``record`` and ``folder`` are set for a release."""

    origin: Origin
    model: str
    labels: list[str]
    record: ReleaseRecord | None = None
    folder: Path | None = None


def open_source(name: str, family: TaskFamily, trust_remote_code: bool = False) -> Source:
    """A release folder, or a Hugging Face checkpoint (folder or hub id) of ``family`` with its task head."""
    path = Path(name)
    if (path / MANIFEST).is_file():
        record = read_manifest(path)
        if record.task is not family:
            raise CMLError(f"this release is a {record.task.value} model; the config's task is {family.value}",
                           file=path)
        verify_files(path, record)
        return Source(Origin(kind="release", name=str(path.resolve()), release=record.name, files=record.files),
                      model_name(path, record), list(record.labels), record, path)
    from transformers import AutoConfig

    with loading_model(name):
        config = AutoConfig.from_pretrained(resolve_model_path(name), trust_remote_code=trust_remote_code)
    if family is TaskFamily.seq2seq:
        if not getattr(config, "is_encoder_decoder", False):
            raise CMLError(f"{name} is not an encoder-decoder checkpoint: start with `cml train`, which builds one")
        labels = []
    else:
        suffix = HEAD_ARCHITECTURES[family]
        if not any(arch.endswith(suffix) for arch in (config.architectures or [])):
            raise CMLError(f"{name} has no {family.value} head (its architectures: "
                           f"{', '.join(config.architectures or ['none'])}; expected a *{suffix}): train one with "
                           "`cml train` first, or update a checkpoint fine-tuned for this task")
        labels = [str(config.id2label[i]) for i in range(config.num_labels)]  # id order, never sorted
        if len(set(labels)) != len(labels):
            raise CMLError(f"{name}: its id2label names one label twice ({labels})")
    local = Path(resolve_model_path(name))
    files = {p.name: sha256_bytes(read_bytes(p, "checkpoint file")) for p in sorted(local.iterdir()) if p.is_file()} \
        if local.is_dir() else {}
    return Source(Origin(kind="checkpoint", name=name, files=files), name, labels)


def load_model(task, record: ReleaseRecord | None, folder: Path | None, languages: list[str]) -> RoutedModel:
    """The routed network of the release in ``folder`` (or of the checkpoint ``task`` names, ``record`` None):
    the base from the task's model, its adapters from ``adapters/``, and the routes in ``record``."""
    with quiet_transformers():
        base = task.seeded_model(0)  # nothing random: every weight comes from the folder
        if record is not None and record.base_format == "assembled":
            load_model_state(base, folder / MODEL_DIR, complete=True)  # nothing of the backbone's weights stays
    task.new_parameter_names = frozenset()  # every weight came from the release or checkpoint: none starts new
    model = RoutedModel(base, languages)
    if record is not None and record.modules:
        from peft import PeftModel

        adapters = folder / ADAPTER_DIR
        with loading_model(str(adapters)), warnings.catch_warnings():
            # PEFT asks transformers 5 a deprecated question at load time; the warning is not the user's to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            first, *others = record.modules
            model.model = PeftModel.from_pretrained(base, adapters / first, adapter_name=first)
            for module in others:
                model.model.load_adapter(adapters / module, adapter_name=module)
        model.modules_changed()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    if record is not None:
        model.routes = {lang: route for lang, route in record.routes.items() if route}
    model.eval()
    return model


def base_format(task) -> str:
    """``assembled`` for an encoder-decoder that cml assembled around an encoder checkpoint (seq2seq from e5):
    one embedding table serves encoder, decoder and output, and a forward hook adds the source embeddings,
    neither of which a Hugging Face folder can express; ``hf`` for every other model."""
    return "assembled" if task.family is TaskFamily.seq2seq and not task.native else "hf"


def model_name(folder: Path, record: ReleaseRecord) -> str:
    """What a release's task builds its network from: its ``model/`` folder, or for an assembled encoder-decoder
    its backbone (which gives the table ties and the hook; :func:`load_model` then loads every weight)."""
    return record.backbone if record.base_format == "assembled" else str(folder / MODEL_DIR)


def save_base(model: RoutedModel, task, folder: Path) -> None:
    """The routed network's base model and tokenizer as a Hugging Face folder (safetensors); for an assembled
    encoder-decoder, its config and every tensor (the shared table stored once per use)."""
    model.unmerge()  # inference merges a route into the base weights; the base is stored without it
    if base_format(task) == "assembled":
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        model.model.config.save_pretrained(folder)
        save_file(unshare(dict(model.model.state_dict())), str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        model.model.save_pretrained(folder, safe_serialization=True)
    task.tokenizer.save_pretrained(folder)
    if task.family is TaskFamily.seq2seq and task.target_tokenizer is not task.tokenizer:
        task.target_tokenizer.save_pretrained(folder / "target_tokenizer")


def copy_base(source: Path, folder: Path, *, link_weights: bool = False) -> None:
    """A copy of the model folder ``source``. With ``link_weights`` its safetensors files are hard links where
    the file system allows: for a release's base under new adapters, where a weight edited in place in either
    release would fail both releases' sha256 check. Exports, which their users may edit, get copies."""
    for path in source.rglob("*"):
        target = folder / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not (link_weights and path.suffix == ".safetensors"):
                raise OSError
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def save_adapters(model: RoutedModel, folder: Path) -> list[str]:
    """One PEFT adapter folder per module, ``folder/<module>``; returns the module names."""
    from peft import PeftModel

    if not isinstance(model.model, PeftModel):
        return []
    names = sorted(model.model.peft_config)
    for name in names:
        # PEFT writes a non-default adapter into a sub-folder named after it
        model.model.save_pretrained(folder, selected_adapters=[name], safe_serialization=True)
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's empty model card template; exports write a real one
    return names


def grow_head(model: torch.nn.Module, task, old_labels: list[str]) -> frozenset[str]:
    """Widen the label head of ``model`` from ``old_labels`` to ``task.labels`` (which start with them): the old
    rows are kept, the new ones start as the model's initialiser would make them. Returns the new parameters'
    names (trained at ``new_parameters_lr_scale``)."""
    from ..strategies.modular.modules import head_modules

    heads = head_modules(model, task)
    old, new = len(old_labels), len(task.labels)
    grown = []
    for name, module in list(model.named_modules()):
        if not (isinstance(module, torch.nn.Linear) and module.out_features == old
                and any(name == h or name.startswith(f"{h}.") for h in heads)):
            continue
        wider = torch.nn.Linear(module.in_features, new, bias=module.bias is not None)
        with torch.no_grad():
            wider.weight.normal_(0.0, getattr(model.config, "initializer_range", 0.02))
            wider.weight[:old] = module.weight
            if module.bias is not None:
                wider.bias.zero_()
                wider.bias[:old] = module.bias
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, wider)
        grown += [f"{name}.weight", f"{name}.bias"]
    if not grown:
        raise CMLError(f"cannot grow this model's head: no layer of its head outputs {old} labels")
    model.config.num_labels = new
    model.config.id2label = dict(enumerate(task.labels))
    model.config.label2id = task.label_to_id
    if hasattr(model, "num_labels"):
        model.num_labels = new
    return frozenset(grown)

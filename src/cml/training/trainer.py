"""The training loop, on Accelerate: the same code runs on a CPU, one GPU, or ``accelerate launch``
over several processes and machines, with mixed precision where the hardware has it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, Field, ValidationError
from tqdm.auto import tqdm

from ..config import TrainingConfig
from ..data.batching import BucketBatchSampler
from ..errors import CMLError
from ..evaluation.inference import evaluate_languages, mean_primary
from .checkpoint import (load_model_state, load_tensors, load_training_state, read_state, save_checkpoint,
                         trainable_state, verify_checkpoint)
from .tracking import Tracking

log = logging.getLogger("cml.train")
LATEST = "latest"  # the in-progress checkpoint's folder inside a stage's checkpoint folder: what a resume goes on from


@dataclass
class TrainResult:
    steps: int = 0
    epochs_run: int = 0
    best_epoch: int | None = None
    best_dev: float | None = None
    dev_history: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    bad_epochs: int = 0
    train_seconds: float = 0.0
    examples_seen: int = 0

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / self.train_seconds if self.train_seconds else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "examples_per_second": self.examples_per_second}


class TrainingProgress(BaseModel):
    """The ``state.json`` of an in-progress training checkpoint (what ``train`` resumes from)."""

    epoch: int = Field(ge=0)
    batches_done: int = Field(ge=0)
    result: dict
    scheduler: dict
    epoch_batch_losses: list[float] = []


def make_accelerator(config: TrainingConfig, project_dir: Path | None = None):
    """One Accelerator per run. Under ``accelerate launch`` with N processes ``batch_size`` stays the
    global batch: each batch is split across the processes (so it must divide by N), and a run takes the
    same steps on the same batches as on one process (but the epoch's last, short batch, which Accelerate
    fills up with the epoch's first examples)."""
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs

    mixed = config.mixed_precision
    if mixed != "no" and not torch.cuda.is_available():
        log.warning("mixed_precision=%s ignored: no GPU (CPU bf16/fp16 matmuls are far slower than fp32)", mixed)
        mixed = "no"
    # With routing, a batch (or one process's share of it) may hold no row of some trained module's
    # languages: DDP must then be told that those parameters got no gradient in this step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Accelerate uses its CPU backend (gloo) only when told to use the CPU: without it, processes started
    # by `accelerate launch --multi_gpu` on a machine with no GPU would each train alone on all the data.
    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(cpu=cpu, mixed_precision=mixed, dataloader_config=DataLoaderConfiguration(split_batches=True),
                       gradient_accumulation_steps=config.gradient_accumulation_steps, kwargs_handlers=[ddp],
                       log_with=config.trackers or None, project_dir=str(project_dir) if project_dir else None)


def _gather_rng_states(accelerator) -> dict[str, torch.Tensor]:
    """Every process's dropout streams, one row per process: each process draws its own masks (for its share
    of the batch), so a resumed run must give each its own stream back. On a GPU dropout draws from the
    GPU's generator, not the CPU's."""
    states = {"torch_cpu": torch.get_rng_state()}
    if accelerator.device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state(accelerator.device)
    return {name: accelerator.gather(state.to(accelerator.device)[None]).cpu() for name, state in states.items()}


def _restore_rng_states(states: dict[str, torch.Tensor], accelerator) -> None:
    # checkpoints written before the states were gathered hold one CPU state, not one row per process
    states = {name: state[None] if state.ndim == 1 else state for name, state in states.items()}
    rows = states["torch_cpu"].shape[0]
    if rows != accelerator.num_processes:
        log.warning("checkpoint saved by %d processes, resumed on %d: dropout masks will differ from an "
                    "uninterrupted run", rows, accelerator.num_processes)
    row = accelerator.process_index % rows
    # clone: torch.set_rng_state crashed (segfault, torch 2.13) on a row view, which starts at a storage offset
    torch.set_rng_state(states["torch_cpu"][row].clone())
    if "torch_cuda" in states and accelerator.device.type == "cuda":
        torch.cuda.set_rng_state(states["torch_cuda"][row].clone(), accelerator.device)


def _schedule(optimizer, config: TrainingConfig, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(config.schedule if config.schedule != "constant" else "constant_with_warmup", optimizer,
                         num_warmup_steps=int(config.warmup_ratio * total_steps), num_training_steps=total_steps)


def _is_new(name: str, new_names: frozenset[str]) -> bool:
    """Whether a parameter is one of ``new_names``, which are relative to the bare model: wrappers (routing,
    PEFT) add prefixes, so every dotted suffix of ``name`` is tried."""
    parts = name.split(".")
    return any(".".join(parts[i:]) in new_names for i in range(len(parts)))


def _optimizer(model: torch.nn.Module, config: TrainingConfig, new_names: frozenset[str]):
    groups: dict[tuple[bool, bool], list] = {}  # (not decayed, new) -> parameters; decayed ones first
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            plain = parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
            is_new = config.new_parameters_lr_scale != 1 and _is_new(name, new_names)
            groups.setdefault((plain, is_new), []).append(parameter)
    parameters = [parameter for params in groups.values() for parameter in params]
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": 0.0 if plain else config.weight_decay,
          "lr": config.learning_rate * (config.new_parameters_lr_scale if is_new else 1.0)}
         for (plain, is_new), params in sorted(groups.items())], lr=config.learning_rate,
        fused=_fused_kernels_apply(parameters))


def _fused_kernels_apply(parameters: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel can step ``parameters``: on CPU torch's default steps each tensor with one
    elementwise op after another. Measured at 2 threads (docs/benchmarks.md): 0.064 s against 0.025 s a step for
    multilingual-e5-small's 21M trainable parameters (embeddings frozen), 1.7 s against 0.16 s with its 96M-entry
    embedding table trainable; the same arithmetic to float rounding."""
    return bool(parameters) and all(
        parameter.device.type in ("cpu", "cuda") and parameter.is_floating_point() for parameter in parameters)


@contextmanager
def without_dropout(model: torch.nn.Module) -> Iterator[None]:
    """Every dropout of ``model`` off while the block runs, then back as it was. Its probability goes to 0 rather
    than the module to eval mode: attention takes its dropout from the probability (``training.dropout``)."""
    # _DropoutNd: the base of Dropout, Dropout1d-3d and the alpha dropouts
    modules = [module for module in model.modules() if isinstance(module, torch.nn.modules.dropout._DropoutNd)]
    probabilities = [module.p for module in modules]
    for module in modules:
        module.p = 0.0
    try:
        yield
    finally:
        for module, probability in zip(modules, probabilities):
            module.p = probability


def _readable_checkpoint(latest: Path, best: Path, description: str) -> dict | None:
    """The in-progress checkpoint's state if it (and the best epoch's weights beside it) can be read back; a
    truncated or corrupt one is reported and the stage restarts from its beginning, which gives the same
    weights as an uninterrupted run, only later."""
    if not (latest / "state.json").is_file():
        return None
    try:
        verify_checkpoint(latest)
        if best.is_dir():
            verify_checkpoint(best)
        state = read_state(latest)
        try:
            progress = TrainingProgress.model_validate(state)
            TrainResult(**progress.result)
        except (ValidationError, TypeError) as err:
            raise CMLError(f"not a training checkpoint's state ({str(err).splitlines()[0]})",
                           file=latest / "state.json") from None
    except CMLError as err:
        log.warning("%s: the in-progress checkpoint cannot be read (%s); restarting this stage from its start",
                    description, err)
        return None
    return state


def train(model: torch.nn.Module, task, train_features: list[dict], config: TrainingConfig, *, accelerator,
          seed: int, dev: dict | None = None, checkpoint_dir: Path | None = None, resume: bool = False,
          description: str = "train", on_step: Callable[[int], None] | None = None,
          loss_fn: Callable[[torch.nn.Module, dict, object], torch.Tensor] | None = None,
          tracking: Tracking | None = None, batch_groups: Sequence[str] | None = None) -> TrainResult:
    """Train ``model`` (its trainable parameters) on ``train_features``; pick the best epoch on ``dev``.

    With ``checkpoint_dir`` the loop checkpoints every ``checkpoint_every_steps`` optimizer steps and at
    each epoch end; ``resume`` continues from the last checkpoint and reaches the same weights as an
    uninterrupted run (the batch order depends only on seed and epoch, and the RNG state is restored).
    ``loss_fn(model, batch, output)`` replaces the model's own loss (regularised strategies add terms).
    With ``tracking`` each optimizer step logs the loss and learning rate to the run's trackers.
    ``batch_groups`` (a key per training example) makes most batches hold one key (:class:`BucketBatchSampler`).
    """
    if config.batch_size % accelerator.num_processes:
        raise CMLError(f"{description}: batch_size {config.batch_size} is the global batch, split across "
                       f"{accelerator.num_processes} processes: make it a multiple of {accelerator.num_processes}")
    torch.manual_seed(seed)
    latest = checkpoint_dir / LATEST if checkpoint_dir else None
    best_dir = checkpoint_dir / "best" if checkpoint_dir else None
    sampler = BucketBatchSampler([len(f["input_ids"]) for f in train_features], config.batch_size,
                                 shuffle=True, seed=seed, multiplier=config.bucket_multiplier, groups=batch_groups)
    # The loader gets its own generator: by default each epoch's first batch draws a seed from the global
    # RNG, which would shift the dropout stream of a run resumed mid-epoch.
    loader = torch.utils.data.DataLoader(train_features, batch_sampler=sampler, collate_fn=task.batch,
                                         generator=torch.Generator().manual_seed(seed))
    optimizer = _optimizer(model, config, task.new_parameter_names)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    batches_per_epoch = len(loader)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_steps = min(config.max_steps or 10**12, steps_per_epoch * config.epochs)
    scheduler = _schedule(optimizer, config, total_steps)

    result, start_epoch, skip_batches, rng_states, resumed_losses = TrainResult(), 0, 0, None, []
    saved = _readable_checkpoint(latest, best_dir, description) if resume and latest else None
    if saved:
        try:
            load_model_state(accelerator.unwrap_model(model), latest)
            rng_states = load_training_state(latest, optimizer)
            scheduler.load_state_dict(saved["scheduler"])
        except (KeyError, ValueError, TypeError, IndexError) as err:  # parts that parse but do not fit
            raise CMLError(f"the in-progress checkpoint does not fit this training ({type(err).__name__}: {err}); "
                           f"remove {checkpoint_dir} to restart the stage", file=latest) from None
        result = TrainResult(**saved["result"])
        start_epoch, skip_batches = saved["epoch"], saved["batches_done"]
        resumed_losses = list(saved.get("epoch_batch_losses", []))
        log.info("%s: resumed at epoch %d, batch %d, step %d", description, start_epoch, skip_batches, result.steps)

    def checkpoint(epoch: int, batches_done: int, losses: list[float]) -> None:
        if latest is None:
            return
        streams = _gather_rng_states(accelerator)  # a collective: every process, before the main one saves
        if accelerator.is_main_process:
            # the epoch's batch losses so far: a resumed epoch reports the same mean loss as an uninterrupted one
            save_checkpoint(latest, trainable_state(accelerator.unwrap_model(model)),
                            {"epoch": epoch, "batches_done": batches_done, "result": asdict(result),
                             "epoch_batch_losses": losses, "scheduler": scheduler.state_dict()},
                            optimizer=optimizer, rng_states=streams)

    best_weights = None
    if result.best_epoch is not None and best_dir is not None and (best_dir / "model.safetensors").exists():
        best_weights = load_tensors(best_dir / "model.safetensors")
    model.train()
    # A checkpoint taken after an epoch's last step but before its end (dev score, best weights) owes that end:
    # only a checkpoint at an epoch boundary can say the training is over (all steps, or early stopping).
    patience_spent = bool(config.early_stopping_patience) and result.bad_epochs >= config.early_stopping_patience
    done = skip_batches == 0 and (result.steps >= total_steps or patience_spent)
    with nullcontext() if config.dropout else without_dropout(model):
        for epoch in range(start_epoch, config.epochs):
            if done:
                break
            epoch_loader = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
            # Accelerate's loader re-sets the sampler's epoch to its own iteration count at each iter(), which
            # restarts at 0 in a resumed process: give it the true epoch first.
            epoch_loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            if rng_states is not None:
                _restore_rng_states(rng_states, accelerator)
                rng_states = None
            progress = tqdm(epoch_loader, desc=f"{description} epoch {epoch + 1}/{config.epochs}",
                            initial=skip_batches, total=batches_per_epoch, leave=False,
                            disable=not accelerator.is_local_main_process)
            losses, started = (resumed_losses if epoch == start_epoch else []), time.perf_counter()
            for index, batch in enumerate(progress if result.steps < total_steps else (), start=skip_batches):
                with accelerator.accumulate(model):
                    output = model(**batch)
                    loss = loss_fn(model, batch, output) if loss_fn else output.loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        if config.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                # Each process holds its share of the batch: sum over processes (a no-op on one) to log the
                # whole batch's mean loss (the mean of the shares' means; equal shares, as split_batches makes
                # them) and count every example seen.
                share = torch.tensor([loss.item(), len(batch["input_ids"])], device=accelerator.device)
                total_loss, seen = accelerator.reduce(share, "sum").tolist()
                losses.append(total_loss / accelerator.num_processes)
                result.examples_seen += int(seen)
                if accelerator.sync_gradients:
                    result.steps += 1
                    if tracking is not None:
                        tracking.log({"train/loss": losses[-1], "train/lr": scheduler.get_last_lr()[0]}, result.steps)
                    if on_step:
                        on_step(result.steps)
                    if config.checkpoint_every_steps and result.steps % config.checkpoint_every_steps == 0:
                        result.train_seconds += time.perf_counter() - started
                        started = time.perf_counter()
                        checkpoint(epoch, index + 1, losses)
                elapsed = result.train_seconds + time.perf_counter() - started
                progress.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}",
                                     ex_s=f"{result.examples_seen / max(elapsed, 1e-9):.1f}")
                if result.steps >= total_steps:
                    done = True
                    break
            progress.close()
            result.train_seconds += time.perf_counter() - started
            skip_batches = 0
            result.epochs_run = epoch + 1
            result.epoch_losses.append(sum(losses) / max(len(losses), 1))
            if dev:
                # Every process scores the whole dev set with the same weights, so all of them pick the
                # same best epoch and early stop together, with no communication.
                score = mean_primary(task, evaluate_languages(accelerator.unwrap_model(model), task, dev,
                                                              config.eval_batch_size))
                result.dev_history.append(score)
                log.info("%s epoch %d: loss %.4f, dev %s %.4f", description, epoch + 1, result.epoch_losses[-1],
                         task.primary_metric, score)
                if result.best_dev is None or score > result.best_dev:
                    result.best_dev, result.best_epoch, result.bad_epochs = score, epoch + 1, 0
                    if config.select_best:
                        best_weights = trainable_state(accelerator.unwrap_model(model))
                        if best_dir is not None and accelerator.is_main_process:
                            save_checkpoint(best_dir, best_weights, {"epoch": epoch + 1, "dev": score})
                else:
                    result.bad_epochs += 1
            checkpoint(epoch + 1, 0, [])
            if config.early_stopping_patience and result.bad_epochs >= config.early_stopping_patience:
                log.info("%s: early stop after epoch %d (best epoch %s)", description, epoch + 1, result.best_epoch)
                break
    unwrapped = accelerator.unwrap_model(model)
    if config.select_best and best_weights is not None:
        unwrapped.load_state_dict(best_weights, strict=False)
    if checkpoint_dir is not None and accelerator.is_main_process:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    accelerator.free_memory()
    return result

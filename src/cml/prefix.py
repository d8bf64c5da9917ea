"""The frozen prefix of a routed encoder: its embeddings and the layers below its lowest adapted layer.

Every route shares them bit for bit (no module adapts them and nothing trains them), so a batch that mixes
routes runs them once (and, with routes that stack no modules, the adapted layers once too: :mod:`cml.routing`);
and within a modular update, whose inputs repeat every epoch and for every gate candidate, their outputs are
computed once and kept (:meth:`FrozenPrefix.keep`).

Kept outputs are computed with dropout off in the frozen part (they are reused, so one dropout draw would be
frozen into every epoch): training on them is what training with dropout only in the adapted layers gives, which
is an option of its own (``lora.cache_frozen_layers``), measured in docs/benchmarks.md. In evaluation there is
no dropout, and the shared pass only reorders floating-point sums (logits agree to 1e-5; tests/test_speed.py).

Which models have one: those whose one stack of numbered layers (``layer``/``layers``/``block``) passes only its
hidden states from layer to layer, with every PEFT tuner layer inside that stack (BERT, XLM-R and their kin, the
project's backbones). The prefix's output is captured with a forward hook, and the upper pass runs the model's
own forward with the prefix layers standing in for their known output. Encoder-decoders (two stacks) and models
with a tuner outside the stack have none. Batches are right-padded (``Task.pad``), so a row's prefix output
depends only on its token ids up to its last real token.

Kept outputs live beside the model, in its dtype and on its device: tokens x hidden size x 4 bytes in fp32, e.g.
50 MB for 2,000 sentences of 16 tokens at width 384.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch


class _Known(torch.nn.Module):
    """Stands in for a frozen layer whose output is already known: returns it, computes nothing."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


class _PrefixDone(Exception):
    """Raised by the hook on the prefix's last layer: the forward has computed all that is wanted of it."""

    def __init__(self, output):
        self.output = output


def _row_lengths(mask: torch.Tensor) -> list[int]:
    """Each row's length up to its last attended position (a pad token inside the text stays in the row)."""
    trailing = mask.flip(1).int().argmax(1)  # padding after the last attended position
    return (mask.shape[1] - trailing).tolist()


def _row_keys(inputs: dict[str, torch.Tensor]) -> tuple[list[bytes], list[int]]:
    """What determines each row's prefix output (its token ids up to its last real token), and those lengths."""
    ids, mask = inputs["input_ids"].cpu(), inputs["attention_mask"].cpu()
    lengths = _row_lengths(mask)
    return [ids[row, :length].numpy().tobytes() for row, length in enumerate(lengths)], lengths


class FrozenPrefix:
    """A model's frozen prefix: runs it alone (:meth:`lower`), the rest of the model from its output
    (:meth:`upper`), and keeps its outputs for an update (:meth:`keep`, :meth:`forget`)."""

    def __init__(self, model: torch.nn.Module, stack: torch.nn.ModuleList, depth: int,
                 modules: list[torch.nn.Module]):
        self.model = model
        self.stack = stack
        self.depth = depth
        self.modules = modules  # the embeddings and the prefix layers: what must stay frozen
        self.kept: dict[bytes, torch.Tensor] | None = None
        self.tuple_output = False

    @classmethod
    def of(cls, model: torch.nn.Module) -> FrozenPrefix | None:
        """The prefix of ``model`` (PEFT-wrapped or not), or None where it has none."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if getattr(model.config, "is_encoder_decoder", False):
            return None
        stacks = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, torch.nn.ModuleList) and re.search(r"(?:^|\.)(?:layer|layers|block)$", name)]
        if len(stacks) != 1:
            return None
        name, stack = stacks[0]
        lowest = len(stack)
        for tuner_name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer):
                match = re.match(re.escape(name) + r"\.(\d+)\.", tuner_name)
                if match is None:
                    return None  # adapted outside the stack: nothing below is known to be shared
                lowest = min(lowest, int(match.group(1)))
        if lowest in (0, len(stack)):
            return None
        embedding = next(n for n, m in model.named_modules() if m is model.get_input_embeddings())
        owner = model.get_submodule(embedding.rsplit(".", 1)[0]) if "." in embedding else model.get_input_embeddings()
        return cls(model, stack, lowest, [owner, *stack[:lowest]])

    def frozen(self) -> bool:
        return not any(p.requires_grad for module in self.modules for p in module.parameters())

    # -- the two halves of a forward ------------------------------------------------------------------
    def lower(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The prefix's output for a batch, from kept rows where all are kept, else computed once for the batch."""
        if self.kept is not None:
            keys, lengths = _row_keys(inputs)
            if all(key in self.kept for key in keys):
                mask = inputs["attention_mask"]
                first = self.kept[keys[0]]
                # padded positions: zeros, which the upper layers' attention masks out
                hidden = first.new_zeros((*mask.shape, first.shape[-1]), device=mask.device)
                for row, (key, length) in enumerate(zip(keys, lengths)):
                    hidden[row, :length] = self.kept[key]
                return hidden
        return self._compute(inputs)

    def _compute(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        def stop(module, args, output):
            raise _PrefixDone(output)

        modes = [module.training for module in self.modules]
        for module in self.modules:
            module.eval()
        hook = self.stack[self.depth - 1].register_forward_hook(stop)
        try:
            with torch.no_grad():
                self.model(**{k: v for k, v in inputs.items() if k != "labels"})
        except _PrefixDone as done:
            output = done.output
        else:
            raise RuntimeError("the model's forward never reached its layer stack")
        finally:
            hook.remove()
            for module, mode in zip(self.modules, modes):
                module.train(mode)
        self.tuple_output = isinstance(output, tuple)
        return output[0] if self.tuple_output else output

    def upper(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]):
        """The model's forward from the prefix's known output ``hidden`` on."""
        known = _Known((hidden,) if self.tuple_output else hidden)
        layers = list(self.stack[:self.depth])
        for index in range(self.depth):
            self.stack[index] = known
        try:
            return self.model(**inputs)
        finally:
            for index, layer in enumerate(layers):
                self.stack[index] = layer

    # -- kept outputs ---------------------------------------------------------------------------------
    def keep(self, task, feature_sets: Iterable[Sequence[dict]], batch_size: int) -> None:
        """Compute and keep the prefix's output of every feature (dropout off), in a fixed batching, so a run
        resumed mid-stage reuses the very same values."""
        from accelerate import PartialState
        from tqdm.auto import tqdm

        from .data.batching import BucketBatchSampler

        self.kept = {}
        features = [f for fs in feature_sets for f in fs]
        device = next(self.model.parameters()).device
        sampler = BucketBatchSampler([len(f["input_ids"]) for f in features], batch_size, shuffle=False)
        bar = tqdm(sampler, desc="frozen layers", unit="batch", leave=False,
                   disable=not PartialState().is_local_main_process)
        for indices in bar:
            batch = {k: v.to(device) for k, v in task.collate([features[i] for i in indices]).items()}
            hidden = self._compute(batch)
            for row, (key, length) in enumerate(zip(*_row_keys(batch))):
                self.kept[key] = hidden[row, :length].clone()

    def forget(self) -> None:
        self.kept = None

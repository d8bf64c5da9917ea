"""The frozen prefix of a routed encoder: its embeddings and the layers below its lowest adapted layer.

Every route shares them bit for bit (no module adapts them and nothing trains them), so a batch that mixes
routes runs them once and only the adapted layers per route; and within a modular update, whose inputs repeat
every epoch and for every gate candidate, their outputs are computed once and kept (:meth:`FrozenPrefix.keep`).

Kept outputs are computed with dropout off in the frozen part (they are reused, so one dropout draw would be
frozen into every epoch): training on them is what training with dropout only in the adapted layers gives, which
is an option of its own (``lora.cache_frozen_layers``), measured in docs/benchmarks.md. In evaluation there is
no dropout, and the shared pass only reorders floating-point sums (logits agree to 1e-5; tests/test_speed.py).

Architecture-neutral by construction: the prefix is found as the model's one stack of numbered layers
(``layer``/``layers``/``block``) below its lowest PEFT tuner layer, its output captured with a forward hook, and
the upper pass runs the model's own forward with the prefix layers standing in for their known output.
Encoder-decoders (two stacks) and models with a tuner outside the stack have no prefix.
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
    def __init__(self, output):
        self.output = output


def _row_keys(inputs: dict[str, torch.Tensor]) -> list[bytes]:
    """What determines a row's prefix output: its unpadded token ids (and token types, where given)."""
    mask = inputs["attention_mask"].bool()
    parts = [inputs["input_ids"]] + ([inputs["token_type_ids"]] if "token_type_ids" in inputs else [])
    return [b"".join(part[row][mask[row]].cpu().numpy().tobytes() for part in parts) for row in range(len(mask))]


class FrozenPrefix:
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
            keys = _row_keys(inputs)
            if all(key in self.kept for key in keys):
                mask = inputs["attention_mask"].bool()
                rows = torch.cat([self.kept[key] for key in keys])
                hidden = rows.new_zeros((*mask.shape, rows.shape[-1]))
                hidden[mask] = rows  # padded positions: zeros, which the upper layers' attention masks out
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
        from tqdm.auto import tqdm

        from .data.batching import BucketBatchSampler

        self.kept = {}
        features = [f for fs in feature_sets for f in fs]
        device = next(self.model.parameters()).device
        sampler = BucketBatchSampler([len(f["input_ids"]) for f in features], batch_size, shuffle=False)
        for indices in tqdm(sampler, desc="frozen layers", unit="batch", leave=False):
            batch = {k: v.to(device) for k, v in task.collate([features[i] for i in indices]).items()}
            hidden, mask = self._compute(batch), batch["attention_mask"].bool()
            for key, row in zip(_row_keys(batch), range(len(indices))):
                self.kept[key] = hidden[row][mask[row]].clone()

    def forget(self) -> None:
        self.kept = None

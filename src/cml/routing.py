"""Routing by language: one network, several parameter-efficient modules, a table from language to route.

A route is a tuple of adapter names applied together (``()`` is the previous model itself, ``("g2",)``
a group module, ``("shared", "g2")`` a group module stacked on a shared one). A batch may mix
languages: :class:`RoutedModel` splits it by route, runs each part with its modules, and reassembles
the outputs in order, in training (so gradients reach only the modules a row used) and in inference.

PEFT's own ``set_adapter``/``enable_adapters`` also flip ``requires_grad`` on every adapter, which would
undo the training set-up at each switch, so the active adapters are set on the tuner layers directly.

Serving one route alone (a stream of one language), :meth:`RoutedModel.merge` folds its LoRA weights into the
base weights, so each forward costs what the previous model's does. Any other route, and training, first put
the base weights back from a copy, bit for bit: PEFT's ``unmerge`` subtracts the update again, which leaves
rounding in the weights every other route shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.modeling_outputs import ModelOutput

Route = tuple[str, ...]
BASE: Route = ()


class RoutedModel(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, languages: Sequence[str], routes: dict[str, Route] | None = None):
        super().__init__()
        self.model = model
        self.languages = list(languages)
        self.routes: dict[str, Route] = dict(routes or {})
        self._tuners: tuple[int, list, list] | None = None
        self.merged_route: Route = BASE
        self._unmerged_weights: list[tuple[torch.nn.Module, torch.Tensor]] = []

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def route_of(self, lang: str) -> Route:
        return self.routes.get(lang, BASE)

    def modules_changed(self) -> None:
        """Call after adding adapters: the tuner layers are found again at the next switch."""
        self._tuners = None

    def _tuner_modules(self):
        # Walking the module tree at every switch cost 7-15 ms with 50 adapters (2,142 modules), about half
        # of routed inference on mixed batches: the layers are found once per model and adapter set.
        if self._tuners is None or self._tuners[0] != id(self.model):
            from peft.tuners.tuners_utils import BaseTunerLayer
            from peft.utils.other import AuxiliaryTrainingWrapper

            modules = list(self.model.modules())
            self._tuners = (id(self.model), [m for m in modules if isinstance(m, BaseTunerLayer)],
                            [m for m in modules if isinstance(m, AuxiliaryTrainingWrapper)])
        return self._tuners[1], self._tuners[2]

    def merge(self, route: Route) -> None:
        """Activate ``route`` with its LoRA weights folded into the base weights (inference only)."""
        if self.training:
            raise RuntimeError("merging LoRA weights is for inference: call .eval() first")
        self.activate(route)
        if not route or route == self.merged_route:
            return
        layers = [layer for layer in self._tuner_modules()[0]
                  if any(name in getattr(layer, "lora_A", {}) for name in route)]
        self._unmerged_weights = [(layer, layer.get_base_layer().weight.detach().clone()) for layer in layers]
        for layer in layers:
            layer.merge(adapter_names=[name for name in route if name in layer.lora_A])
        self.merged_route = route

    def _unmerge(self) -> None:
        with torch.no_grad():
            for layer, weight in self._unmerged_weights:
                layer.get_base_layer().weight.copy_(weight)
                layer.merged_adapters.clear()
        self.merged_route, self._unmerged_weights = BASE, []

    def train(self, mode: bool = True):
        if mode and self.merged_route:
            self._unmerge()
        return super().train(mode)

    def activate(self, route: Route) -> None:
        if self.merged_route and route != self.merged_route:
            self._unmerge()
        layers, heads = self._tuner_modules()
        for layer in layers:
            layer._disable_adapters = not route
            if route:
                layer._active_adapter = list(route)
        for head in heads:
            # A head copy belongs to one module: the most specific module of the route that has one.
            own = [name for name in route if name in getattr(head, "modules_to_save", {})]
            head._disable_adapters = not own
            if own:
                head._active_adapter = [own[-1]]

    def _groups(self, lang_ids: torch.Tensor) -> dict[Route, torch.Tensor]:
        rows: dict[Route, list[int]] = {}
        for row, lang_id in enumerate(lang_ids.tolist()):
            rows.setdefault(self.route_of(self.languages[lang_id]), []).append(row)
        return {route: torch.tensor(idx, device=lang_ids.device) for route, idx in rows.items()}

    def forward(self, lang_ids: torch.Tensor | None = None, **batch):
        groups = self._groups(lang_ids) if lang_ids is not None else {BASE: None}
        if len(groups) == 1:
            self.activate(next(iter(groups)))
            return self.model(**batch)
        size = len(lang_ids)
        logits, loss, weight = None, 0.0, 0
        for route, rows in groups.items():
            self.activate(route)
            output = self.model(**{k: v[rows] for k, v in batch.items()})
            if logits is None:
                logits = output.logits.new_empty((size, *output.logits.shape[1:]))
            logits[rows] = output.logits
            if output.loss is not None:
                # HF losses are means over labelled items/tokens: re-weight to the mean over the whole batch.
                n = int((batch["labels"][rows] != -100).sum())
                loss, weight = loss + output.loss * n, weight + n
        return ModelOutput(loss=loss / weight if weight else None, logits=logits)

    @torch.no_grad()
    def generate(self, lang_ids: torch.Tensor | None = None, **kwargs):
        groups = self._groups(lang_ids) if lang_ids is not None else {BASE: None}
        if len(groups) == 1:
            self.activate(next(iter(groups)))
            return self.model.generate(**kwargs)
        parts = {}
        for route, rows in groups.items():
            self.activate(route)
            parts[route] = (rows, self.model.generate(**{k: v[rows] for k, v in kwargs.items()
                                                         if torch.is_tensor(v)},
                                                      **{k: v for k, v in kwargs.items() if not torch.is_tensor(v)}))
        width = max(out.shape[1] for _, out in parts.values())
        pad = self.model.config.pad_token_id or 0
        sequences = torch.full((len(lang_ids), width), pad, dtype=torch.long, device=lang_ids.device)
        for rows, out in parts.values():
            sequences[rows, : out.shape[1]] = out
        return sequences

"""Routing by language: one network, several parameter-efficient modules, a table from language to route.

A route is a tuple of adapter names applied together (``()`` is the previous model itself, ``("g2",)``
a group module, ``("shared", "g2")`` a group module stacked on a shared one). A batch may mix
languages: :class:`RoutedModel` runs it once, every layer's base weights on all rows and each module's LoRA
product on its route's rows only (so gradients reach only the modules a row used), in training and in inference.
A batch is split by route instead, each part run with its modules and the outputs reassembled in order, where a
route stacks two modules (their products in one layer), a tuner layer is not a plain LoRA Linear, or a layer sees
more than the batch's rows (DeBERTa's relative positions); seq2seq generation also runs route by route.

PEFT's own ``set_adapter``/``enable_adapters`` also flip ``requires_grad`` on every adapter, which would
undo the training set-up at each switch, so the active adapters are set on the tuner layers directly.

In inference a batch that one route serves alone (evaluation batches hold one language each) runs with that
route's LoRA weights folded into the base weights (:meth:`RoutedModel.merge`), so each forward costs what the
previous model's does; its logits equal the unmerged ones to float rounding (1e-5). Any other route, training,
and storing the weights (``state_dict``) first put the base weights back from a copy, bit for bit: PEFT's
``unmerge`` subtracts the update again, which leaves rounding in the weights every other route shares.

The layers below the lowest adapted one are the same for every route: a mixed batch runs them once
(:mod:`cml.prefix`), and within :meth:`RoutedModel.kept_prefix` training runs only the adapted layers on the
prefix's kept outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from transformers.modeling_outputs import ModelOutput

from .prefix import FrozenPrefix
from .tasks.base import IGNORE

Route = tuple[str, ...]
BASE: Route = ()


def route_name(route: Sequence[str], base: str = "previous") -> str:
    """A route as one word: its modules joined by ``+`` (``shared+g2``), or ``base`` for the network without
    modules. Run records call that network ``previous`` (the model the stage updated), releases ``base``."""
    return "+".join(route) or base


def parse_route(name: str, base: str = "previous") -> Route:
    """The route that :func:`route_name` named ``name``, given the same ``base``."""
    return BASE if name == base else tuple(name.split("+"))


class _NotRowWise(Exception):
    """Raised within a one-pass forward by a layer whose input is not the batch's rows alone."""


class RoutedModel(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, languages: Sequence[str], routes: dict[str, Route] | None = None):
        super().__init__()
        self.model = model
        self.languages = list(languages)
        self.routes: dict[str, Route] = dict(routes or {})
        self._tuners: tuple[int, list, list] | None = None
        self.merged_route: Route = BASE
        self._unmerged_weights: list[tuple[torch.nn.Module, torch.Tensor]] = []
        self._prefix: tuple[int, FrozenPrefix | None] | None = None
        self._split_only: int | None = None  # the id of a model whose mixed batches cannot run in one pass

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def route_of(self, lang: str) -> Route:
        return self.routes.get(lang, BASE)

    def modules_changed(self) -> None:
        """Call after adding adapters: the tuner layers (and the frozen prefix) are found again when next used."""
        self._tuners = None
        self._prefix = None

    @property
    def frozen_prefix(self) -> FrozenPrefix | None:
        if self._prefix is None or self._prefix[0] != id(self.model):
            self._prefix = (id(self.model), FrozenPrefix.of(self.model))
        return self._prefix[1]

    @contextmanager
    def kept_prefix(self, task, feature_sets, batch_size: int):
        """Within the block, the frozen prefix's outputs of ``feature_sets`` are computed once and reused, and
        training runs only the layers above it (dropout off in the prefix). A no-op for a model without one."""
        prefix = self.frozen_prefix
        if prefix is None or not prefix.frozen():
            yield
            return
        try:
            prefix.keep(task, feature_sets, batch_size)
            yield
        finally:
            prefix.forget()

    def _shared_prefix(self, n_routes: int) -> FrozenPrefix | None:
        """The prefix to run once for this batch: in training only on kept outputs (the semantics differ: no
        dropout below), in evaluation whenever routes mix or outputs are kept."""
        prefix = self.frozen_prefix
        if prefix is None:
            return None
        if self.training:
            return prefix if prefix.kept is not None and prefix.frozen() else None
        return prefix if n_routes > 1 or prefix.kept is not None else None

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
        self.merged_route = route  # before merging: a merge that fails half-way is undone like a whole one
        try:
            for layer in layers:
                layer.merge(adapter_names=[name for name in route if name in layer.lora_A])
        except BaseException:
            self.unmerge()
            raise

    def unmerge(self) -> None:
        """Put the base weights back, bit for bit, if a route is merged into them."""
        with torch.no_grad():
            for layer, weight in self._unmerged_weights:
                layer.get_base_layer().weight.copy_(weight)
                layer.merged_adapters.clear()
        self.merged_route, self._unmerged_weights = BASE, []

    def state_dict(self, *args, **kwargs):
        self.unmerge()  # a stored model never holds a route's merged weights
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self.unmerge()  # the loaded weights replace the base: a merged route's copy of it would be stale
        return super().load_state_dict(*args, **kwargs)

    def train(self, mode: bool = True):
        if mode and self.merged_route:
            self.unmerge()
        return super().train(mode)

    def serve(self, route: Route) -> None:
        """Activate ``route`` for a batch it serves alone: in inference with its LoRA weights merged (a forward
        then costs what the previous model's does; logits equal the unmerged ones to float rounding), in
        training, or wherever gradients are computed, beside the base weights."""
        if self.training or torch.is_grad_enabled():  # merged LoRA weights would get no gradient
            self.activate(route)
        else:
            self.merge(route)

    def activate(self, route: Route) -> None:
        if self.merged_route and route != self.merged_route:
            self.unmerge()
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
        prefix = self._shared_prefix(len(groups)) if "attention_mask" in batch else None
        if prefix is not None:
            hidden = prefix.lower(batch)
            if len(groups) == 1:
                self.serve(next(iter(groups)))
                return prefix.upper(hidden, batch)
        elif len(groups) == 1:
            self.serve(next(iter(groups)))
            return self.model(**batch)
        if self._one_pass_supported(groups):
            try:
                return self._one_pass(groups, batch, hidden if prefix is not None else None, prefix)
            except _NotRowWise:  # a layer saw something other than the batch's rows: run the routes apart, from now on
                self._split_only = id(self.model)
        size = len(lang_ids)
        logits, loss, weight = None, 0.0, 0
        for route, rows in groups.items():
            self.activate(route)
            part = {k: v[rows] for k, v in batch.items()}
            output = prefix.upper(hidden[rows], part) if prefix is not None else self.model(**part)
            if logits is None:
                logits = output.logits.new_empty((size, *output.logits.shape[1:]))
            logits[rows] = output.logits
            if output.loss is not None:
                # HF losses are means over labelled items/tokens: re-weight to the mean over the whole batch.
                n = int((batch["labels"][rows] != IGNORE).sum())
                loss, weight = loss + output.loss * n, weight + n
        return ModelOutput(loss=loss / weight if weight else None, logits=logits)

    def _one_pass_supported(self, groups: dict[Route, torch.Tensor]) -> bool:
        """Whether one forward can serve every route of the batch: each route holds at most one module (a
        stacked route would add two modules' products in one layer), and every tuner layer is a plain LoRA
        Linear, every head copy a module-to-save (and, found on the first try, each layer sees only the batch's
        rows)."""
        from peft.tuners.lora import Linear
        from peft.utils.other import ModulesToSaveWrapper

        if any(len(route) > 1 for route in groups) or self._split_only == id(self.model):
            return False
        layers, heads = self._tuner_modules()
        return (all(type(layer) is Linear and not layer.lora_variant for layer in layers)
                and all(isinstance(head, ModulesToSaveWrapper) for head in heads))

    def _one_pass(self, groups: dict[Route, torch.Tensor], batch: dict, hidden: torch.Tensor | None,
                  prefix: FrozenPrefix | None) -> ModelOutput:
        """One forward for a batch that mixes routes: its rows sorted by route, every layer runs its base weights
        on all of them, and each module adds its LoRA product (its head copy, its output) on its route's rows.

        The computation of running each route's rows apart, with the shared part in one matrix product per layer
        instead of one per route. PEFT's mixed adapter batches do this for inference only, one gather and
        scatter per module and route, in the order of a set of names (so their dropout draws would differ between
        processes); here the rows are sorted once per batch and each layer splits them into contiguous parts. In
        training the dropout masks are other draws than those of routes run apart (the same distribution,
        deterministic); without dropout the logits equal those to float rounding (tests/test_speed.py)."""
        routes = sorted(groups)
        order = torch.cat([groups[route] for route in routes])
        sizes = [len(groups[route]) for route in routes]
        names = [route[0] if route else None for route in routes]
        layers, heads = self._tuner_modules()

        def rows_of(args, kwargs):
            # A layer may also be called on something other than the batch's rows (DeBERTa runs its query and key
            # projections on the relative-position table too), and a head with more than its input: such a
            # call cannot be split by route.
            if len(args) != 1 or kwargs or args[0].shape[0] != len(order):
                raise _NotRowWise
            return args[0].split(sizes)

        def add_lora_products(layer, args, kwargs, output):
            products = []
            for name, part in zip(names, rows_of(args, kwargs)):
                if name is not None and name in layer.lora_A:
                    lora_a = layer.lora_A[name]
                    product = layer.lora_B[name](lora_a(layer.lora_dropout[name](part.to(lora_a.weight.dtype))))
                    products.append((product * layer.scaling[name]).to(output.dtype))
                else:
                    products.append(output.new_zeros((len(part), *output.shape[1:])))
            return output + torch.cat(products)

        def head_copies(head, args, kwargs, output):
            return torch.cat([head.modules_to_save[name](part).to(output.dtype)
                              if name is not None and name in head.modules_to_save else base
                              for name, part, base in zip(names, rows_of(args, kwargs), output.split(sizes))])

        self.unmerge()
        hooks = [layer.register_forward_hook(add_lora_products, with_kwargs=True) for layer in layers]
        hooks += [head.register_forward_hook(head_copies, with_kwargs=True) for head in heads]
        states = [(module, module._disable_adapters) for module in [*layers, *heads]]
        for module, _ in states:
            module._disable_adapters = True  # each layer computes its base alone; the hooks add the modules
        try:
            sorted_batch = {k: v[order] for k, v in batch.items()}
            output = (prefix.upper(hidden[order], sorted_batch) if prefix is not None
                      else self.model(**sorted_batch))
        finally:
            for hook in hooks:
                hook.remove()
            for module, disabled in states:
                module._disable_adapters = disabled
        return ModelOutput(loss=output.loss, logits=output.logits[torch.argsort(order)])

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

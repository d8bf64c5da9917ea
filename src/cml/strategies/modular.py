"""Modular updates: LoRA modules (Hugging Face PEFT) on the frozen previous model, one per group of
languages, with routing by language and an optional validation gate.

The four modular methods differ only in how languages are grouped (``assign_groups``):
``lora_shared`` (one group), ``lora_per_language`` (one group per language), ``laft_uriel`` (URIEL
typology clusters) and ``laft_random`` (random groups of the same sizes). Modules persist across stages:
a later stage continues the modules of the groups that get data and adds modules for new groups.

Routes after a stage, per language: its own group's module if that group has one; else the nearest
trained group within ``route_to_nearest`` (URIEL distance); else the shared module if ``hierarchical``;
else the previous model. With the gate, each language takes whichever of these candidates has the best
dev score (ties keep the more conservative route, the previous model first); with ``gate_confidence`` a
route must also beat the previous model significantly on dev (a one-sided paired bootstrap).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from contextlib import nullcontext

import torch

from ..bootstrap import delta_interval, language_seed
from ..data.examples import stable_hash
from ..errors import CMLError
from ..evaluation.inference import evaluate_languages
from ..routing import BASE, Route, RoutedModel
from ..training.trainer import train
from ..typology.grouping import mean_distances, nearest
from .base import Strategy, StageContext

log = logging.getLogger("cml.strategies")
SHARED = "shared"
NEW_LANGUAGE_MAX_DISTANCE = 0.5
"""How far (mean URIEL+ distance to a group's members) a language the model never saw (``cml predict``) may be
from the nearest trained group to be served by its module, where ``route_to_nearest`` is unset; further, it
gets the shared module or the previous model. On the combined URIEL+ scale close relatives measure 0.09-0.38
and languages of other branches or families from about 0.46 (:mod:`cml.evaluation.cml_metrics`)."""


def route_name(route: Route) -> str:
    return "+".join(route) if route else "previous"


class ModularStrategy(Strategy):
    uses_typology = True

    def __init__(self, config):
        super().__init__(config)
        self.groups: dict[str, str] | None = None  # language -> group name
        self.typology = None
        self.trained_modules_cache: list[str] = []

    # -- grouping -------------------------------------------------------------------------------------
    def assign_groups(self, languages: list[str]) -> dict[str, str]:
        raise NotImplementedError

    def group_of_new_language(self, lang: str, languages: list[str]) -> str:
        """The group of a language that arrives after the groups were made (a release updated with a language
        its parent did not serve): that of its typologically nearest grouped language; its own group where
        typology cannot place it."""
        grouped = [other for other in languages if other in self.groups]
        try:
            matrix = self._distances(languages)
            nearest = min(grouped, key=lambda other: (matrix.distance(lang, other), other))
        except (CMLError, ValueError):  # not placed in the typology, or no grouped language
            return lang
        return self.groups[nearest]

    def _distances(self, languages: list[str]):
        if self.typology is None:
            from ..typology.uriel import typology_matrix

            kinds = tuple(self.config.kinds) if self.config.kinds else None
            self.typology = typology_matrix(languages, **({"kinds": kinds} if kinds else {}))
        return self.typology

    def members(self, groups: Sequence[str], lang: str) -> dict[str, list[str]]:
        """{group: its languages but ``lang``}, for each of ``groups``."""
        return {group: [other for other, its in self.groups.items() if its == group and other != lang]
                for group in groups}

    # -- structure ------------------------------------------------------------------------------------
    def ensure_modules(self, model: RoutedModel, names: list[str], task, seed: int) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        for name in names:
            # PEFT draws lora_A from the global generator: seed it per module, so a module's start does not
            # depend on what ran before it (other strategies in the run, their order).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stable_hash(seed, name) % 2**63)
                if not isinstance(model.model, PeftModel):
                    # Targets are found on the plain model: PEFT replaces the Linear layers it wraps.
                    options = self.config.lora
                    heads = head_modules(model.model, task) if options.train_head else []
                    targets = target_modules(model.model, options.target_modules, options.layers, heads)
                    self.lora_config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                                                  target_modules=targets, modules_to_save=heads or None)
                    model.model = get_peft_model(model.model, self.lora_config, adapter_name=name)
                elif name not in model.model.peft_config:
                    if not hasattr(self, "lora_config"):  # modules loaded from a release: new ones alike
                        self.lora_config = copy.copy(next(iter(model.model.peft_config.values())))
                        self.lora_config.inference_mode = False
                    model.model.add_adapter(name, self.lora_config)
        model.modules_changed()

    def trained_modules(self, model: RoutedModel) -> list[str]:
        from peft import PeftModel

        return sorted(model.model.peft_config) if isinstance(model.model, PeftModel) else []

    def _own_route(self, lang: str, modules: list[str]) -> Route | None:
        group = self.groups.get(lang)
        if group not in modules:
            return None
        return (SHARED, group) if self.config.hierarchical else (group,)

    def _nearest_route(self, lang: str, modules: list[str]) -> tuple[Route | None, float | None]:
        groups = [m for m in modules if m != SHARED and m != self.groups.get(lang)]
        if not groups or self.typology is None:
            return None, None
        distances = mean_distances(lambda other: self.typology.distance(lang, other), self.members(groups, lang))
        if not distances:
            return None, None
        group = nearest(distances)
        return (SHARED, group) if self.config.hierarchical else (group,), distances[group]

    def candidates(self, lang: str, modules: list[str]) -> dict[str, Route]:
        """The routes a language may take, most conservative first."""
        out: dict[str, Route] = {"previous": BASE}
        if self.config.hierarchical and SHARED in modules:
            out["shared"] = (SHARED,)
        nearest, distance = self._nearest_route(lang, modules)
        if nearest is not None and (self.config.gated or (self.config.route_to_nearest is not None
                                                          and distance <= self.config.route_to_nearest)):
            out["nearest"] = nearest
        own = self._own_route(lang, modules)
        if own is not None:
            out["own"] = own
        return out

    def default_route(self, lang: str, modules: list[str]) -> Route:
        options = self.candidates(lang, modules)
        for kind in ("own", "nearest", "shared"):
            if kind in options:
                return options[kind]
        return BASE

    # -- the update -----------------------------------------------------------------------------------
    def update(self, model: RoutedModel, ctx: StageContext):
        if self.groups is None:
            self.groups = self.assign_groups(ctx.languages)
        for lang in [lang for lang in ctx.languages if lang not in self.groups]:
            self.groups[lang] = self.group_of_new_language(lang, ctx.languages)
        stage_groups = sorted({self.groups[lang] for lang in ctx.stage.languages})
        training_modules = ([SHARED] if self.config.hierarchical else []) + stage_groups
        self.ensure_modules(model, training_modules, ctx.task, ctx.seed)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(any(f".{module}." in name for module in training_modules))
        model.routes = {lang: self._own_route(lang, training_modules) for lang in ctx.stage.languages}
        training = self.training_config(ctx)
        # the model may still be on the CPU (loaded from a release or a saved stage): its kept outputs belong
        # where training will run
        model.to(ctx.accelerator.device)
        gate_inputs = [features for _, features in ctx.dev.values()] if self.config.gated else []
        keeping = self.config.lora.cache_frozen_layers
        with model.kept_prefix(ctx.task, [ctx.train_features, *gate_inputs], training.eval_batch_size) \
                if keeping else nullcontext():
            result = train(model, ctx.task, ctx.train_features, training, accelerator=ctx.accelerator,
                           seed=ctx.seed, checkpoint_dir=ctx.checkpoint_dir, resume=ctx.resume,
                           description=f"{self.name}/{ctx.stage.name}", tracking=ctx.tracking)
            model = ctx.accelerator.unwrap_model(model)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            self.trained_modules_cache = self.trained_modules(model)
            record = {"train": result.to_json(), "groups": self.groups, "modules": self.trained_modules_cache,
                      "stage_groups": stage_groups}
            model.routes, record["gate"] = self.choose_routes(model, ctx)
        record["routes"] = {lang: route_name(route) for lang, route in sorted(model.routes.items())}
        return model, record

    def choose_routes(self, model: RoutedModel, ctx: StageContext) -> tuple[dict[str, Route], dict]:
        modules = self.trained_modules(model)
        if not self.config.gated:
            return {lang: self.default_route(lang, modules) for lang in ctx.languages}, {}
        options = {lang: self.candidates(lang, modules) for lang in ctx.languages}
        scores: dict[str, dict[str, float]] = {lang: {} for lang in ctx.languages}
        items: dict[str, dict[str, list[float]]] = {lang: {} for lang in ctx.languages}
        for kind in ("previous", "shared", "nearest", "own"):
            langs = [lang for lang in ctx.languages if kind in options[lang]]
            if not langs:
                continue
            model.routes = {lang: options[lang][kind] for lang in langs}
            results = evaluate_languages(model, ctx.task, {lang: ctx.dev[lang] for lang in langs},
                                         ctx.training.eval_batch_size)
            for lang in langs:
                metrics, predictions = results[lang]
                scores[lang][kind] = metrics[ctx.task.primary_metric]
                items[lang][kind] = ctx.task.item_scores(ctx.dev[lang][0], predictions)
        routes, gate = {}, {}
        for lang in ctx.languages:
            best, gain_low = gate_choice(scores[lang], items[lang], self.config.gate_confidence,
                                         seed=language_seed(ctx.seed, lang))
            routes[lang] = options[lang][best]
            gate[lang] = {"choice": best, "route": route_name(routes[lang]),
                          "dev": {f"{kind}:{route_name(options[lang][kind])}": s for kind, s in scores[lang].items()}}
            if gain_low:
                gate[lang]["dev_gain_low"] = gain_low
        return routes, gate

    def restore(self, model: RoutedModel, record: dict, ctx: StageContext) -> RoutedModel:
        self.groups = record["groups"]
        if self.uses_typology:
            self._distances(ctx.languages)
        self.ensure_modules(model, record["modules"], ctx.task, ctx.seed)
        self.trained_modules_cache = list(record["modules"])
        names = {"previous": BASE}
        model.routes = {lang: tuple(name.split("+")) if name not in names else names[name]
                        for lang, name in record["routes"].items()}
        return model

    def route_for_new_language(self, lang: str, languages: list[str]) -> Route:
        """The nearest trained group by mean URIEL distance to its members, within ``route_to_nearest``
        (default :data:`NEW_LANGUAGE_MAX_DISTANCE`); else the shared module when hierarchical; else the previous
        model."""
        from ..typology import DEFAULT_KINDS
        from ..typology.uriel import distances_to

        modules = [m for m in self.trained_modules_cache if m != SHARED]
        distances = distances_to(lang, languages, self.config.kinds or DEFAULT_KINDS, None)
        by_group = mean_distances(lambda other: distances[languages.index(other)], self.members(modules, lang))
        limit = self.config.route_to_nearest if self.config.route_to_nearest is not None else NEW_LANGUAGE_MAX_DISTANCE
        if by_group:
            group = nearest(by_group)
            if by_group[group] <= limit:
                return (SHARED, group) if self.config.hierarchical else (group,)
        return (SHARED,) if self.config.hierarchical and SHARED in self.trained_modules_cache else BASE

    def saved_state(self, model, frozen):
        return {k: v for k, v in model.state_dict().items() if "lora_" in k or "modules_to_save" in k}


def gate_choice(scores: dict[str, float], items: dict[str, Sequence[float]], confidence: float | None,
                seed: Sequence[int] = (0,)) -> tuple[str, dict[str, float]]:
    """The gate's pick among a language's candidate routes, given their dev ``scores`` (primary metric) and
    per-item dev scores, in ``scores``' order (most conservative first, ``previous`` first): the best score,
    the first on ties. With ``confidence``, only routes whose gain over ``previous`` has a one-sided
    paired-bootstrap lower bound above 0 at that confidence compete with it. Also returns those lower bounds.

    Why the test: on dev sets of 70-100 items one item is 1-1.4 points, and a plain argmax left the previous
    model on gains that reversed on test (docs/method.md, "The gate").
    """
    eligible = dict(scores)
    lower_bounds = {}
    if confidence is not None:
        for kind in scores:
            if kind == "previous":
                continue
            # a two-sided interval at 2c - 1 has its lower end at the one-sided bound of confidence c
            lower_bounds[kind], _ = delta_interval(scores["previous"], scores[kind], items["previous"], items[kind],
                                                   seed=seed, confidence=2 * confidence - 1)
            if lower_bounds[kind] <= 0:
                del eligible[kind]
    return max(eligible, key=lambda kind: eligible[kind]), lower_bounds


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


def target_modules(model: torch.nn.Module, suffixes, layers: list[int] | None, heads: list[str]) -> list[str]:
    """Full names of the linear layers that get LoRA: matching suffixes, inside the chosen encoder layers,
    outside the head. Listing full names lets ``layers`` work for any architecture."""
    import re

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

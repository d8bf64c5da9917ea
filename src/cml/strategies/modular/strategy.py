"""The modular strategy itself: an update trains the modules of the groups with data, then routes every language
(:mod:`.routes`, :mod:`.gate`); a saved stage's record or a release's state restores the same structure."""

from __future__ import annotations

from contextlib import nullcontext

from ...config import ModularConfig
from ...routing import Route, RoutedModel, parse_route, route_name
from ...training.trainer import train
from ...typology.uriel import TypologyMatrix
from ..base import StageContext, Strategy
from .gate import gated_routes
from .groups import distances_from, group_of_nearest_language, load_typology
from .modules import add_modules, module_state, train_only, trained_modules
from .routes import SHARED, Router


class ModularStrategy(Strategy):
    """A modular method is this class and its grouping (:meth:`assign_groups`)."""

    uses_typology = True

    def __init__(self, config: ModularConfig):
        super().__init__(config)
        self.groups: dict[str, str] | None = None  # language -> group, made at the first update
        self.typology: TypologyMatrix | None = None  # between the languages, loaded by the first update
        # The modules of the deployed model (after the last update or restore): what a new language may borrow.
        self.deployed_modules: list[str] = []

    # -- grouping -------------------------------------------------------------------------------------
    def assign_groups(self, languages: list[str], typology: TypologyMatrix | None = None) -> dict[str, str]:
        """{language: group} for ``languages``. ``typology`` is the distances between them, which a strategy that
        groups by typology loads itself when not given."""
        raise NotImplementedError

    def group_of_new_language(self, lang: str, languages: list[str]) -> str:
        """The group of a language that arrives after the groups were made (a release updated with a language
        its parent did not serve): that of its typologically nearest grouped language; its own group where
        typology cannot place it."""
        return group_of_nearest_language(lang, languages, self.groups, self.typology) or lang

    # -- structure and routes (benchmarks/scale.py also builds a routed model with these alone) ---------
    def ensure_modules(self, model: RoutedModel, names: list[str], task, seed: int) -> None:
        add_modules(model, names, self.config.lora, task, seed)

    trained_modules = staticmethod(trained_modules)

    def router(self) -> Router:
        return Router(self.groups, self.typology, hierarchical=self.config.hierarchical, gated=self.config.gated,
                      route_to_nearest=self.config.route_to_nearest, borrowed_routes=self.config.borrowed_routes)

    def default_route(self, lang: str, modules: list[str]) -> Route:
        return self.router().default(lang, modules)

    # -- the update -----------------------------------------------------------------------------------
    def update(self, model: RoutedModel, ctx: StageContext):
        if self.typology is None and self.uses_typology:
            self.typology = load_typology(ctx.languages, self.config.kinds)
        if self.groups is None:
            self.groups = self.assign_groups(ctx.languages, self.typology)
        for lang in [lang for lang in ctx.languages if lang not in self.groups]:
            self.groups[lang] = self.group_of_new_language(lang, ctx.languages)
        languages, train_features, extra = self.training_data(ctx)
        stage_groups = sorted({self.groups[lang] for lang in languages})
        training_modules = ([SHARED] if self.config.hierarchical else []) + stage_groups
        self.ensure_modules(model, training_modules, ctx.task, ctx.seed)
        train_only(model, training_modules)
        router = self.router()
        model.routes = {lang: router.through(self.groups[lang]) for lang in languages}
        training = self.training_config(ctx)
        # the model may still be on the CPU (loaded from a release or a saved stage): its kept outputs belong
        # where training will run
        model.to(ctx.accelerator.device)
        gate_inputs = [features for _, features in ctx.dev.values()] if self.config.gated else []
        keeping = self.config.lora.cache_frozen_layers
        with model.kept_prefix(ctx.task, [train_features, *gate_inputs], training.eval_batch_size) \
                if keeping else nullcontext():
            by_route = ([route_name(model.routes[f["lang"]]) for f in train_features]
                        if self.config.batches_by_route else None)
            result = train(model, ctx.task, train_features, training, accelerator=ctx.accelerator,
                           seed=ctx.seed, checkpoint_dir=ctx.checkpoint_dir, resume=ctx.resume,
                           description=f"{self.name}/{ctx.stage.name}", tracking=ctx.tracking, batch_groups=by_route)
            model = ctx.accelerator.unwrap_model(model)
            train_only(model, [])
            self.deployed_modules = trained_modules(model)
            record = {"train": result.to_json(), "groups": self.groups, "modules": self.deployed_modules,
                      "stage_groups": stage_groups, **extra}
            model.routes, record["gate"] = self.choose_routes(model, self.deployed_modules, ctx)
        record["routes"] = {lang: route_name(route) for lang, route in sorted(model.routes.items())}
        return model, record

    def training_data(self, ctx: StageContext) -> tuple[list[str], list[dict], dict]:
        """The languages whose groups' modules train, their training features, and what the stage's record adds:
        the stage's new data alone here."""
        return ctx.stage.languages, ctx.train_features, {}

    def choose_routes(self, model: RoutedModel, modules: list[str], ctx: StageContext
                      ) -> tuple[dict[str, Route], dict[str, dict]]:
        """Every language's route once the model has ``modules``, and the gate's record ({} without a gate)."""
        router = self.router()
        if not self.config.gated:
            return {lang: router.default(lang, modules) for lang in ctx.languages}, {}
        candidates = {lang: router.candidates(lang, modules) for lang in ctx.languages}
        return gated_routes(model, candidates, ctx, self.config.gate_confidence)

    def restore(self, model: RoutedModel, record: dict, ctx: StageContext) -> RoutedModel:
        """The structure of a finished stage from its record (groups, modules, routes named by
        :func:`~cml.routing.route_name`); a release's :class:`~cml.release.manifest.ModularState` has the same keys."""
        self.groups = record["groups"]
        self.ensure_modules(model, record["modules"], ctx.task, ctx.seed)
        self.deployed_modules = list(record["modules"])
        model.routes = {lang: parse_route(name) for lang, name in record["routes"].items()}
        return model

    def route_for_new_language(self, lang: str, languages: list[str]) -> Route:
        return self.router().for_new_language(lang, self.deployed_modules,
                                              distances_from(lang, languages, self.config.kinds))

    def saved_state(self, model, frozen):
        return module_state(model)

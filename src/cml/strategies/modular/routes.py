"""Where a language may be routed once some group modules are trained.

After an update, a language's candidates are, most conservative first: the previous model; the shared module
(``hierarchical``); the nearest trained group other than its own, by mean URIEL distance to the group's members
(within ``route_to_nearest``, or at any distance when the gate judges it on dev); its own group's module. The
shared and nearest candidates are borrowed (modules of a group other than the language's own);
``borrowed_routes: false`` leaves a language its own group's module or the previous model. Without the gate the
most specific candidate serves. A language the model never saw (``cml predict``) goes to the
nearest trained group within ``route_to_nearest`` (default :data:`NEW_LANGUAGE_MAX_DISTANCE`), else the shared
module, else the previous model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from ...routing import BASE, Route
from ...typology.grouping import mean_distances, nearest
from .groups import LanguageDistances, group_members

SHARED = "shared"
"""The module every language's route may start with (``hierarchical``), trained on all update data."""

CandidateKind = Literal["previous", "shared", "nearest", "own"]
CANDIDATE_KINDS: tuple[CandidateKind, ...] = ("previous", "shared", "nearest", "own")
"""Most conservative first: the order of a language's candidates, in which the gate scores them and keeps the
earlier on a tie."""

NEW_LANGUAGE_MAX_DISTANCE = 0.5
"""How far (mean URIEL+ distance to a group's members) a language the model never saw (``cml predict``) may be
from the nearest trained group to be served by its module, where ``route_to_nearest`` is unset; further, it
gets the shared module or the previous model. On the combined URIEL+ scale close relatives measure 0.09-0.38
and languages of other branches or families from about 0.46 (:mod:`cml.evaluation.cml_metrics`)."""


@dataclass(frozen=True)
class Router:
    """The routing rules over ``groups`` (language -> group). ``typology`` places a language near other groups
    (None: a language never borrows another group's module after an update); the rest are the strategy's
    options of the same names."""

    groups: Mapping[str, str]
    typology: LanguageDistances | None
    hierarchical: bool = False
    gated: bool = False
    route_to_nearest: float | None = None
    borrowed_routes: bool = True

    def through(self, group: str) -> Route:
        """The route that serves with ``group``'s module (on the shared module when hierarchical)."""
        return (SHARED, group) if self.hierarchical else (group,)

    def own(self, lang: str, modules: Sequence[str]) -> Route | None:
        group = self.groups.get(lang)
        return self.through(group) if group in modules else None

    def shared(self, modules: Sequence[str]) -> Route | None:
        return (SHARED,) if self.hierarchical and SHARED in modules else None

    def nearest(self, lang: str, modules: Sequence[str],
                distance: Callable[[str], float]) -> tuple[Route, float] | None:
        """The route through the trained group, other than ``lang``'s own, whose members are nearest to ``lang`` on
        average (``distance(member)``; ties: the first group by name), and that mean distance."""
        others = [module for module in modules if module != SHARED and module != self.groups.get(lang)]
        by_group = mean_distances(distance, group_members(self.groups, others, lang))
        if not by_group:
            return None
        group = nearest(by_group)
        return self.through(group), by_group[group]

    def candidates(self, lang: str, modules: Sequence[str]) -> dict[CandidateKind, Route]:
        """The routes ``lang`` may take after an update that left the model with ``modules``, in
        :data:`CANDIDATE_KINDS` order."""
        out: dict[CandidateKind, Route] = {"previous": BASE}
        if self.borrowed_routes and (shared := self.shared(modules)) is not None:
            out["shared"] = shared
        borrowed = (self.nearest(lang, modules, partial(self.typology.distance, lang))
                    if self.typology is not None and self.borrowed_routes else None)
        if borrowed is not None and (self.gated or (self.route_to_nearest is not None
                                                    and borrowed[1] <= self.route_to_nearest)):
            out["nearest"] = borrowed[0]
        if (own := self.own(lang, modules)) is not None:
            out["own"] = own
        return out

    def default(self, lang: str, modules: Sequence[str]) -> Route:
        """The route without a gate: the most specific candidate."""
        candidates = self.candidates(lang, modules)
        return next(candidates[kind] for kind in reversed(CANDIDATE_KINDS) if kind in candidates)

    def for_new_language(self, lang: str, modules: Sequence[str], distance: Mapping[str, float]) -> Route:
        """The route of ``lang``, outside the groups, given its ``distance`` to each grouped language."""
        limit = self.route_to_nearest if self.route_to_nearest is not None else NEW_LANGUAGE_MAX_DISTANCE
        borrowed = self.nearest(lang, modules, distance.__getitem__)
        if borrowed is not None and borrowed[1] <= limit:
            return borrowed[0]
        return self.shared(modules) or BASE

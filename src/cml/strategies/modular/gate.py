"""The gate: after training, each language takes whichever of its candidate routes (:mod:`.routes`) scores best
on its dev set, ties keeping the more conservative route (the previous model first); with ``gate_confidence`` a
route must also beat the previous model significantly on dev (a one-sided paired bootstrap).

Its record, per language: the kind chosen, the route, every candidate's dev score under
:func:`gate_dev_key` (``own:g2``, ``previous:previous``), and with ``gate_confidence`` the lower bounds of the
gains (``dev_gain_low``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...bootstrap import delta_interval, language_seed
from ...evaluation.inference import evaluate_languages
from ...routing import Route, RoutedModel, parse_route, route_name
from ..base import StageContext
from .routes import CANDIDATE_KINDS, CandidateKind

Candidates = Mapping[str, Mapping[CandidateKind, Route]]
"""{language: {kind: route}}, each language's candidates in :data:`~.routes.CANDIDATE_KINDS` order."""


def gated_routes(model: RoutedModel, candidates: Candidates, ctx: StageContext,
                 confidence: float | None) -> tuple[dict[str, Route], dict[str, dict]]:
    """Each language's route as the gate picks it among its ``candidates`` on ``ctx.dev``, and the gate's record."""
    scores, items = score_candidates(model, candidates, ctx)
    routes, record = {}, {}
    for lang, options in candidates.items():
        choice, gain_low = gate_choice(scores[lang], items[lang], confidence, seed=language_seed(ctx.seed, lang))
        routes[lang] = options[choice]
        record[lang] = {"choice": choice, "route": route_name(routes[lang]),
                        "dev": {gate_dev_key(kind, options[kind]): score for kind, score in scores[lang].items()}}
        if gain_low:
            record[lang]["dev_gain_low"] = gain_low
    return routes, record


def score_candidates(model: RoutedModel, candidates: Candidates, ctx: StageContext
                     ) -> tuple[dict[str, dict[CandidateKind, float]], dict[str, dict[CandidateKind, list[float]]]]:
    """Each language's dev score (primary metric) on each of its candidates, and its per-item scores, both in
    :data:`~.routes.CANDIDATE_KINDS` order. One evaluation per kind serves every language that has it: the model
    routes each of them to its candidate of that kind at once."""
    scores: dict[str, dict[CandidateKind, float]] = {lang: {} for lang in candidates}
    items: dict[str, dict[CandidateKind, list[float]]] = {lang: {} for lang in candidates}
    for kind in CANDIDATE_KINDS:
        langs = [lang for lang, options in candidates.items() if kind in options]
        if not langs:
            continue
        model.routes = {lang: candidates[lang][kind] for lang in langs}
        results = evaluate_languages(model, ctx.task, {lang: ctx.dev[lang] for lang in langs},
                                     ctx.training.eval_batch_size)
        for lang in langs:
            metrics, predictions = results[lang]
            scores[lang][kind] = metrics[ctx.task.primary_metric]
            items[lang][kind] = ctx.task.item_scores(ctx.dev[lang][0], predictions)
    return scores, items


def gate_choice(scores: Mapping[str, float], items: Mapping[str, Sequence[float]], confidence: float | None,
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


def gate_dev_key(kind: str, route: Route) -> str:
    """The key of a candidate's dev score in the gate's record: ``<kind>:<route name>``."""
    return f"{kind}:{route_name(route)}"


def parse_gate_dev_key(key: str) -> tuple[str, Route]:
    """The candidate kind and route of a key :func:`gate_dev_key` made."""
    kind, name = key.split(":", 1)
    return kind, parse_route(name)

"""The language groups of a modular strategy, and the URIEL+ typology that places a language among them.

The typology is loaded once, by the strategy's first update, and handed to whatever reads it (grouping, the
route candidates); a language the model never saw gets its own row of distances instead (:func:`distances_from`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from ...errors import CMLError
from ...typology import DEFAULT_KINDS
from ...typology.uriel import TypologyMatrix, distances_to, typology_matrix


class LanguageDistances(Protocol):
    """What grouping and routing read of a typology: the distance between two languages (a
    :class:`~cml.typology.uriel.TypologyMatrix`, or a table in tests)."""

    def distance(self, a: str, b: str) -> float: ...


def load_typology(languages: Sequence[str], kinds: Sequence[str] | None) -> TypologyMatrix:
    """URIEL+ distances between ``languages`` over ``kinds`` (none given: the typology module's defaults)."""
    return typology_matrix(languages, _or_default(kinds))


def distances_from(lang: str, languages: Sequence[str], kinds: Sequence[str] | None) -> dict[str, float]:
    """{language: its URIEL+ distance to ``lang``} for ``languages``, where ``lang`` is outside the loaded typology
    (computed as one row, not cached)."""
    return dict(zip(languages, distances_to(lang, languages, _or_default(kinds), None)))


def _or_default(kinds: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(kinds) if kinds else DEFAULT_KINDS


def group_members(groups: Mapping[str, str], of_groups: Iterable[str], lang: str) -> dict[str, list[str]]:
    """{group: its languages but ``lang``}, for each of ``of_groups``; ``groups`` maps language to group."""
    return {group: [other for other, its in groups.items() if its == group and other != lang] for group in of_groups}


def group_of_nearest_language(lang: str, languages: Sequence[str], groups: Mapping[str, str],
                              typology: LanguageDistances | None) -> str | None:
    """The group of the grouped language of ``languages`` nearest to ``lang`` (ties: the first by code); None where
    the typology cannot place ``lang`` or nothing is grouped yet."""
    if typology is None:
        return None
    grouped = [other for other in languages if other in groups]
    try:
        nearest = min(grouped, key=lambda other: (typology.distance(lang, other), other))
    except (CMLError, ValueError):  # not placed in the typology, or no grouped language
        return None
    return groups[nearest]

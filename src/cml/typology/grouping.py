"""Groups of typologically close languages: average-linkage clustering of a :class:`TypologyMatrix`, and the
group nearest to a language.

Average linkage (UPGMA) because a group's distance to another is then the mean over all member pairs, the same
quantity :func:`mean_distances` gives to place a language near a group (:func:`nearest_group`, and the modular
strategies' routes); single linkage would chain dialect continua into one group, complete linkage would split on
a single poorly covered pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..errors import CMLError
from ..languages import Language, parse_language
from .uriel import TypologyMatrix, distances_to

Group = TypeVar("Group", int, str)


@dataclass(frozen=True)
class Grouping:
    """Languages (sorted), their group ids (1, 2, ... numbered in order of each group's first language), the
    scipy linkage over ``languages`` for a dendrogram, and the matrix clustered (in ``languages`` order)."""

    languages: list[str]
    labels: list[int]
    linkage: np.ndarray
    matrix: TypologyMatrix
    n_groups: int | None = None
    threshold: float | None = None
    max_size: int | None = None

    @property
    def groups(self) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = {}
        for language, label in zip(self.languages, self.labels):
            groups.setdefault(label, []).append(language)
        return groups

    def group_of(self, code: str | Language) -> int:
        return self.labels[self.matrix.index(code)]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "average",
            "n_groups": self.n_groups,
            "threshold": self.threshold,
            "max_size": self.max_size,
            "groups": {str(label): members for label, members in self.groups.items()},
            "linkage": self.linkage.tolist(),
            "linkage_languages": self.languages,
        }


@dataclass(frozen=True)
class NearestGroup:
    """The group whose members are closest to ``language`` on average, and that average distance."""

    language: str
    group: int
    distance: float
    by_group: dict[int, float]


def cluster(matrix: TypologyMatrix, n_groups: int | None = None, threshold: float | None = None,
            max_size: int | None = None) -> Grouping:
    """Cluster into ``n_groups`` groups, or cut the average-linkage tree at distance ``threshold``; then, with
    ``max_size``, split every group larger than that at its top merge, again and again, until none is.

    Splitting only the oversized groups (rather than cutting the whole tree lower) keeps the other groups as
    they were: cutting lower splits whichever merge is highest, often a small group of distant languages while
    a large family stays whole. Each part is still a subtree of the same tree: average linkage merges a group's
    members by their distances to each other only, so re-clustering them reproduces the group's subtree.

    Deterministic: languages are clustered in sorted order, whatever the matrix's order, and groups are numbered
    by their first language in that order.
    """
    if (n_groups is None) == (threshold is None):
        raise CMLError("give either a number of groups or a distance threshold")
    if n_groups is not None and not 1 <= n_groups <= len(matrix.languages):
        raise CMLError(f"cannot make {n_groups} groups of {len(matrix.languages)} languages")
    if threshold is not None and not threshold >= 0:
        raise CMLError(f"the distance threshold must be non-negative, got {threshold}")
    if max_size is not None and max_size < 1:
        raise CMLError(f"the largest group size must be at least 1, got {max_size}")
    ordered = matrix.reordered(sorted(matrix.languages))
    _require_finite(ordered)
    tree = _linkage(ordered.distances)
    raw = _cut(tree, len(ordered.languages), n_groups, threshold)
    if max_size is not None:
        raw = _split_oversized(ordered.distances, raw, max_size)
    return Grouping(ordered.languages, _renumbered(raw), tree, ordered, n_groups, threshold, max_size)


def nearest_group(language: str | Language, grouping: Grouping) -> NearestGroup:
    """The group nearest to ``language`` by mean distance to its members; the language may be outside the matrix.

    A language that is itself clustered is left out of the means (its distance 0 to itself would favour its own
    group); a group with no other member is then not a candidate.
    """
    code = parse_language(language).code
    matrix = grouping.matrix
    if code in matrix.languages:
        row = matrix.distances[matrix.index(code)]
    else:
        row = distances_to(code, matrix.languages, matrix.kinds, matrix.weights)
    position = {member: index for index, member in enumerate(matrix.languages)}
    others = {label: [member for member in members if member != code] for label, members in grouping.groups.items()}
    by_group = mean_distances(lambda member: row[position[member]], others)
    if not by_group:
        raise CMLError(f"{code}: no distance to any grouped language")
    best = nearest(by_group)
    return NearestGroup(code, best, by_group[best], by_group)


def mean_distances(distance: Callable[[str], float], groups: Mapping[Group, Iterable[str]]) -> dict[Group, float]:
    """{group: a language's mean distance to the group's members}, given ``distance(member)``: over the members at a
    finite distance (URIEL+ may have none for a pair), and without the groups that have none, in ``groups``'
    order. Distances are asked for the members of ``groups`` only."""
    by_group = {}
    for group, members in groups.items():
        known = [value for value in map(distance, members) if math.isfinite(value)]
        if known:
            by_group[group] = float(np.mean(known))
    return by_group


def nearest(by_group: Mapping[Group, float]) -> Group:
    """The group at the smallest distance; among equals, the first by name (so the choice never depends on
    order)."""
    return min(by_group, key=lambda group: (by_group[group], group))


def _require_finite(matrix: TypologyMatrix) -> None:
    rows, cols = np.nonzero(~np.isfinite(matrix.distances))
    if len(rows):
        pairs = ", ".join(f"{matrix.languages[i]}–{matrix.languages[j]}" for i, j in zip(rows[:5], cols[:5]))
        raise CMLError(f"cannot cluster: no typological distance for {pairs}")


def _linkage(distances: np.ndarray) -> np.ndarray:
    if len(distances) < 2:
        return np.empty((0, 4))
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    return linkage(squareform(distances, checks=False), method="average")


def _cut(tree: np.ndarray, size: int, n_groups: int | None, threshold: float | None) -> np.ndarray:
    if size < 2:
        return np.ones(size, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster

    if n_groups is not None:
        return fcluster(tree, t=n_groups, criterion="maxclust")
    return fcluster(tree, t=threshold, criterion="distance")


def _split_oversized(distances: np.ndarray, labels: np.ndarray, max_size: int) -> np.ndarray:
    labels = np.array(labels, dtype=np.int64)  # a copy: the split writes into it
    oversized = [label for label in np.unique(labels) if (labels == label).sum() > max_size]
    while oversized:
        label = oversized.pop()
        members = np.flatnonzero(labels == label)
        halves = _cut(_linkage(distances[np.ix_(members, members)]), len(members), 2, None)
        new_label = labels.max() + 1
        labels[members[halves == 2]] = new_label
        oversized += [part for part in (label, new_label) if (labels == part).sum() > max_size]
    return labels


def _renumbered(raw: Iterable[int]) -> list[int]:
    # scipy's cluster ids depend on the tree's internals; number groups by first appearance instead.
    order: dict[int, int] = {}
    return [order.setdefault(int(label), len(order) + 1) for label in raw]

"""URIEL+ distances between canonical languages: per kind, combined over kinds, with coverage, cached on disk.

Kinds are urielplus' distance categories: ``syntactic`` (103 grammar and word-order features), ``phonological``
(28), ``inventory`` (158 phoneme-inventory features), ``featural`` (those 289 together), ``genetic`` (3718
family-tree memberships) and ``geographic`` (299 proximities to points on the globe).

A kind's distance is urielplus' ``new_distance``: the angular distance ``2·arccos(cos)/π`` between two languages'
vectors restricted to the features observed in both. It is computed here for all pairs at once with matrix
products, because ``new_distance`` loops in Python (a 50-language genetic matrix takes minutes).

Defaults: ``syntactic``, ``genetic`` and ``geographic``, equally weighted, because

* they are three independent views that matter for transfer between languages: grammar and word order, shared
  ancestry (hence shared vocabulary and morphology) and contact;
* ``featural`` is syntactic + phonological + inventory, so adding it next to ``syntactic`` counts grammar twice,
  and more than half of it is the 158 inventory features (which phonemes exist), which barely separate languages
  (over SIB-200 pairs inventory distances have a standard deviation of 0.08, syntactic ones 0.18);
* phonological and inventory are the patchiest kinds: of the 205 SIB-200 varieties, after filling from
  macrolanguages, 120 have phonological and 154 inventory features, against syntactic 184, genetic 200 and
  geographic 205, so the default combination rarely has to fall back.

Gaps are handled in the open rather than zero-filled. A language maps to its own URIEL entry, else to its
macrolanguage's (``ekk`` -> ``est``); features missing from the entry used are taken from the macrolanguage's entry
(``arb`` gets its phonology from ``ara``), much as urielplus' own ``fill_with_base_lang`` does. What remains missing
stays missing: the combined distance of a pair is the weighted mean over the kinds observed for that pair, with the
weights renormalised, and a pair sharing none of the chosen kinds falls back to the mean of ``FALLBACK_KINDS``.
Every fill, gap and fallback is listed in :attr:`TypologyMatrix.warnings`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CMLError
from ..io import atomic_open
from ..languages import Language, macrolanguage, parse_language
from . import DEFAULT_KINDS, FALLBACK_KINDS, KINDS

LOW_COVERAGE = 0.25  # warn when a language has fewer than this share of a kind's features
_DATA_FILES = ("family_features.npz", "features.npz", "geocoord_features.npz")  # genetic, typological, geographic
_CACHE_FORMAT = 1  # bump when the computation changes, so stale cached matrices are not reused
_LISTED_PAIRS = 5
_COS_SNAP = 1e-12

_VECTORS: dict[tuple[str, str], np.ndarray] = {}  # (kind, URIEL code) -> raw vector, -1 where missing


# ---------------------------------------------------------------------------------------------- urielplus access

def _package_dir() -> Path:
    spec = importlib.util.find_spec("urielplus")
    if spec is None or not spec.submodule_search_locations:
        raise CMLError("the urielplus package is not installed (pip install urielplus)")
    return Path(next(iter(spec.submodule_search_locations)))


class _DropUrielplusInfo(logging.Filter):
    """Drops urielplus' INFO records, which it logs through the root logger itself, one per distance."""

    def __init__(self, package_dir: Path):
        super().__init__()
        self.package_dir = str(package_dir)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.package_dir)


@functools.lru_cache(maxsize=1)
def _uriel() -> Any:
    """The process-wide ``URIELPlus`` object (about 2 s to build)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from urielplus import urielplus

    # Importing urielplus runs logging.basicConfig(level=INFO); undo that so the application's logging stays its own.
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    root.addFilter(_DropUrielplusInfo(_package_dir()))
    try:
        # The first construction copies its data files inside the installed package, hence OSError.
        return urielplus.URIELPlus()
    except OSError as error:
        raise CMLError(f"cannot load the URIEL+ database: {error}") from error


@functools.lru_cache(maxsize=1)
def _known_codes() -> frozenset[str]:
    return frozenset(str(code) for code in _uriel().langs[0])


def _data_file(name: str) -> Path:
    """The data file urielplus loads: its working copy, or the shipped original it copies on first use."""
    database = _package_dir() / "database"
    working = database / name
    return working if working.is_file() else database / "original_uriel" / name


@functools.lru_cache(maxsize=1)
def database_version() -> str:
    """``urielplus-<version>+<hash of its data files>``: changes whenever the distances could."""
    digest = hashlib.sha256()
    for name in _DATA_FILES:
        digest.update(name.encode())
        digest.update(_data_file(name).read_bytes())
    return f"urielplus-{importlib.metadata.version('urielplus')}+{digest.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------- language mapping

@dataclass(frozen=True)
class UrielCode:
    """The URIEL entry a language uses (``code``) and the entries that fill its missing features (``fill_from``)."""

    code: str
    via: str  # "iso639-3" or "macrolanguage"
    fill_from: tuple[str, ...] = ()


def uriel_code(lang: Language) -> UrielCode:
    """Map a language to URIEL: its ISO 639-3 entry, else its macrolanguage's. Scripts do not matter to URIEL."""
    tried = [(lang.iso639_3, "iso639-3")]
    macro = macrolanguage(lang)
    if macro and macro != lang.iso639_3:
        tried.append((macro, "macrolanguage"))
    present = [(code, via) for code, via in tried if code in _known_codes()]
    if not present:
        raise CMLError(f"{lang.code}: no URIEL+ entry (tried {', '.join(code for code, _ in tried)})")
    (code, via), rest = present[0], present[1:]
    return UrielCode(code, via, tuple(fill for fill, _ in rest))


# ---------------------------------------------------------------------------------------------- vectors

def _raw_vectors(kind: str, codes: Iterable[str]) -> dict[str, np.ndarray]:
    wanted = set(codes)
    missing = sorted(code for code in wanted if (kind, code) not in _VECTORS)
    if missing:
        for code, vector in _uriel().get_vector(kind, missing).items():
            _VECTORS[kind, code] = np.asarray(vector, dtype=np.float64)
    return {code: _VECTORS[kind, code] for code in wanted}


def _observed(kind: str, vector: np.ndarray) -> np.ndarray:
    if kind == "genetic":
        # Family memberships are 0 or 1, never -1. An all-zero vector means URIEL knows no family for the language
        # (an isolate or unclassified); urielplus would compare it as a uniform vector, which is meaningless.
        return np.full(vector.shape, bool(vector.any()))
    return vector != -1


@dataclass(frozen=True)
class KindVectors:
    """One kind's vectors for a list of languages, with where each language's observed features came from."""

    values: np.ndarray  # languages × features, 0 where not observed
    observed: np.ndarray  # languages × features, bool
    origin: list[dict[str, int]]  # per language: {URIEL code: number of features taken from it}


def kind_vectors(kind: str, codes: Sequence[UrielCode]) -> KindVectors:
    """Each language's vector of ``kind``, its own entry's features first, then gaps filled from ``fill_from``."""
    raw = _raw_vectors(kind, {code for entry in codes for code in (entry.code, *entry.fill_from)})
    width = len(next(iter(raw.values())))
    values = np.zeros((len(codes), width))
    observed = np.zeros((len(codes), width), dtype=bool)
    origin: list[dict[str, int]] = []
    for row, entry in enumerate(codes):
        taken: dict[str, int] = {}
        for code in (entry.code, *entry.fill_from):
            take = _observed(kind, raw[code]) & ~observed[row]
            if take.any():
                values[row, take] = raw[code][take]
                observed[row] |= take
                taken[code] = int(take.sum())
        origin.append(taken)
    return KindVectors(values, observed, origin)


# ---------------------------------------------------------------------------------------------- distances

def angular_distances(a: np.ndarray, observed_a: np.ndarray,
                      b: np.ndarray, observed_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """urielplus' angular distance between every row of ``a`` and every row of ``b``, over the features observed
    in both rows; NaN where they share none. Returns (distances, number of shared features).

    Values must be 0 where not observed, so that plain dot products only see shared features.
    """
    mask_a, mask_b = observed_a.astype(np.float64), observed_b.astype(np.float64)
    shared = mask_a @ mask_b.T
    dot = a @ b.T
    norm_a = np.sqrt((a * a) @ mask_b.T)  # a's norm over the features shared with each b
    norm_b = np.sqrt(mask_a @ (b * b).T)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dot / (norm_a * norm_b)
        # urielplus replaces an all-zero vector by a uniform one; match it, since 0/1 features make this common.
        cos = np.where(norm_a == 0, (mask_a @ b.T) / (np.sqrt(shared) * norm_b), cos)
        cos = np.where(norm_b == 0, (a @ mask_b.T) / (np.sqrt(shared) * norm_a), cos)
    cos = np.where((norm_a == 0) & (norm_b == 0), 1.0, cos)
    # Rounding leaves identical vectors at cos = 1 - 1e-16, which arccos magnifies to 1e-8; snapping moves no
    # genuine distance by more than 1e-6.
    cos = np.where(cos > 1.0 - _COS_SNAP, 1.0, cos)
    distances = 2.0 * np.arccos(np.clip(cos, -1.0, 1.0)) / np.pi
    distances[shared == 0] = np.nan
    return distances, shared.astype(np.int64)


def _pairwise(vectors: KindVectors) -> np.ndarray:
    distances, shared = angular_distances(vectors.values, vectors.observed, vectors.values, vectors.observed)
    # BLAS may round d[i, j] and d[j, i] differently; clustering wants exact symmetry.
    distances = (distances + distances.T) / 2
    diagonal = np.diag_indices_from(distances)
    distances[diagonal] = np.where(np.diag(shared) > 0, 0.0, np.nan)
    return distances


def combine(per_kind: dict[str, np.ndarray], kinds: Sequence[str],
            weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of ``kinds`` per pair over the kinds observed for it; pairs with none use the mean of the
    observed ``FALLBACK_KINDS``. Returns (combined distances, which pairs fell back)."""
    total = np.zeros_like(per_kind[kinds[0]])
    weight = np.zeros_like(total)
    for kind, kind_weight in zip(kinds, weights):
        known = np.isfinite(per_kind[kind])
        total += np.where(known, per_kind[kind], 0.0) * kind_weight
        weight += known * kind_weight
    fell_back = weight == 0
    fallback = np.stack([per_kind[kind] for kind in FALLBACK_KINDS])
    fallback_known = np.isfinite(fallback).sum(axis=0)
    fallback_mean = np.where(fallback_known > 0, np.nansum(fallback, axis=0) / np.maximum(fallback_known, 1), np.nan)
    return np.where(fell_back, fallback_mean, total / np.where(weight == 0, 1.0, weight)), fell_back


# ---------------------------------------------------------------------------------------------- result

@dataclass(frozen=True)
class TypologyMatrix:
    """Distances between ``languages`` (canonical codes): combined (``distances``) and per kind (``per_kind``, which
    also holds the fallback kinds). ``coverage[lang][kind]`` says how many of the kind's features are observed and
    from which URIEL entries; ``uriel_codes[lang]`` is the entry each language maps to."""

    languages: list[str]
    kinds: tuple[str, ...]
    weights: tuple[float, ...]
    distances: np.ndarray
    per_kind: dict[str, np.ndarray]
    coverage: dict[str, dict[str, dict[str, Any]]]
    warnings: list[str]
    uriel_codes: dict[str, str]
    database_version: str

    def index(self, code: str | Language) -> int:
        canonical = parse_language(code).code
        try:
            return self.languages.index(canonical)
        except ValueError:
            raise CMLError(f"{canonical} is not in this typology matrix") from None

    def distance(self, a: str | Language, b: str | Language) -> float:
        return float(self.distances[self.index(a), self.index(b)])

    def reordered(self, languages: Sequence[str]) -> TypologyMatrix:
        """The same matrix with its languages in the given order (a permutation of ``self.languages``)."""
        if sorted(languages) != sorted(self.languages):
            raise ValueError("reordered() needs a permutation of the matrix's languages")
        order = np.array([self.languages.index(code) for code in languages], dtype=np.int64)
        pick = np.ix_(order, order)
        return TypologyMatrix(
            languages=list(languages), kinds=self.kinds, weights=self.weights, distances=self.distances[pick],
            per_kind={kind: matrix[pick] for kind, matrix in self.per_kind.items()},
            coverage={code: self.coverage[code] for code in languages}, warnings=self.warnings,
            uriel_codes={code: self.uriel_codes[code] for code in languages}, database_version=self.database_version)

    def to_json(self) -> dict[str, Any]:
        return {
            "languages": self.languages,
            "kinds": list(self.kinds),
            "weights": list(self.weights),
            "distances": _json_matrix(self.distances),
            "per_kind": {kind: _json_matrix(matrix) for kind, matrix in self.per_kind.items()},
            "coverage": self.coverage,
            "warnings": self.warnings,
            "uriel_codes": self.uriel_codes,
            "database_version": self.database_version,
        }


def _json_matrix(matrix: np.ndarray) -> list[list[float | None]]:
    # 4 decimals, as urielplus rounds; NaN is not JSON, so a missing distance is null.
    return [[None if math.isnan(value) else round(value, 4) for value in row] for row in matrix.tolist()]


# ---------------------------------------------------------------------------------------------- computation

def compute_matrix(languages: Sequence[str], kinds: Sequence[str], weights: Sequence[float]) -> TypologyMatrix:
    """Compute a :class:`TypologyMatrix` for canonical codes, without the disk cache."""
    parsed = [parse_language(code) for code in languages]
    codes = [uriel_code(lang) for lang in parsed]
    per_kind: dict[str, np.ndarray] = {}
    coverage: dict[str, dict[str, dict[str, Any]]] = {code: {} for code in languages}
    for kind in dict.fromkeys((*kinds, *FALLBACK_KINDS)):
        vectors = kind_vectors(kind, codes)
        per_kind[kind] = _pairwise(vectors)
        width = vectors.observed.shape[1]
        for code, observed, origin in zip(languages, vectors.observed.sum(axis=1), vectors.origin):
            coverage[code][kind] = {"features": int(observed), "of": width, "from": origin}
    distances, fell_back = combine(per_kind, kinds, weights)
    np.fill_diagonal(distances, 0.0)  # also for a language whose own kinds are all missing
    np.fill_diagonal(fell_back, False)
    warnings = (_language_warnings(languages, codes, coverage, kinds)
                + _pair_warnings(languages, per_kind, coverage, kinds, fell_back))
    return TypologyMatrix(list(languages), tuple(kinds), tuple(weights), distances, per_kind, coverage, warnings,
                          {code: entry.code for code, entry in zip(languages, codes)}, database_version())


def distances_to(language: str | Language, others: Sequence[str | Language], kinds: Sequence[str],
                 weights: Sequence[float]) -> np.ndarray:
    """Combined distances from one language to each of ``others``, computed as one row (not cached)."""
    kinds, weights = validate_kinds(kinds, weights)
    codes = [uriel_code(parse_language(code)) for code in (language, *others)]
    per_kind = {}
    for kind in dict.fromkeys((*kinds, *FALLBACK_KINDS)):
        vectors = kind_vectors(kind, codes)
        per_kind[kind], _ = angular_distances(vectors.values[:1], vectors.observed[:1],
                                              vectors.values[1:], vectors.observed[1:])
    return combine(per_kind, kinds, weights)[0][0]


def _language_warnings(languages: Sequence[str], codes: Sequence[UrielCode],
                       coverage: dict[str, dict[str, dict[str, Any]]], kinds: Sequence[str]) -> list[str]:
    warnings = []
    for language, entry in zip(languages, codes):
        notes = [] if entry.via == "iso639-3" else [f"uses the URIEL entry of its macrolanguage {entry.code}"]
        for kind in kinds:
            notes.extend(_kind_notes(kind, entry, coverage[language][kind]))
        if notes:
            warnings.append(f"{language}: " + "; ".join(notes))
    return warnings


def _kind_notes(kind: str, entry: UrielCode, coverage: dict[str, Any]) -> list[str]:
    observed, width = coverage["features"], coverage["of"]
    if observed == 0:
        tried = ", ".join((entry.code, *entry.fill_from))
        return [f"no {kind} features in URIEL ({tried}); its distances rest on the other kinds"]
    notes = [f"{kind}: {'all' if count == observed else f'{count} of'} {observed} features from {code}"
             for code, count in coverage["from"].items() if code != entry.code]
    if observed < LOW_COVERAGE * width:
        notes.append(f"{kind}: only {observed} of {width} features observed")
    return notes


def _pair_warnings(languages: Sequence[str], per_kind: dict[str, np.ndarray],
                   coverage: dict[str, dict[str, dict[str, Any]]], kinds: Sequence[str],
                   fell_back: np.ndarray) -> list[str]:
    warnings = []
    upper = np.triu(np.ones_like(fell_back, dtype=bool), k=1)
    for kind in kinds:
        has_kind = np.array([coverage[code][kind]["features"] > 0 for code in languages])
        disjoint = np.isnan(per_kind[kind]) & np.outer(has_kind, has_kind) & upper
        if disjoint.any():
            warnings.append(f"{kind}: no features observed in both for {_pair_list(languages, disjoint)}")
    if fell_back.any():
        warnings.append(f"none of {', '.join(kinds)} observed for {_pair_list(languages, fell_back & upper)}; "
                        f"their distance is the mean of {' and '.join(FALLBACK_KINDS)}")
    return warnings


def _pair_list(languages: Sequence[str], pairs: np.ndarray) -> str:
    rows, cols = np.nonzero(pairs)
    named = [f"{languages[i]}–{languages[j]}" for i, j in zip(rows[:_LISTED_PAIRS], cols[:_LISTED_PAIRS])]
    more = f" and {len(rows) - _LISTED_PAIRS} more" if len(rows) > _LISTED_PAIRS else ""
    return f"{len(rows)} pair{'s' if len(rows) != 1 else ''} ({', '.join(named)}{more})"


# ---------------------------------------------------------------------------------------------- cache and entry point

def cache_dir() -> Path:
    from ..cache import cache_root

    return cache_root() / "typology"


def _cache_path(languages: Sequence[str], kinds: Sequence[str], weights: Sequence[float]) -> Path:
    # The URIEL candidates are part of the key so that a change in macrolanguage mapping invalidates the entry.
    candidates = [[code, lang.iso639_3, macrolanguage(lang)]
                  for code, lang in ((code, parse_language(code)) for code in sorted(languages))]
    key = json.dumps({"format": _CACHE_FORMAT, "languages": candidates, "kinds": list(kinds),
                      "weights": list(weights), "database": database_version()}, sort_keys=True)
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _save(path: Path, matrix: TypologyMatrix) -> None:
    meta = {"languages": matrix.languages, "kinds": list(matrix.kinds), "weights": list(matrix.weights),
            "coverage": matrix.coverage, "warnings": matrix.warnings, "uriel_codes": matrix.uriel_codes,
            "database_version": matrix.database_version, "per_kind": list(matrix.per_kind)}
    arrays: dict[str, Any] = {f"kind_{kind}": values for kind, values in matrix.per_kind.items()}
    with atomic_open(path, "wb") as handle:
        np.savez(handle, distances=matrix.distances, meta=np.array(json.dumps(meta)), **arrays)


def _load(path: Path) -> TypologyMatrix | None:
    """The cached matrix, or None when absent or unreadable (it is then recomputed and rewritten)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            return TypologyMatrix(
                languages=meta["languages"], kinds=tuple(meta["kinds"]), weights=tuple(meta["weights"]),
                distances=stored["distances"], per_kind={kind: stored[f"kind_{kind}"] for kind in meta["per_kind"]},
                coverage=meta["coverage"], warnings=meta["warnings"], uriel_codes=meta["uriel_codes"],
                database_version=meta["database_version"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def validate_kinds(kinds: Sequence[str], weights: Sequence[float] | None) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Check kinds and weights; weights default to equal and are normalised to sum to 1."""
    if not kinds:
        raise CMLError("no typology kinds given")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise CMLError(f"unknown typology kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise CMLError(f"typology kinds repeat: {', '.join(kinds)}")
    weights = [1.0] * len(kinds) if weights is None else [float(weight) for weight in weights]
    if len(weights) != len(kinds):
        raise CMLError(f"{len(weights)} weights for {len(kinds)} typology kinds ({', '.join(kinds)})")
    if any(not math.isfinite(weight) or weight < 0 for weight in weights) or sum(weights) <= 0:
        raise CMLError(f"typology weights must be non-negative and not all zero, got {weights}")
    # Rounded so that equal weight vectors written differently share one cache entry.
    return tuple(kinds), tuple(round(weight / sum(weights), 12) for weight in weights)


def typology_matrix(languages: Iterable[str | Language], kinds: Sequence[str] = DEFAULT_KINDS,
                    weights: Sequence[float] | None = None, *, use_cache: bool = True) -> TypologyMatrix:
    """Typological distances between ``languages`` (any codes :func:`parse_language` accepts), in the given order
    with duplicates dropped. Matrices are cached under :func:`cache_dir` unless ``use_cache`` is False."""
    codes = list(dict.fromkeys(parse_language(code).code for code in languages))
    if not codes:
        raise CMLError("no languages given")
    kinds, weights = validate_kinds(kinds, weights)
    ordered = sorted(codes)  # the cache stores one canonical order per language set
    path = _cache_path(ordered, kinds, weights)
    matrix = _load(path) if use_cache else None
    if matrix is None:
        matrix = compute_matrix(ordered, kinds, weights)
        if use_cache:
            _save(path, matrix)
    return matrix.reordered(codes)

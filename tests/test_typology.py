"""URIEL+ distances, their cache, and groupings built on them (uses the urielplus data shipped with the package)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cml.errors import CMLError
from cml.typology import KINDS, uriel
from cml.typology.command import typology
from cml.typology.grouping import cluster, nearest_group
from cml.typology.uriel import compute_matrix, typology_matrix

# urielplus 1.3.2, new_distance(kind, ["eng", "deu"]), see shared/notes/typology.md
ENG_DEU = {"syntactic": 0.3582, "genetic": 0.6336, "geographic": 0.0437, "phonological": 0.3695,
           "inventory": 0.4364, "featural": 0.4033}
# Languages without a macrolanguage, so their vectors are URIEL's own and new_distance applies unchanged.
PAIRS = [("eng", "deu"), ("fra", "hin"), ("deu", "jpn"), ("hin", "tur")]
ROMANCE = {"spa", "por", "ita", "fra"}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def all_kinds():
    languages = sorted({code for pair in PAIRS for code in pair})
    return compute_matrix(languages, KINDS, [1 / len(KINDS)] * len(KINDS))


@pytest.mark.parametrize("kind", KINDS)
def test_reference_values(all_kinds, kind):
    assert all_kinds.per_kind[kind][all_kinds.index("eng"), all_kinds.index("deu")] == pytest.approx(
        ENG_DEU[kind], abs=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_new_distance(all_kinds, kind):
    reference = uriel._uriel()
    for a, b in PAIRS:
        ours = all_kinds.per_kind[kind][all_kinds.index(a), all_kinds.index(b)]
        assert ours == pytest.approx(reference.new_distance(kind, [a, b]), abs=1e-3), (a, b)


def test_matrix_is_a_distance_matrix(all_kinds):
    for matrix in (all_kinds.distances, *all_kinds.per_kind.values()):
        known = matrix[np.isfinite(matrix)]
        assert np.array_equal(np.isnan(matrix), np.isnan(matrix.T))
        assert np.allclose(np.nan_to_num(matrix), np.nan_to_num(matrix.T))
        assert ((known >= 0) & (known <= 1)).all()
    assert np.isfinite(all_kinds.distances).all()
    assert (np.diag(all_kinds.distances) == 0).all()


def test_script_variants_share_a_uriel_entry():
    matrix = typology_matrix(["zh", "zh-TW", "deu"])
    assert matrix.languages == ["cmn", "cmn_Hant", "deu"]
    assert matrix.uriel_codes["cmn"] == matrix.uriel_codes["cmn_Hant"] == "cmn"
    assert matrix.distance("cmn", "cmn_Hant") == 0.0


def test_romance_languages_group_before_hindi_joins():
    grouping = cluster(typology_matrix("spa por ita fra hin ben jpn kor".split()), n_groups=4)
    romance = grouping.group_of("spa")
    assert {code for code in grouping.languages if grouping.group_of(code) == romance} == ROMANCE
    assert grouping.group_of("hin") != romance


def test_grouping_is_deterministic():
    codes = "spa por ita fra hin ben jpn kor tur fin".split()
    first = cluster(typology_matrix(codes), n_groups=4)
    second = cluster(typology_matrix(list(reversed(codes)), use_cache=False), n_groups=4)
    assert first.labels == second.labels
    assert np.array_equal(first.linkage, second.linkage)
    assert first.labels[0] == 1  # groups numbered by their first language in sorted order


def test_threshold_cut():
    matrix = typology_matrix("spa por ita fra jpn".split())
    assert len(cluster(matrix, threshold=0.0).groups) == 5
    assert len(cluster(matrix, threshold=1.0).groups) == 1
    with pytest.raises(CMLError):
        cluster(matrix, n_groups=2, threshold=0.5)


def test_max_size_splits_only_the_oversized_groups_along_the_tree():
    matrix = typology_matrix("arb ces deu eng fin fra glg isl ita pol por rus spa swe cmn kor hin ind tha tur".split())
    plain = cluster(matrix, n_groups=6)
    capped = cluster(matrix, n_groups=6, max_size=5)
    sizes = sorted(len(members) for members in plain.groups.values())
    assert sizes[-1] == 13  # one European group: one module for 13 languages
    assert max(len(members) for members in capped.groups.values()) <= 5
    plain_groups = {tuple(members) for members in plain.groups.values()}
    capped_groups = {tuple(members) for members in capped.groups.values()}
    assert plain_groups - capped_groups == {tuple(sorted(members)) for members in plain.groups.values()
                                            if len(members) > 5}  # the small groups stay as they were
    assert {"ces", "pol", "rus"} in [set(members) for members in capped.groups.values()]
    tree = tree_clades(plain.linkage, len(plain.languages))
    for members in capped.groups.values():  # every part is a clade of the one tree
        assert frozenset(plain.languages.index(code) for code in members) in tree
    assert capped.to_json()["max_size"] == 5
    assert cluster(matrix, n_groups=6, max_size=20).labels == plain.labels
    with pytest.raises(CMLError, match="at least 1"):
        cluster(matrix, n_groups=6, max_size=0)


def tree_clades(linkage, size: int) -> set[frozenset[int]]:
    clades = [frozenset([leaf]) for leaf in range(size)]
    for left, right, *_ in linkage:
        clades.append(clades[int(left)] | clades[int(right)])
    return set(clades)


def test_nearest_group_of_a_language_outside_the_matrix():
    grouping = cluster(typology_matrix("spa por ita fra hin ben jpn kor".split()), n_groups=4)
    nearest = nearest_group("cat", grouping)
    assert nearest.group == grouping.group_of("spa")
    assert nearest.distance == min(nearest.by_group.values())
    assert nearest_group("por", grouping).group == grouping.group_of("spa")


def test_cache_hit_skips_computation(cache_dir, monkeypatch):
    first = typology_matrix(["deu", "fra", "hin"])
    assert list((cache_dir / "typology").glob("*.npz"))

    def no_recompute(*args, **kwargs):
        raise AssertionError("recomputed despite a cached matrix")

    monkeypatch.setattr(uriel, "compute_matrix", no_recompute)
    again = typology_matrix(["hin", "deu", "fra"])
    assert again.reordered(first.languages).to_json() == first.to_json()


def test_unreadable_cache_is_recomputed(cache_dir):
    first = typology_matrix(["deu", "fra"])
    (path,) = (cache_dir / "typology").glob("*.npz")
    path.write_bytes(b"")
    assert typology_matrix(["deu", "fra"]).to_json() == first.to_json()
    assert path.stat().st_size > 0


def test_missing_kinds_are_reported_and_bridged():
    # arb has no phonology of its own (filled from its macrolanguage ara); ekk has none even after filling (est).
    matrix = typology_matrix(["arb", "ekk", "fin", "deu"], kinds=["syntactic", "phonological"])
    assert any(w.startswith("arb:") and "phonological: all 28 features from ara" in w for w in matrix.warnings)
    assert any(w.startswith("ekk:") and "no phonological features" in w for w in matrix.warnings)
    assert np.isnan(matrix.per_kind["phonological"][matrix.index("ekk"), matrix.index("fin")])
    assert np.isfinite(matrix.distances).all()
    assert matrix.distance("ekk", "fin") == pytest.approx(matrix.per_kind["syntactic"][1, 2])


def test_pairs_without_chosen_kinds_fall_back():
    matrix = typology_matrix(["ekk", "fin", "deu"], kinds=["phonological"])
    assert any("mean of genetic and geographic" in w for w in matrix.warnings)
    expected = (matrix.per_kind["genetic"][0, 1] + matrix.per_kind["geographic"][0, 1]) / 2
    assert matrix.distance("ekk", "fin") == pytest.approx(expected)


def test_invalid_kinds_and_weights():
    with pytest.raises(CMLError, match="unknown typology kind"):
        typology_matrix(["deu", "fra"], kinds=["lexical"])
    with pytest.raises(CMLError, match="weights"):
        typology_matrix(["deu", "fra"], kinds=["syntactic", "genetic"], weights=[1])


def test_command_json():
    result = CliRunner().invoke(typology, ["deu", "fra", "hin", "arb", "zho", "--groups", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["languages"] == ["deu", "fra", "hin", "arb", "cmn"]
    assert sorted(code for group in data["grouping"]["groups"].values() for code in group) == sorted(
        data["languages"])
    capped = CliRunner().invoke(typology, ["deu", "fra", "hin", "arb", "zho", "--groups", "1", "--max-size", "2",
                                           "--json"])
    assert capped.exit_code == 0, capped.output
    assert max(len(group) for group in json.loads(capped.output)["grouping"]["groups"].values()) <= 2
    alone = CliRunner().invoke(typology, ["deu", "fra", "--max-size", "2"])
    assert alone.exit_code != 0 and "--max-size splits groups" in alone.output


def test_command_table():
    result = CliRunner().invoke(typology, ["deu", "fra", "arb", "--groups", "2"])
    assert result.exit_code == 0, result.output
    assert "0.00" in result.output and "warning: arb" in result.output

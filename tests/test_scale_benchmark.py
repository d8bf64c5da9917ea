"""benchmarks/scale.py end to end on a tiny SIB-200-shaped folder (7 languages, the first 6 used)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_benchmark

FOLDERS = ("deu_Latn", "eng_Latn", "fra_Latn", "hin_Deva", "jpn_Jpan", "spa_Latn", "tur_Latn")


def _write_sib_like(root: Path) -> Path:
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True)
        (root / folder / "labels.txt").write_text("sports\ntravel\n")
        for number, split in enumerate(("train", "dev", "test")):
            rows = [f"{i}\t{('sports', 'travel')[i % 2]}\t{folder} {split} sentence {i} " + "word " * (i % 5)
                    for i in range(4 * number, 4 * number + 4)]
            (root / folder / f"{split}.tsv").write_text("index_id\tcategory\ttext\n" + "\n".join(rows) + "\n")
    return root


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("scale").main(["--help"])
    assert exit_info.value.code == 0
    assert "--languages" in capsys.readouterr().out


def test_runs_on_a_subset_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path / "user-cache"))
    output = tmp_path / "results" / "scale.json"
    status = load_benchmark("scale").main(["--data", str(_write_sib_like(tmp_path / "sib")), "--languages", "6",
                                  "--groups", "2", "9", "--adapters", "3", "--repeats", "1",
                                  "--output", str(output)])
    assert status == 0
    report = json.loads(output.read_text())
    assert report["languages"] == 6
    assert report["typology"]["shape"] == [6, 6]
    assert set(report["grouping"]) == {"2", "6"}  # 9 groups of 6 languages is capped at 6
    assert report["grouping"]["6"]["singletons"] == 6
    routing = report["routing"]
    assert routing["check"]["passed"] and routing["examples"] == 24 and routing["adapters"] == 3
    assert routing["routed_model_mib"] > routing["plain_model_mib"]
    for name in ("read", "typology cold", "typology warm", "group 2", "nearest 2", "adapters", "inference"):
        assert report["phases"][name]["seconds"] >= 0 and report["phases"][name]["peak_rss_mib"] > 0
    assert "tracemalloc_peak_mib" in report["phases"]["typology recompute"]
    # The benchmark's cache folder was temporary: the user's cache is untouched.
    assert not (tmp_path / "user-cache").exists()

"""Reports: files written from a synthetic run, their content, the comparison of runs, the CLI commands, and the
HTML rendered in headless Chromium (when installed)."""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from test_cml_metrics import ITEMS, write_run, write_seq2seq_run

from cml.evaluation.cml_metrics import REFERENCE_KEYS, SUMMARY_KEYS, summarize_run
from cml.reports.command import compare, report
from cml.reports.compare import compare_rows, render_compare
from cml.reports.report import CSV_FIELDS, language_groups, plain_summary, write_report
from cml.reports.tables import COLUMN, best_flags
from cml.summary import print_scores

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "scripts" / "check_report_html.py"
IMAGE = re.compile(r'<img src="data:image/png;base64,([^"]+)"')


def load_checker():
    spec = importlib.util.spec_from_file_location("check_report_html", CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    write_run(run_dir)
    stored = (run_dir / "results.json").read_bytes()
    return run_dir, write_report(run_dir), stored


def test_every_summary_figure_has_a_column():
    assert tuple(COLUMN) == SUMMARY_KEYS + REFERENCE_KEYS


@pytest.mark.parametrize("values, better, expected", [
    ([1, 3, 3], "high", [False, True, True]),
    ([0.2, None, 0.1], "low", [False, False, True]),
    ([2, 2], "high", [False, False]),  # no difference, nothing to point out
    ([5], "low", [False]),
    ([1, 2], None, [False, False]),
])
def test_best_flags(values, better, expected):
    assert best_flags(values, better) == expected


def test_report_files(written):
    run_dir, paths, stored = written
    assert set(paths) == {"markdown", "html", "csv", "figures"}
    assert all(path.parent == run_dir for key, path in paths.items())
    assert (run_dir / "results.json").read_bytes() == stored  # the run's own files are left alone
    page = paths["html"].read_text(encoding="utf-8")
    images = IMAGE.findall(page)
    # 2 stages × (delta chart, scatter) + heatmap + dendrogram
    assert len(images) == 6 == len(re.findall(r"<img ", page))
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert not re.search(r'(src|href)="(?!data:)', page)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(linked) == 6 and all((run_dir / link).is_file() for link in linked)
    assert sorted(path.name for path in paths["figures"].iterdir()) == sorted(Path(link).name for link in linked)


def test_report_content(written):
    _, paths, _ = written
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert markdown.index("## Summary") < markdown.index("## Overview") < markdown.index("## Typology")
    assert "1 of 3 languages lost accuracy under full_finetune (none significantly), worst: eng -25.0 pt" in markdown
    # update1 overview: laft_uriel improves mean Δ (+16.7 against 0.0) and has no losses: bold in md, class in html
    assert "| update1 | laft_uriel | 3 | 1 | **0** | 0 | 0 | **+16.7** | **0.0** | **0.0** |" in markdown
    assert '<td class="best">+16.7</td>' in paths["html"].read_text(encoding="utf-8")
    assert "1 group by average linkage (no strategy in this run records groups): group 1: deu eng yor." in markdown
    assert "| eng | neighbour | 0.35 |" in markdown


def test_results_csv(written, run_summary_rows=3 * 2 * 2):
    _, paths, _ = written
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text(encoding="utf-8"))))
    assert len(rows) == run_summary_rows and tuple(rows[0]) == CSV_FIELDS
    eng = next(row for row in rows if (row["strategy"], row["stage"], row["language"]) ==
               ("full_finetune", "update1", "eng"))
    assert (eng["stage_index"], eng["category"], float(eng["delta"]), float(eng["negative_flip_rate"])) == (
        "1", "neighbour", -0.25, 0.25)


def test_report_is_deterministic(written):
    run_dir, paths, _ = written
    first = {key: paths[key].read_bytes() for key in ("markdown", "html", "csv")}
    write_report(run_dir)
    assert first == {key: paths[key].read_bytes() for key in ("markdown", "html", "csv")}


def test_report_uses_a_stored_summary_and_stored_groups(tmp_path):
    results = write_run(tmp_path)
    for record in results["strategies"]["laft_uriel"]["stages"][1:]:  # as modular strategies record them
        record["groups"] = {"deu": "g1", "eng": "g1", "yor": "g2"}
    results["summary"] = summarize_run(results, tmp_path)
    results["summary"]["laft_uriel"]["update1"]["languages"]["eng"]["delta"] = -0.5  # only visible if used
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    markdown = write_report(tmp_path)["markdown"].read_text(encoding="utf-8")
    assert "Groups used by laft_uriel: group g1: deu eng; group g2: yor." in markdown
    assert "| eng | neighbour | 0.35 | -25.0 |" in markdown and "| -50.0 |" in markdown


DISAGREEMENT = ("full_finetune, stage update: chrf shows a significant loss in 2 of 3 languages (mean Δ -8.7 pt) "
                "where exact_match shows none (mean Δ +0.0 pt).")


def test_report_flags_a_secondary_metric_that_disagrees(tmp_path):
    write_seq2seq_run(tmp_path)
    markdown = write_report(tmp_path)["markdown"].read_text(encoding="utf-8")
    assert markdown.index("## Warning: the metrics disagree") < markdown.index("## Summary")
    assert f"- {DISAGREEMENT}" in markdown
    assert "- laft_uriel, stage update: chrf shows a significant gain in 1 of 3 languages" in markdown
    assert "No language lost exact match under full_finetune; mean change +0.0 pt." in markdown
    every = markdown[markdown.index("## Every metric"):markdown.index("## Stage update: per language")]
    assert "| update | exact_match (primary) | full_finetune | 3 | 0 | 0 | 0 | 0 | +0.0 |" in every
    assert "| update | chrf | full_finetune | 3 | 1 | 2 | 1 | 2 | -8.7 | 15.2 | 26.9 | 18.2 |" in every
    assert ("| update | chrf | laft_uriel | 3 | **2** | **0** | 1 | **0** | **+1.4** | **0.0** | 26.9 | **28.3** |"
            in every)


def test_terminal_summary_names_the_primary_metric_and_the_disagreement(tmp_path):
    results = write_seq2seq_run(tmp_path)
    results["summary"] = summarize_run(results, tmp_path)
    console = Console(width=250, record=True)
    print_scores(results, console)
    text = console.export_text()
    assert "primary metric: exact_match (evaluation.primary_metric" in text
    assert f"warning: {DISAGREEMENT}" in text


def test_groups_a_run_records():
    expected = {"deu": "1", "eng": "1", "yor": "2"}
    assert language_groups({"deu": "1", "eng": "1", "yor": "2"}) == expected  # a modular stage record
    assert language_groups({"1": ["deu", "eng"], "2": ["yor"]}) == expected
    assert language_groups({"method": "average", "groups": {"1": ["deu", "eng"], "2": ["yor"]}}) == expected


def test_plain_summary_against_the_reference():
    stage = {"n_languages": 6, "n_significant_degraded": 1, "mean_delta": 0.003,
             "vs_reference": {"loss_magnitude_reduction": 0.35},
             "languages": {"yor": {"delta": -0.044}, "swh": {"delta": -0.01}, "deu": {"delta": 0.05}}}
    assert plain_summary("laft_uriel", stage, "accuracy", "full_finetune") == (
        "2 of 6 languages lost accuracy under laft_uriel (1 significantly), worst: yor -4.4 pt; mean change "
        "+0.3 pt; mean loss 35% smaller than under full_finetune.")


def test_compare(written, tmp_path):
    run_dir, _, _ = written
    other = tmp_path / "other"
    other.mkdir()
    write_run(other, items={"full_finetune": ITEMS["full_finetune"]})
    rows = compare_rows([run_dir, other])
    assert [(row["run"], row["strategy"], row["stage"]) for row in rows] == [
        (str(run_dir), "full_finetune", "update1"), (str(run_dir), "laft_uriel", "update1"),
        (str(run_dir), "full_finetune", "update2"), (str(run_dir), "laft_uriel", "update2"),
        (str(other), "full_finetune", "update1"), (str(other), "full_finetune", "update2")]
    assert set(rows[0]) == {"run", "strategy", "stage", *SUMMARY_KEYS, *REFERENCE_KEYS}
    console = Console(width=250, record=True)
    render_compare(rows, console)
    text = console.export_text()
    assert "laft_uriel" in text and "+16.7" in text


def test_commands(written, tmp_path):
    run_dir, paths, _ = written
    result = CliRunner().invoke(report, [str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(path) for path in paths.values()]
    result = CliRunner().invoke(compare, [str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 4
    assert CliRunner().invoke(compare, [str(tmp_path / "absent")]).exit_code == 2


def test_checker_static_checks(written):
    checker = load_checker()
    _, paths, _ = written
    page = paths["html"].read_text(encoding="utf-8")
    png = base64.b64decode(IMAGE.search(page).group(1))
    assert checker.static_problems(page) == []
    assert checker.png_problem(png) is None
    assert checker.png_problem(png[:len(png) // 2]) is not None
    corrupt = bytearray(png)
    corrupt[len(png) // 2] ^= 0xFF
    assert "corrupt" in checker.png_problem(bytes(corrupt))
    problems = checker.static_problems('<img src="figure.png"><link rel="stylesheet" href="https://x.org/a.css">')
    assert problems == ["image 1 is not an embedded PNG: 'figure.png'", "external reference: 'https://x.org/a.css'"]


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y --no-install-recommends chromium)")
def test_report_renders_in_chromium(written, tmp_path):
    _, paths, _ = written
    screenshot = tmp_path / "report.png"
    done = subprocess.run([sys.executable, str(CHECKER), str(paths["html"]), str(screenshot)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert load_checker().png_problem(screenshot.read_bytes()) is None


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y --no-install-recommends chromium)")
def test_chromium_reports_broken_images_and_script_errors(tmp_path):
    page = ('<!DOCTYPE html><html><head><title>t</title></head><body>'
            '<img alt="broken" src="data:image/png;base64,iVBORw0KGgoAAAAN">'
            '<script>undefinedFunction();</script></body></html>')
    problems, _ = load_checker().browser_check(page, CHROMIUM, tmp_path)
    assert "image not rendered: broken" in problems
    assert any("undefinedFunction" in problem for problem in problems)

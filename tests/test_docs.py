"""The generated blocks of README.md and docs/*.md are what their commands print from benchmarks/results/*.json
(benchmarks/docs.py, issue 32 item 5), and the check names a stale block and its file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT, load_benchmark


def test_every_generated_block_is_its_commands_output():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "docs.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"python benchmarks/docs.py rewrites them:\n{done.stderr}"


def write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_stale_block_is_named_with_its_file_and_rewritten(tmp_path):
    docs = load_benchmark("docs")
    blocks = {("README.md", "one"): ("-c", "print('\\nfresh\\n')"),
              ("docs/page.md", "two"): ("-c", "print('| a |')")}
    write(tmp_path, "README.md", "# x\n<!-- one:start -->\nold\n<!-- one:end -->\ntail\n")
    page = write(tmp_path, "docs/page.md", "`<!-- two:start -->` in prose is not a marker\n"
                                           "<!-- two:start -->\n| a |\n<!-- two:end -->\n")
    stale = docs.regenerate(True, root=tmp_path, blocks=blocks)
    assert len(stale) == 1 and stale[0].startswith("README.md: block 'one' is stale"), stale
    assert "old" in (tmp_path / "README.md").read_text()  # the check writes nothing
    assert docs.regenerate(False, root=tmp_path, blocks=blocks) == ["README.md: rewrote one"]
    assert (tmp_path / "README.md").read_text() == "# x\n<!-- one:start -->\nfresh\n<!-- one:end -->\ntail\n"
    assert docs.regenerate(True, root=tmp_path, blocks=blocks) == []
    assert page.read_text().count("| a |") == 1


@pytest.mark.parametrize("text, message", [
    ("<!-- other:start -->\nx\n<!-- other:end -->\n", "block 'other' has no command"),
    ("no markers\n", "block 'one' is registered but has no"),
    ("<!-- one:end -->\n<!-- one:start -->\n", "needs <!-- one:start --> before <!-- one:end -->"),
])
def test_markers_and_the_registry_must_agree(tmp_path, text, message):
    docs = load_benchmark("docs")
    write(tmp_path, "README.md", text)
    with pytest.raises(docs.DocsError, match=message):
        docs.regenerate(True, root=tmp_path, blocks={("README.md", "one"): ("-c", "print(1)")})


def test_a_failing_command_is_an_error_not_a_stale_block(tmp_path):
    docs = load_benchmark("docs")
    write(tmp_path, "README.md", "<!-- one:start -->\n<!-- one:end -->\n")
    with pytest.raises(docs.DocsError, match="exited 3"):
        docs.regenerate(True, root=tmp_path, blocks={("README.md", "one"): ("-c", "raise SystemExit(3)")})


def v2_table(seeds_degraded: dict[str, list[int]], aggregates: dict[str, float], default="laft_uriel") -> dict:
    """A v2 results file of one stream: per strategy, its significant losses on each seed and its aggregate over
    full fine-tuning's; a strategy with fewer seeds than the stream's ran on those only."""
    seeds = [0, 1, 2]

    def figure(values):
        return {"mean": sum(values) / len(values), "std": 0.0 if len(values) > 1 else None, "n": len(values)}

    strategies, per_seed = {}, {str(seed): {} for seed in seeds}
    for name, losses in seeds_degraded.items():
        for seed, lost in zip(seeds, losses):
            per_seed[str(seed)][name] = {"n_significant_degraded": lost}
        strategies[name] = {
            "n_significant_degraded": figure(losses), "n_significant_improved": figure([1] * len(losses)),
            "versus": {"full_finetune": {"aggregate_after_pp": figure([aggregates.get(name, 0.0)] * len(losses)),
                                         "improved_share_gain_pp": figure([5.0] * len(losses)),
                                         "loss_magnitude_reduction": None if name == "full_finetune" else
                                         figure([0.5] * len(losses))}}}
    problem = {str(seed): {"n_significant_degraded": losses, "present": losses >= 3}
               for seed, losses in zip(seeds, seeds_degraded["full_finetune"])}
    return {"default_strategy": default, "references": ["full_finetune", "no_update"],
            "added_after_results": ["late"],
            "streams": [{"update_kind": "subset", "seeds": seeds, "strategies": strategies, "per_seed": per_seed,
                         "problem": {"per_seed": problem}}]}


def test_the_v2_headline_names_the_default_and_the_best_strategy_that_degraded_nothing_on_every_seed(tmp_path):
    import json

    tables = load_benchmark("tables")
    table = v2_table({"full_finetune": [3, 5, 6], "no_update": [0, 0, 0], "laft_uriel": [0, 1, 0],
                      "late": [0, 0, 0], "early": [0, 0, 0], "one_seed": [0]},
                     {"laft_uriel": 0.5, "late": 0.2, "early": 0.1, "one_seed": 0.9})
    (tmp_path / "v2-ud_pos.json").write_text(json.dumps(table), encoding="utf-8")
    lines = tables.v2_headline_table(tmp_path)
    rows = [line for line in lines if line.startswith("| UD POS")]
    assert len(rows) == 2 and all("| 3, 5, 6 |" in row for row in rows), lines
    assert "default: `laft_uriel` | 0.3 ± 0.0" in rows[0]
    # laft_uriel lost a language on seed 1 and one_seed ran once: the best protector is the late variant, marked
    assert "best protector: `late` † | 0.0 ± 0.0 | 1.0 ± 0.0 | +0.20 ± 0.00 | +5.0 ± 0.0 | 50% ± 0%" in rows[1]
    assert lines[-3] == "Run on fewer seeds, so not candidates for best protector: UD POS subset: `one_seed` (seed 0)."
    assert lines[-1] == "Not measured yet: PUD POS, lemmatisation."

    table = v2_table({"full_finetune": [3, 1, 6], "laft_uriel": [1, 1, 0]}, {})
    (tmp_path / "v2-ud_pos.json").write_text(json.dumps(table), encoding="utf-8")
    lines = tables.v2_headline_table(tmp_path)
    assert "best protector: none" in lines[3]
    assert ("The problem is absent (full fine-tuning degraded fewer than 3 languages significantly), so these rows "
            "cannot judge a strategy, on: UD POS subset (seed 1).") in lines
    table = v2_table({"full_finetune": [3, 5, 6], "lora": [0, 0, 0]}, {}, default="laft_replay")
    del table["streams"][0]["problem"]
    (tmp_path / "v2-ud_pos.json").write_text(json.dumps(table), encoding="utf-8")
    rows = tables.v2_headline_table(tmp_path)[2:4]  # a default the stream did not run, no problem record
    assert "| ?, ?, ? | default: `laft_replay` not run |" in rows[0] and "best protector: `lora`" in rows[1]
    # a default that ran on fewer seeds than the stream shows its own seeds and full fine-tuning's losses on them
    table = v2_table({"full_finetune": [3, 5, 6], "laft_uriel": [0]}, {})
    (tmp_path / "v2-ud_pos.json").write_text(json.dumps(table), encoding="utf-8")
    rows = tables.v2_headline_table(tmp_path)[2:4]
    assert rows[0].startswith("| UD POS subset | 0 | 3 | default: `laft_uriel` | 0.0 |"), rows[0]
    assert rows[1].startswith("| UD POS subset | 0 1 2 | 3, 5, 6 | best protector: none |"), rows[1]
    # an update of every language needs no problem: it is left out of the headline, and named
    table = v2_table({"full_finetune": [3, 5, 6], "laft_uriel": [0, 0, 0]}, {})
    every = {**table["streams"][0], "update_kind": "all", "problem": {"per_seed": {}, "required": False}}
    table["streams"].append(every)
    (tmp_path / "v2-ud_pos.json").write_text(json.dumps(table), encoding="utf-8")
    lines = tables.v2_headline_table(tmp_path)
    assert not any(line.startswith("| UD POS all") for line in lines)
    assert lines[-3].endswith("are not in this table: UD POS all."), lines


def test_the_gate_moves_table_names_each_route_kind_and_the_runs_it_counts(tmp_path):
    import json

    tables = load_benchmark("tables")
    rows = [{"kind": "nearest", "in_update": False, "moves": 3, "up": 1, "down": 2, "unchanged": 0,
             "significant_losses": 1, "mean_delta_pp": -0.125, "languages": 2, "languages_up": 0, "languages_down": 2},
            {"kind": "own", "in_update": True, "moves": 2, "up": 2, "down": 0, "unchanged": 0,
             "significant_losses": 0, "mean_delta_pp": 1.5, "languages": 1, "languages_up": 1, "languages_down": 0}]
    moves = [{"strategy": "laft_uriel"}, {"strategy": "laft_replay_cap4"}]
    (tmp_path / "v2-gate-moves.json").write_text(json.dumps(
        {"runs": ["runs/benchmarks/v2-ud_pos-subset-full-seed0"], "moves": moves, "by_kind": rows}), encoding="utf-8")
    lines = tables.gate_moves_table(tmp_path)
    assert lines[2] == "| nearest group's module (borrowed) | no | 3 | 1 | 2 | 0 | 1 | -0.12 | 2 | 0 / 2 |"
    assert lines[3] == "| own group's module | yes | 2 | 2 | 0 | 0 | 0 | +1.50 | 1 | 1 / 0 |"
    assert lines[-1].startswith("Over 1 runs (v2-ud_pos-subset-full-seed0) and their gated strategies "
                                "(`laft_replay_cap4`, `laft_uriel`); the first update only.")


def test_the_v2_cost_table_adds_stage_0_and_each_planned_strategy_over_three_seeds(tmp_path):
    import json

    tables = load_benchmark("tables")
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: v2\nreferences: [full_finetune, no_update]\ndefault_strategy: laft_uriel\n"
                     "strategies: [full_finetune, no_update]\n"
                     "quick: {benchmarks: [ud_pos], update_kinds: [subset], strategies: [full_finetune, no_update]}\n"
                     "benchmarks:\n"
                     "  ud_pos: {config: u.yaml, update_kinds: {subset: {}}, strategies: [full_finetune, no_update, "
                     "laft_uriel]}\n"
                     "  pud_pos: {config: p.yaml, update_kinds: {subset: {}}}\n", encoding="utf-8")
    lines = tables.v2_cost_table(tmp_path, suite)
    assert lines[-1] == "No stage of `suite.yaml`'s streams recorded its cost yet: what a full run costs is not known."
    # ud_pos: two seeds recorded their cost (laft_uriel only on seed 1), an old seed did not
    per_seed = {"0": {"full_finetune": {"stage_cpu_seconds": 600.0}, "no_update": {"stage_cpu_seconds": 60.0}},
                "1": {"full_finetune": {"stage_cpu_seconds": 1200.0}, "no_update": {"stage_cpu_seconds": 60.0},
                      "laft_uriel": {"stage_cpu_seconds": 300.0}},
                "2": {"full_finetune": {"stage_cpu_seconds": None}}}
    stage0 = {"0": {"stage_cpu_seconds": 3000.0}, "1": {"stage_cpu_seconds": 3600.0}, "2": {}}
    (tmp_path / "v2-ud_pos.json").write_text(json.dumps({"streams": [{"update_kind": "subset", "per_seed": per_seed,
                                                                   "stage0": stage0}]}), encoding="utf-8")
    lines = tables.v2_cost_table(tmp_path, suite)
    # pud_pos plans the suite's strategies (it names none of its own)
    assert lines[:6] == ["| strategy | UD POS subset | PUD POS subset |", "|---|---:|---:|",
                         "| stage 0 | 55.0 (2) | — |", "| `full_finetune` | 15.0 (2) | — |",
                         "| `no_update` | 1.0 (2) | — |", "| `laft_uriel` | 5.0 (1) | not planned |"]
    # seeds 0 1 2 x (55 + 15 + 1 + 5) min = 3.8 h; pud_pos has no table yet, so the total is a lower bound
    assert "seeds 0 1 2: at least 3.8 CPU hours (budget 8), about 1.9 h of wall time" in lines[-5]
    # a method change re-runs the default's stages alone: 3 seeds x 5 min on ud_pos, pud_pos's unrecorded
    assert lines[-3].endswith("the default, `laft_uriel`, costs 0.2 CPU hours over the streams that run it "
                             "(1), seeds 0 1 2.")
    assert lines[-1].endswith("process wrote): pud_pos stage 0, pud_pos subset full_finetune, "
                              "pud_pos subset no_update.")

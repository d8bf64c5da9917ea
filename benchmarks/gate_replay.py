"""What a stricter gate would have done: a finished run's gated strategies (laft_uriel and its variants) replayed
with a minimum dev gain, without retraining.

    python benchmarks/gate_replay.py RUN_DIR [RUN_DIR ...] [--min-gain 0 1 2 3 5] [--strategies laft_uriel ...]
    python benchmarks/gate_replay.py --moves RUN_DIR [RUN_DIR ...]   # the gate's moves by route kind, on test

The gate records every candidate route's dev score for every language. Raising the bar a route must clear over
the previous model only sends more languages back to the previous model, and that replay is exact: the modules
trained the same whatever the gate later picked, a route's test predictions do not depend on which other languages
took it, and a language on the previous model scores exactly what it scored before the update (change 0). So each
threshold's summary (languages improved and degraded, losses, against the run's reference strategy) is what a run
with that gate would have reported. Only the first update stage is replayed: at later stages the gate's
"previous" route is still the stage-0 model (modules sit on it, frozen), not what the language used at the stage
before, and each stage's candidates depend on the routes before it. Reads the stage records under
``RUN_DIR/stages`` (every strategy trained into the folder, also by earlier invocations:
``RunFolder.finished_stages``), not ``results.json``'s strategy list; changes are computed as ``cml run`` computes them (the run's evaluation settings, the same bootstrap
seeds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COLUMNS = ("run", "strategy", "stage", "min_gain", "n_improved", "n_degraded", "n_significant_degraded",
           "improved_share_gain_pp", "loss_magnitude_reduction", "after_vs_reference_pp", "moves_reverted")


def gated_summary(run_dir: Path, strategies: list[str] | None, skip_absent: bool = False
                  ) -> tuple[str, list[str], dict, dict]:
    """The run's reference strategy, the gated strategies chosen (default: all; ``skip_absent``: those of them the
    run has, else each must be there), their finished stage records and the summary of their changes against the
    reference, as ``cml run`` computes it."""
    from cml.errors import CMLError
    from cml.evaluation.cml_metrics import summarize_run
    from cml.reports.tables import load_results
    from cml.run_folder import RunFolder

    results = load_results(run_dir)
    reference = results["reference_strategy"]
    records = RunFolder(run_dir).finished_stages()
    if reference not in records:
        raise CMLError(f"the run's reference strategy {reference!r} has no finished update stage here",
                       file=run_dir / "stages")
    gated = [s for s, stages in records.items() if stages[1]["index"] == 1 and stages[1].get("gate")]
    chosen = [s for s in strategies if s in gated or not skip_absent] if strategies else gated
    if unknown := sorted(set(chosen) - set(gated)):
        raise CMLError(f"no gated stage records for {unknown} (gated strategies here: {gated})", file=run_dir)
    summary = summarize_run({**results, "strategies": {s: {"stages": records[s]} for s in [reference, *chosen]}},
                            run_dir, reference=reference, **results["config"].get("evaluation", {}))
    return reference, chosen, records, summary


def replay(run_dir: Path, min_gains: list[float], strategies: list[str] | None) -> list[dict]:
    """One row per gated strategy and threshold (in points of the run's primary metric), for the first update."""
    from cml.evaluation.cml_metrics import compare_to_reference, summarize_languages
    from cml.strategies.modular.gate import parse_gate_dev_key

    reference, chosen, records, summary = gated_summary(run_dir, strategies)
    rows = []
    for strategy in chosen:
        record = records[strategy][1]  # the first update alone (module docstring)
        reference_figures = summary[reference][record["name"]]
        changes = summary[strategy][record["name"]]["languages"]
        for min_gain in min_gains:
            replayed, reverted = {}, 0
            for lang, change in changes.items():
                gate = record["gate"][lang]
                dev = {parse_gate_dev_key(key)[0]: score for key, score in gate["dev"].items()}
                gain = 100 * (dev[gate["choice"]] - dev["previous"])
                if gate["choice"] != "previous" and gain < min_gain - 1e-9:  # 0.21 - 0.18 is 2.99999... in floats
                    change = {**change, "after": change["before"], "delta": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                              "negative_flip_rate": 0.0, "positive_flip_rate": 0.0}
                    reverted += 1
                replayed[lang] = change
            figures = summarize_languages(replayed)
            rows.append({"run": run_dir.name, "strategy": strategy, "stage": record["name"], "min_gain": min_gain,
                         **{key: figures[key] for key in ("n_improved", "n_degraded", "n_significant_degraded")},
                         **compare_to_reference(figures, reference_figures),
                         "after_vs_reference_pp": 100 * (figures["aggregate_after"]
                                                         - reference_figures["aggregate_after"]),
                         "moves_reverted": reverted})
    return rows


def moves(run_dir: Path, strategies: list[str] | None) -> list[dict]:
    """Every language the gate moved off the previous model at the first update: the kind of route it took (own,
    nearest, shared), whether it was in the update, and its test change (points) with its 95% interval.
    ``strategies``: only these, where the run has them (runs of a benchmark hold different sets)."""
    _, chosen, records, summary = gated_summary(run_dir, strategies, skip_absent=True)
    rows = []
    for strategy in chosen:
        record = records[strategy][1]
        changes = summary[strategy][record["name"]]["languages"]
        for lang, gate in sorted(record["gate"].items()):
            if gate["choice"] == "previous":
                continue
            change = changes[lang]
            rows.append({"run": run_dir.name, "strategy": strategy, "language": lang, "kind": gate["choice"],
                         "in_update": lang in record["updated_languages"], "delta_pp": 100 * change["delta"],
                         "significant_loss": change["ci_high"] < 0})
    return rows


MOVE_COLUMNS = ("kind", "in_update", "moves", "up", "down", "unchanged", "significant_losses", "mean_delta_pp",
                "languages", "languages_up", "languages_down")


def moves_by_kind(rows: list[dict]) -> list[dict]:
    """The moves counted per route kind and in-update or not: how many, how many went up, down or stayed (on test),
    how many lost significantly, and the mean test change. Strategies of one run often make the same move, so the
    moves are not independent: ``languages`` counts the distinct (run, language) pairs, and ``languages_up`` and
    ``languages_down`` those whose mean change over their moves is above or below 0."""
    groups: dict[tuple[str, bool], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["kind"], row["in_update"]), []).append(row)
    totals = []
    for (kind, in_update), group in sorted(groups.items()):
        pairs: dict[tuple[str, str], list[float]] = {}
        for row in group:
            pairs.setdefault((row["run"], row["language"]), []).append(row["delta_pp"])
        pair_means = [sum(deltas) / len(deltas) for deltas in pairs.values()]
        totals.append({"kind": kind, "in_update": in_update, "moves": len(group),
                       "up": sum(row["delta_pp"] > 0 for row in group),
                       "down": sum(row["delta_pp"] < 0 for row in group),
                       "unchanged": sum(row["delta_pp"] == 0 for row in group),
                       "significant_losses": sum(row["significant_loss"] for row in group),
                       "mean_delta_pp": sum(row["delta_pp"] for row in group) / len(group),
                       "languages": len(pairs), "languages_up": sum(m > 0 for m in pair_means),
                       "languages_down": sum(m < 0 for m in pair_means)})
    return totals


def overall(rows: list[dict]) -> list[dict]:
    """Per strategy and threshold over the runs given: how many runs lost a language, languages degraded (all runs
    together), languages improved and the aggregate against the reference (means over runs), moves reverted."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["min_gain"]), []).append(row)
    return [{"strategy": strategy, "min_gain": min_gain, "runs": len(group),
             "runs_with_a_loss": sum(row["n_degraded"] > 0 for row in group),
             "n_degraded": sum(row["n_degraded"] for row in group),
             "n_significant_degraded": sum(row["n_significant_degraded"] for row in group),
             "mean_improved": sum(row["n_improved"] for row in group) / len(group),
             "after_vs_reference_pp": sum(row["after_vs_reference_pp"] for row in group) / len(group),
             "moves_reverted": sum(row["moves_reverted"] for row in group)}
            for (strategy, min_gain), group in groups.items()]


def render(rows: list[dict], columns: tuple[str, ...]) -> str:
    def cell(key: str, value) -> str:
        if value is None:
            return "—"
        if key == "loss_magnitude_reduction":
            return f"{value:+.0%}"
        if key in ("improved_share_gain_pp", "after_vs_reference_pp", "mean_delta_pp"):
            return f"{value:+.2f}"
        if key == "mean_improved":
            return f"{value:.2f}"
        return f"{value:g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(key, row[key]) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished run folders (cml run, cml_quality.py)")
    parser.add_argument("--min-gain", nargs="+", type=float, default=[0, 1, 2, 3, 5],
                        help="dev gains (points of the primary metric) a route must reach over the previous model; "
                             "0 is the recorded gate")
    parser.add_argument("--strategies", nargs="+",
                        help="gated strategies to replay (default: every gated one); with --moves, those a run lacks "
                             "are skipped")
    parser.add_argument("--moves", action="store_true",
                        help="instead of replaying: the languages the recorded gate moved, counted by the kind of "
                             "route they took, and how they fared on test")
    parser.add_argument("--json", type=Path, help="also write the rows here (atomically)")
    args = parser.parse_args(argv)
    if any(gain < 0 for gain in args.min_gain):
        parser.error("--min-gain values must be >= 0")
    from cml.io import write_json

    if args.moves:
        rows = [row for run_dir in args.run_dirs for row in moves(run_dir, args.strategies)]
        totals = moves_by_kind(rows)
        print(render(totals, MOVE_COLUMNS))
        if args.json:
            write_json(args.json, {"runs": [str(run_dir) for run_dir in args.run_dirs],
                                   "strategies": args.strategies, "moves": rows, "by_kind": totals})
        return 0

    rows = [row for run_dir in args.run_dirs for row in replay(run_dir, args.min_gain, args.strategies)]
    print(render(rows, COLUMNS))
    totals = overall(rows)
    if len(args.run_dirs) > 1:
        print(f"\nOver the {len(args.run_dirs)} runs:\n")
        print(render(totals, tuple(totals[0])))
    if args.json:
        write_json(args.json, {"runs": rows, "overall": totals})
    return 0


if __name__ == "__main__":
    from cml.errors import exit_on_user_error

    with exit_on_user_error():
        sys.exit(main())

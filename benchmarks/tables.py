"""Markdown tables from measured JSON that the benchmark scripts themselves do not print (issue 32, item 5).

    python benchmarks/tables.py targets   # v1 quality: the paper's targets over the seeds, from <benchmark>-full.json
    python benchmarks/tables.py scale     # the 205-language scale benchmark, from scale.json
    python benchmarks/tables.py v2-headline   # the README's results: per v2 stream, from v2-<stream>.json
    python benchmarks/tables.py gate-moves    # the gate's moves by route kind, from v2-gate-moves.json
    python benchmarks/tables.py v2-cost       # what re-running the v2 benchmark costs, from v2-<stream>.json

Reads ``benchmarks/results/*.json`` (and, for ``v2-cost``, the v2 suite's manifest) only, no torch, so it runs in
well under a second. The tables are
quoted in docs/benchmarks.md and the README between generated-block markers; ``python benchmarks/docs.py`` writes them there and
``--check`` fails when they differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from cml.evaluation.cml_metrics import REFERENCE

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:  # the quality package lies beside this script, which tests load by path
    sys.path.insert(0, str(REPO / "benchmarks"))

from quality.suite import SEEDS, SUITE_V2, benchmarks_of, load_suite  # noqa: E402
from quality.tables import mean_and_std  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
QUALITY = ("sib200", "pud_pos", "lemmatization")  # v1's benchmarks, in the order of suite.yaml
STREAM_NAMES = {"sib200": "SIB-200", "pud_pos": "PUD POS", "lemmatization": "lemmatisation"}
VARIANTS = ("laft_uriel", "laft_uriel_c90", "laft_uriel_cap4")  # the columns of met / checked, in this order
V2_STREAMS = {"ud_pos": "UD POS", "pud_pos": "PUD POS", "lemmatization": "lemmatisation"}  # suite_v2.yaml's order
V2_BUDGET_HOURS = 8  # issue 30: the full v2 benchmark re-runs in at most 8 hours of CPU


def load(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path.relative_to(REPO)} is absent: run the benchmark that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def mean(figures: dict, name: str) -> float | None:
    figure = figures.get(name)
    return None if figure is None else figure["mean"]


def targets_table(results: Path = RESULTS) -> list[str]:
    """Per v1 stream: ``laft_uriel``'s figures behind the paper's targets (mean over the seeds that ran it), how many
    of the checks each of its variants meets (the ``targets`` the benchmark recorded), and the best strategy other
    than full fine-tuning by aggregate."""
    header = ["stream", "improved vs FT (pp)", "loss reduction", "degraded (FT)", "after - FT (pt)",
              *(f"`{v}`" if v == VARIANTS[0] else f"`{v.removeprefix(VARIANTS[0])}`" for v in VARIANTS),
              "best aggregate"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 2) + "---|"]
    totals = dict.fromkeys(VARIANTS, 0), dict.fromkeys(VARIANTS, 0)
    for benchmark in QUALITY:
        for stream in load(results / f"{benchmark}-full.json")["streams"]:
            strategies, kind = stream["strategies"], stream["update_kind"]
            laft, reference = strategies[VARIANTS[0]], strategies[REFERENCE]
            share = loss = ""
            if kind == "subset":  # the improved share and the loss reduction are targets on subset streams only
                share = f"{mean(laft, 'improved_share_gain_pp'):+.1f}"
                loss = f"{mean(laft, 'loss_magnitude_reduction'):.0%}"
            degraded = f"{mean(laft, 'n_degraded'):.1f} ({mean(reference, 'n_degraded'):.1f})"
            gap = laft["aggregate_after_vs_reference_pp"]
            gap_text = f"{gap['mean']:+.2f} ± {gap['std']:.2f}" if gap.get("std") is not None else f"{gap['mean']:+.2f}"
            checks = []
            for variant in VARIANTS:
                judged = [c for c in stream["targets"] if c["strategy"] == variant and c["met"] is not None]
                met = sum(bool(c["met"]) for c in judged)
                totals[0][variant] += met
                totals[1][variant] += len(judged)
                checks.append(f"{met} / {len(judged)}" if judged else "—")
            best = max((s for s in strategies if s != REFERENCE),
                       key=lambda s: mean(strategies[s], "aggregate_after_vs_reference_pp"))
            best_text = f"{best} {mean(strategies[best], 'aggregate_after_vs_reference_pp'):+.2f}"
            lines.append("| " + " | ".join([f"{STREAM_NAMES[benchmark]} {kind}", share, loss, degraded,
                                             gap_text, *checks, best_text]) + " |")
    lines += ["", "Checks met over the six streams: " + ", ".join(
        f"`{v}` {totals[0][v]} of {totals[1][v]}" for v in VARIANTS) + "."]
    return lines


def seconds(value: float) -> str:
    """One decimal from a second up, two significant digits below."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def scale_table(results: Path = RESULTS) -> list[str]:
    """The scale benchmark's phases (seconds, peak resident memory), routing and typology coverage, from scale.json."""
    report = load(results / "scale.json")
    phases, routing, grouping = report["phases"], report["routing"], report["grouping"]
    coverage = report["typology"]["coverage"]
    n = report["languages"]
    counts = sorted(grouping, key=int)

    def both(key: str, field: str = "seconds", form=seconds) -> str:
        return " / ".join(form(phases[f"{key} {k}"][field]) for k in counts)

    def rss(key: str) -> str:
        return f"{phases[key]['peak_rss_mib']:.0f}"

    best = routing["best_seconds"]
    rows = [
        ("phase", "seconds", "peak RSS (MiB)", "note"),
        (f"read {n} languages", seconds(phases["read"]["seconds"]), rss("read"), phases["read"]["note"]),
        ("typology, cold", seconds(phases["typology cold"]["seconds"]), rss("typology cold"),
         f"{n} x {n} URIEL distance matrix; {phases['typology cold']['note']}"),
        ("typology, warm", seconds(phases["typology warm"]["seconds"]), rss("typology warm"),
         f"{phases['typology warm']['note']} ({report['typology']['cache_bytes'] / 2**20:.1f} MiB)"),
        ("typology, recomputed in memory", seconds(phases["typology recompute"]["seconds"]),
         rss("typology recompute"),
         f"{phases['typology recompute']['note']} ({phases['typology recompute']['tracemalloc_peak_mib']:.1f} MiB "
         "traced)"),
        (f"group into {' / '.join(counts)} groups", both("group"), rss(f"group {counts[-1]}"),
         "average linkage; largest group " + " / ".join(str(max(grouping[k]["sizes"])) for k in counts) + "; "
         + " / ".join(str(grouping[k]["singletons"]) for k in counts) + " singletons"),
        (f"nearest group of all {n} languages", both("nearest"), rss(f"nearest {counts[-1]}"),
         " / ".join(str(grouping[k]["nearest_is_own_group"]) for k in counts) + " find their own group"),
        (f"{routing['adapters']} LoRA modules (PEFT) on the tiny model", seconds(phases["adapters"]["seconds"]),
         rss("adapters"), f"{routing['lora_parameters_per_module']:,} LoRA parameters a module"),
        (f"routed inference, {routing['examples']} examples in batches of {routing['batch_size']}",
         f"{best['routed mixed']:.2f} vs {best['plain']:.2f} plain", rss("inference"),
         f"{routing['mean_routes_per_mixed_batch']:.1f} routes per mixed batch; batched by route "
         f"{best['routed by route']:.2f}"),
    ]
    lines = ["| " + " | ".join(rows[0]) + " |", "|---|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    per_kind = coverage["per_kind"]
    lines += ["", f"Routed over plain inference: {routing['routed_over_plain']:.1f}x on mixed batches, "
              f"{routing['routed_by_route_over_plain']:.1f}x batched by route; switching the active adapter set "
              f"{routing['activate_ms']:.1f} ms; routed rows equal each group run alone: "
              f"{'yes' if routing['check']['passed'] else 'NO'}. Typology coverage (under "
              f"{coverage['threshold']:.0%} of a kind's features): {coverage['low_in_any_chosen_kind']} of {n} "
              "languages in some default kind (" + ", ".join(
                  f"{kind} {per_kind[kind]['low']}, {per_kind[kind]['none']} with none"
                  for kind in coverage["kinds"] if per_kind[kind]["low"]) + f"); "
              f"{len(coverage['filled_from_macrolanguage'])} fill gaps from their macrolanguage's entry. "
              f"{report['machine']['cpus']} CPUs, torch threads {report['machine']['torch_threads']}."]
    return lines


def v2_headline_table(results: Path = RESULTS) -> list[str]:
    """Per v2 stream measured: how many languages full fine-tuning degraded significantly on each seed (the
    problem), then two rows against it: the strategy the project recommends (the JSON's ``default_strategy``) and
    the best protector, the highest aggregate among the strategies that ran on every one of the stream's seeds and
    degraded no language significantly on any (``none`` where there is none). Named below the table: the seeds
    where the problem is absent, the strategies that ran on fewer seeds, the updates of every language (which need
    no problem, so are left out) and the streams not measured yet."""
    header = ["stream", "seeds", "FT sig. degraded", "strategy", "sig. degraded", "sig. improved",
              "after - FT (pt)", "improved vs FT (pp)", "loss reduction vs FT"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---|" + "---:|" * (len(header) - 4)]
    missing, partial, absent, default, every_language = [], {}, {}, None, []
    for benchmark, title in V2_STREAMS.items():
        path = results / f"v2-{benchmark}.json"
        if not path.is_file():
            missing.append(title)
            continue
        table = load(path)
        default, marked = table["default_strategy"], set(table["added_after_results"])
        for stream in table["streams"]:
            if not (stream.get("problem") or {}).get("required", True):
                every_language.append(f"{title} {stream['update_kind']}")
                continue
            seeds, strategies = stream["seeds"], stream["strategies"]
            per_seed = [stream["per_seed"][str(seed)] for seed in seeds]
            problem_seeds = (stream.get("problem") or {}).get("per_seed") or {}
            absent_on = [str(seed) for seed in seeds if problem_seeds.get(str(seed), {}).get("present") is False]
            if absent_on:
                absent[f"{title} {stream['update_kind']}"] = absent_on
            ran = {name: [seed for seed, rows in zip(seeds, per_seed) if name in rows] for name in strategies}
            for name, on in ran.items():
                if len(on) < len(seeds):
                    partial.setdefault(f"{title} {stream['update_kind']}", []).append(
                        f"`{name}` (seed{'s' if len(on) > 1 else ''} {' '.join(map(str, on))})")
            everywhere = [name for name, on in ran.items()
                          if name not in table["references"] and len(on) == len(seeds)
                          and all(rows[name].get("n_significant_degraded") == 0 for rows in per_seed)]
            best = max(everywhere, key=lambda name: strategies[name]["versus"][REFERENCE]["aggregate_after_pp"]["mean"],
                       default=None)
            for role, name in (("default", default), ("best protector", best)):
                # a row's seeds are those its strategy ran on, and full fine-tuning's losses are those seeds' too
                row_seeds = ran.get(name) or seeds
                problem = ", ".join(str(problem_seeds.get(str(seed), {}).get("n_significant_degraded", "?"))
                                    for seed in row_seeds)
                cells = [f"{title} {stream['update_kind']}", " ".join(map(str, row_seeds)), problem]
                if name not in strategies:
                    lines.append("| " + " | ".join([*cells, f"{role}: " + ("none" if name is None else
                                                                           f"`{name}` not run"), *[""] * 5]) + " |")
                    continue
                figures, versus = strategies[name], strategies[name].get("versus", {}).get(REFERENCE, {})
                label = f"{role}: `{name}`" + (" †" if name in marked else "")
                lines.append("| " + " | ".join([
                    *cells, label, spread(figures.get("n_significant_degraded"), "{:.1f}"),
                    spread(figures.get("n_significant_improved"), "{:.1f}"),
                    spread(versus.get("aggregate_after_pp"), "{:+.2f}"),
                    spread(versus.get("improved_share_gain_pp"), "{:+.1f}"),
                    spread(versus.get("loss_magnitude_reduction"), "{:.0%}")]) + " |")
    if default is not None:
        lines += ["", f"FT: `{REFERENCE}`. Mean ± std over the seeds; † a variant added after seeing results. The "
                      f"paper's figures for LAFT-URIEL against full fine-tuning: +25 pp improved share, 78% loss "
                      f"reduction (mean loss magnitude)."]
    if absent:
        lines += ["", "The problem is absent (full fine-tuning degraded fewer than 3 languages significantly), so these "
                      "rows cannot judge a strategy, on: " + "; ".join(
                          f"{stream} (seed{'s' if len(on) > 1 else ''} {' '.join(on)})" for stream, on in absent.items())
                  + "."]
    if partial:
        lines += ["", "Run on fewer seeds, so not candidates for best protector: " + "; ".join(
            f"{stream}: {', '.join(names)}" for stream, names in partial.items()) + "."]
    if every_language:
        lines += ["", "Updates of every language, judged by the default's own bar (docs/benchmarks.md, the v2 "
                      "tables), are not in this table: " + ", ".join(every_language) + "."]
    if missing:
        lines += ["", "Not measured yet: " + ", ".join(missing) + "."]
    return lines


def gate_moves_table(results: Path = RESULTS) -> list[str]:
    """The v2 runs' gate moves by the kind of route taken, from v2-gate-moves.json (``gate_replay.py --moves``)."""
    report = load(results / "v2-gate-moves.json")
    kinds = {"own": "own group's module", "nearest": "nearest group's module (borrowed)",
             "shared": "shared module alone (borrowed)"}
    lines = ["| route taken | language in the update | moves | up | down | unchanged | significant losses | "
             "mean test change (pt) | distinct (run, language) | of which up / down on average |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in report["by_kind"]:
        lines.append(f"| {kinds.get(row['kind'], row['kind'])} | {'yes' if row['in_update'] else 'no'} | {row['moves']} "
                     f"| {row['up']} | {row['down']} | {row['unchanged']} | {row['significant_losses']} | "
                     f"{row['mean_delta_pp']:+.2f} | {row['languages']} | {row['languages_up']} / "
                     f"{row['languages_down']} |")
    strategies = sorted({move["strategy"] for move in report["moves"]})
    lines += ["", f"Over {len(report['runs'])} runs ({', '.join(Path(run).name for run in report['runs'])}) and their "
                  f"gated strategies ({', '.join(f'`{name}`' for name in strategies)}); the first update only. "
                  "Strategies of one run often make the same move, so the moves are not independent; the last two "
                  "columns count each run's language once."]
    return lines


def v2_cost_table(results: Path = RESULTS, suite: Path = SUITE_V2) -> list[str]:
    """What re-running the v2 benchmark as ``suite`` configures it costs, from the CPU seconds each stage recorded
    (its update and test evaluation): per stream (benchmark and update kind) and strategy the median over the seeds
    that recorded it, then per benchmark its stage 0 (shared by its update kinds) plus every stream's strategies,
    times the seeds of a full run. Stages without a record make the total a lower bound, and are named."""
    manifest = load_suite(suite)
    plan = {(name, kind): bench["strategies"] or manifest["strategies"]
            for name, bench in benchmarks_of(manifest).items() for kind in bench["update_kinds"]}
    # the update kinds of a benchmark share one stage 0: its cost is counted once, from the first kind's stream
    first_kind = {name: next(iter(bench["update_kinds"])) for name, bench in benchmarks_of(manifest).items()}
    costs, stage0 = {}, {}
    for benchmark, bench in benchmarks_of(manifest).items():
        path = results / f"v2-{benchmark}.json"
        streams = {stream["update_kind"]: stream for stream in load(path)["streams"]} if path.is_file() else {}
        first = streams.get(first_kind[benchmark], {})
        stage0[benchmark] = [curve["stage_cpu_seconds"] for curve in (first.get("stage0") or {}).values()
                             if curve.get("stage_cpu_seconds") is not None]
        for kind in bench["update_kinds"]:
            per_seed = streams.get(kind, {}).get("per_seed", {})
            costs[benchmark, kind] = {name: [rows[name]["stage_cpu_seconds"] for rows in per_seed.values()
                                             if (rows.get(name) or {}).get("stage_cpu_seconds") is not None]
                                      for name in plan[benchmark, kind]}

    def minutes(values: list[float]) -> str:
        return f"{statistics.median(values) / 60:.1f} ({len(values)})" if values else "—"

    titles = [f"{V2_STREAMS.get(b, b)} {kind}" for b, kind in plan]
    names = list(dict.fromkeys(name for names in plan.values() for name in names))
    lines = ["| strategy | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(plan),
             "| stage 0 | " + " | ".join(minutes(stage0[b]) if kind == first_kind[b] else "shared"
                                         for b, kind in plan) + " |"]
    lines += ["| " + " | ".join([f"`{name}`", *(minutes(costs[stream][name]) if name in plan[stream] else "not planned"
                                               for stream in plan)]) + " |" for name in names]
    known = [statistics.median(values) for values in stage0.values() if values]
    known += [statistics.median(values) for stream in costs.values() for values in stream.values() if values]
    unknown = [f"{b} stage 0" for b, values in stage0.items() if not values]
    unknown += [f"{b} {kind} {name}" for (b, kind), stream in costs.items() for name, values in stream.items()
                if not values]
    hours = len(SEEDS) * sum(known) / 3600
    lines += ["", "CPU minutes per stream and seed (median over the seeds recorded, their number in brackets): each "
                  "stage's update (training, and a gate's dev scoring) and test evaluation, at the torch threads its "
                  "run used (`runs[].machine.torch_threads` in the results file). Left out, as each run's own: reading "
                  "and tokenising the data, building the model, the bootstrap summary (about 10 CPU s for a run whose "
                  "stages are all reused)."]
    if not known:
        lines += ["", f"No stage of `{suite.name}`'s streams recorded its cost yet: what a full run costs is not "
                      "known."]
        return lines
    lines += ["", f"The benchmark as `{suite.name}` configures it, seeds {' '.join(map(str, SEEDS))}: "
                  f"{'at least ' if unknown else ''}{hours:.1f} CPU hours (budget {V2_BUDGET_HOURS}), about "
                  f"{hours / 2:.1f} h of wall time as two one-thread jobs on 2 cores."]
    default = manifest["default_strategy"]
    default_costs = [stream[default] for stream in costs.values() if default in stream]
    if default_costs:
        # stage 0 and every other strategy's stages are kept in the run folders and reused: a change to one method
        # re-runs that method's stages alone
        partial = any(not values for values in default_costs)
        default_hours = len(SEEDS) * sum(statistics.median(values) for values in default_costs if values) / 3600
        lines += ["", f"A change to one method re-runs only its own stages (stage 0 and the other strategies' stages "
                      f"are reused from the run folders): the default, `{default}`, costs "
                      f"{'at least ' if partial else ''}{default_hours:.1f} CPU hours over the streams that run it "
                      f"({len(default_costs)}), seeds {' '.join(map(str, SEEDS))}."]
    if unknown:
        lines += ["", "Not recorded (stages run before their cost was recorded, or resumed from a checkpoint another "
                      "process wrote): " + ", ".join(unknown) + "."]
    return lines


def spread(figure: dict | None, form: str) -> str:
    """A figure over seeds as the quality tables write it (``mean ± std``), ``—`` where it is undefined."""
    return "—" if figure is None or figure.get("mean") is None else mean_and_std(figure, 1, form)


TABLES = {"targets": targets_table, "scale": scale_table, "v2-headline": v2_headline_table,
          "gate-moves": gate_moves_table, "v2-cost": v2_cost_table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=list(TABLES))
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON tables are")
    args = parser.parse_args(argv)
    print("\n".join(TABLES[args.table](args.results_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

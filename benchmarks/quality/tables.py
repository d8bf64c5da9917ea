"""The results tables printed: the headline table (terminal or Markdown), a named suite's Markdown tables, and
which strategies others dominate."""

from __future__ import annotations

import sys

from cml.evaluation.cml_metrics import REFERENCE

from .figures import TOTAL_LOSS
from .streams import ALL_LANGUAGES_AGGREGATE_PP, RULES, all_languages_check

# The headline table's columns: header, figure, scale, format.
COLUMNS = (("improved", "n_improved", 1, "{:.1f}"), ("degraded", "n_degraded", 1, "{:.1f}"),
           ("sig. degraded", "n_significant_degraded", 1, "{:.1f}"),
           ("improved vs FT (pp)", "improved_share_gain_pp", 1, "{:+.1f}"),
           ("loss reduction vs FT", "loss_magnitude_reduction", 100, "{:+.0f}%"),
           ("mean loss (pt)", "mean_loss_magnitude", 100, "{:.2f}"), ("mean Δ (pt)", "mean_delta", 100, "{:+.2f}"),
           ("after - FT after (pt)", "aggregate_after_vs_reference_pp", 1, "{:+.2f}"),
           ("train s", "train_seconds", 1, "{:.0f}"))
# The figures that compare a strategy with the reference: "—" on the reference's own row.
AGAINST_REFERENCE = {"improved_share_gain_pp", "loss_magnitude_reduction", "aggregate_after_vs_reference_pp"}
# A named suite's columns: header, figure (a dotted path in a strategy's figures), scale, format.
V2_COLUMNS = (("improved", "n_improved", 1, "{:.1f}"), ("degraded", "n_degraded", 1, "{:.1f}"),
              ("sig. improved", "n_significant_improved", 1, "{:.1f}"),
              ("sig. degraded", "n_significant_degraded", 1, "{:.1f}"),
              ("mean loss (pt)", "mean_loss_magnitude", 100, "{:.2f}"), ("total loss (pt)", TOTAL_LOSS, 100, "{:.1f}"),
              ("after", "aggregate_after", 100, "{:.1f}"),
              ("after - FT (pt)", f"versus.{REFERENCE}.aggregate_after_pp", 1, "{:+.2f}"),
              ("after - no_update (pt)", "versus.no_update.aggregate_after_pp", 1, "{:+.2f}"),
              ("improved vs FT (pp)", "improved_share_gain_pp", 1, "{:+.1f}"),
              ("loss reduction vs FT", "loss_magnitude_reduction", 100, "{:+.0f}%"),
              ("train s", "train_seconds", 1, "{:.0f}"))
# Where one strategy dominates another on a stream: at least as high an aggregate after the update, and no more
# languages significantly degraded and no larger mean loss (means over seeds).
DOMINANCE = (("aggregate_after", ">="), ("n_significant_degraded", "<="), ("mean_loss_magnitude", "<="))


def mean_and_std(value: dict, scale: float, fmt: str) -> str:
    """A figure over seeds as a cell: "mean ± std", the mean alone where one seed gave no std."""
    mean = fmt.format(scale * value["mean"])
    return mean if value["std"] is None else f"{mean} ± {fmt.format(scale * value['std']).lstrip('+')}"


def seeds_of(stream: dict, strategy: str) -> str:
    """The seeds that ran ``strategy`` on ``stream``, as a cell."""
    return " ".join(seed for seed, rows in stream["per_seed"].items() if strategy in rows)


def table_rows(stream: dict) -> list[list[str]]:
    """A stream's headline rows: strategy, the seeds that ran it, then ``COLUMNS`` as "mean ± std" over those seeds
    ("—" where a figure is undefined, and for the reference against itself)."""
    def cell(strategy: str, figures: dict, key: str, scale: float, fmt: str) -> str:
        if (strategy == REFERENCE and key in AGAINST_REFERENCE) or figures.get(key) is None:
            return "—"
        return mean_and_std(figures[key], scale, fmt)

    return [[strategy, seeds_of(stream, strategy)] + [cell(strategy, figures, key, scale, fmt)
                                                      for _, key, scale, fmt in COLUMNS]
            for strategy, figures in stream["strategies"].items()]


def render(report: dict) -> None:
    """A table on the terminal, with the paper's targets checked below it; a named suite's as Markdown (it has
    more columns than a terminal table holds)."""
    from rich.console import Console
    from rich.table import Table

    if report.get("suite"):
        render_markdown(report)
        return
    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"{report['benchmark']} ({report['mode']}): mean ± std over seeds, against {REFERENCE}")
    for column in ("kind", "strategy", "seeds", *(header for header, *_ in COLUMNS)):
        table.add_column(column, justify="left" if column in ("kind", "seeds", "strategy") else "right")
    for stream in report["streams"]:
        for row in table_rows(stream):
            table.add_row(stream["update_kind"], *row)
    console.print(table)
    for stream in report["streams"]:
        for check in stream["targets"]:
            if check["met"] is None:
                console.print(f"{check['strategy']} {stream['update_kind']}: {check['figure']} undefined on this "
                              f"stream ({REFERENCE} lost nothing)")
                continue
            mark = "[green]met[/green]" if check["met"] else "[red]MISSED[/red]"
            console.print(f"{check['strategy']} {stream['update_kind']}: {check['figure']} = {check['value']:.3g} "
                          f"(target {check['rule']} {check['target']:.3g}): {mark}")


def render_markdown(report: dict) -> None:
    """The headline table as Markdown, one table a stream (the form docs/benchmarks.md quotes); a named suite's
    tables (``v2_lines``)."""
    if report.get("suite"):
        print("\n".join(v2_lines(report)))
        return
    headers = ["strategy", "seeds"] + [header for header, *_ in COLUMNS]
    for stream in report["streams"]:
        print(f"\n**{report['benchmark']}, kind `{stream['update_kind']}`** ({report['mode']}; mean ± std over seeds "
              f"against {REFERENCE})\n")
        print("| " + " | ".join(headers) + " |")
        print("|---|---|" + "---:|" * len(COLUMNS))
        for row in table_rows(stream):
            print("| " + " | ".join(row) + " |")


def figure_at(figures: dict, path: str):
    """The value at a dotted path of a strategy's figures (``versus.no_update.aggregate_after_pp``), else None."""
    for part in path.split("."):
        if not isinstance(figures, dict) or part not in figures:
            return None
        figures = figures[part]
    return figures


def v2_table(report: dict, stream: dict, metric: str | None) -> list[str]:
    """One Markdown table of a named suite's stream: the primary metric's figures (``metric`` None) or another
    metric's; references, the default strategy and variants added after seeing results marked in the first column."""
    references, default = report.get("references", []), report.get("default_strategy")
    late, retired = set(report.get("added_after_results", [])), set(report.get("retired", []))
    columns = [c for c in V2_COLUMNS if metric is None or c[1] != "train_seconds"]

    def cell(strategy: str, figures: dict, key: str, scale: float, fmt: str) -> str:
        against = (key.split(".")[1] if key.startswith("versus.") else
                   REFERENCE if key in AGAINST_REFERENCE else None)
        value = figure_at(figures if metric is None else figures.get("metrics", {}).get(metric, {}), key)
        if strategy == against or not isinstance(value, dict):
            return "—"
        return mean_and_std(value, scale, fmt)

    def label(strategy: str) -> str:
        marks = (["reference"] if strategy in references else []) + (["default"] if strategy == default else []) \
            + (["retired"] if strategy in retired else [])
        text = f"**{strategy}**" if strategy == default else strategy
        return text + (" †" if strategy in late else "") + (f" ({', '.join(marks)})" if marks else "")

    lines = ["| " + " | ".join(["strategy", "seeds"] + [header for header, *_ in columns]) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for strategy, figures in stream["strategies"].items():
        lines.append("| " + " | ".join([label(strategy), seeds_of(stream, strategy)]
                                       + [cell(strategy, figures, key, scale, fmt)
                                          for _, key, scale, fmt in columns]) + " |")
    return lines


def v2_lines(report: dict) -> list[str]:
    """A named suite's tables as Markdown: per stream, what full fine-tuning degraded per seed (the problem),
    stage 0's dev curve per seed, then one table for the primary metric and one per other metric."""
    lines = []
    for stream in report["streams"]:
        primary = report.get("primary_metric") or "primary metric"
        seeds = stream["seeds"]
        lines += ["", f"**{report['suite']} `{report['benchmark']}`, update kind `{stream['update_kind']}`** "
                  f"({report['mode']}; {len(seeds)} seed{'s' if len(seeds) != 1 else ''}: "
                  f"{' '.join(map(str, seeds))}; mean ± std over seeds; primary metric: {primary})", ""]
        check = stream.get("problem") or {}
        per_seed = check.get("per_seed", {})
        said = "; ".join(f"seed {seed}: {entry['n_significant_degraded']} "
                         f"({', '.join(entry['languages']) or 'none'}; outside the update: "
                         f"{', '.join(entry['outside_update']) or 'none'})" for seed, entry in per_seed.items())
        verdict = "present" if check.get("present") else "ABSENT"
        line = f"Languages {REFERENCE} degraded significantly (95% paired bootstrap): {said}. "
        if check.get("required", True):
            line += f"Problem ({check.get('rule', '')}): {verdict}."
        else:
            line += "Every language gets new data, so no problem is required here."
            if (bar := all_languages_check(stream["strategies"], report.get("default_strategy"))) is not None:
                line += (f" The default `{bar['strategy']}` (bar: no more languages degraded than {REFERENCE}, an "
                         f"aggregate within {-ALL_LANGUAGES_AGGREGATE_PP} pt of it): {bar['n_degraded']:.1f} degraded "
                         f"against {bar['reference_n_degraded']:.1f}, after - FT {bar['after_vs_reference_pp']:+.2f} "
                         f"pt: {'met' if bar['met'] else 'NOT met'}.")
        lines.append(line)
        curves = []
        for seed, curve in (stream.get("stage0") or {}).items():
            points = " ".join(f"{100 * value:.1f}" for value in curve["dev_history"])
            stop = ("early stop" if curve["early_stopped"] else "epoch limit")
            curves.append(f"seed {seed}: {points} (best epoch {curve['best_epoch']} of {curve['epochs_run']} run, "
                          f"{curve['epochs_allowed']} allowed; {stop})")
        if curves:
            lines += ["", f"Stage-0 dev {primary} per epoch (x100): " + "; ".join(curves) + "."]
        runs = "; ".join(f"`{run['command']}`, {run['wall_seconds'] / 60:.1f} min wall"
                         + (f" ({run['cpu_seconds'] / 60:.1f} min CPU)" if run.get("cpu_seconds") else "")
                         + f" on {run['machine']['cpus']} "
                         f"CPUs (seeds {', '.join(run['strategies'])}: {len(next(iter(run['strategies'].values())))} "
                         "strategies)" for run in stream["runs"])
        lines += ["", f"Runs: {runs}."]
        lines += [""] + v2_table(report, stream, None)
        metrics = next(iter(stream["strategies"].values()), {}).get("metrics", {})
        for metric in metrics:
            if metric == report.get("primary_metric"):
                continue
            lines += ["", f"Metric `{metric}` (not the primary one):", ""] + v2_table(report, stream, metric)
    lines += ["", f"References: {REFERENCE} (every parameter trained on the update) and no_update (the previous "
              "model kept as is). " + (f"**{report['default_strategy']}** is the strategy the project recommends. "
                                       if report.get("default_strategy") else "")
              + ("† a variant added after seeing results. " if report.get("added_after_results") else "")
              + ("Retired: no longer run by a full run (dominated on every stream that ran it); its rows are kept. "
                 if report.get("retired") else "")
              + "Points are x100 of the metric; `after - X` is the aggregate after the update minus X's."]
    return lines


def dominated_by(strategies: dict[str, dict]) -> dict[str, list[str]]:
    """{strategy: the strategies of the same stream that dominate it (``DOMINANCE``)}."""
    def mean(strategy: str, figure: str):
        return (strategies[strategy].get(figure) or {}).get("mean")

    def dominates(other: str, strategy: str) -> bool:
        pairs = [(mean(other, figure), mean(strategy, figure), rule) for figure, rule in DOMINANCE]
        return all(a is not None and b is not None and RULES[rule](a, b) for a, b, rule in pairs)

    return {strategy: [other for other in strategies if other != strategy and dominates(other, strategy)]
            for strategy in strategies}


def dominance_lines(streams: dict[str, dict], kind: str) -> list[str]:
    """A Markdown table: per strategy, on which of the measured streams of update kind ``kind`` (``streams``:
    {benchmark: its stream of that kind}) another strategy dominates it, and by which: how the v2 suite's strategies
    were cut."""
    verdicts = {name: dominated_by(stream["strategies"]) for name, stream in streams.items()}
    labels = list(dict.fromkeys(label for stream in streams.values() for label in stream["strategies"]))
    lines = ["| strategy | dominated on | " + " | ".join(f"{name} `{kind}`: dominated by" for name in streams) + " |",
             "|---|---:|" + "---|" * len(streams)]
    for label in labels:
        cells = [", ".join(verdicts[name][label]) or "—" if label in verdicts[name] else "not run"
                 for name in streams]
        count = sum(bool(verdicts[name].get(label)) for name in streams)
        lines.append(f"| {label} | {count} of {sum(label in verdicts[name] for name in streams)} | "
                     + " | ".join(cells) + " |")
    return lines

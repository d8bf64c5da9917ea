"""The report's figures as PNG bytes: matplotlib's object API on the Agg canvas (no pyplot, so no global
backend or figure state is touched), rendered the same way every time for the same input."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

CATEGORY_COLOURS = {"in_update": "#1f77b4", "neighbour": "#ff7f0e", "far": "#8c8c8c"}
CATEGORY_LABELS = {"in_update": "trained in the update", "neighbour": "typological neighbour", "far": "far"}
MARKERS = "osD^vP*X"
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}
_ANNOTATED_CELLS = 40  # languages per heatmap row up to which each cell shows its score


def _png(draw: Callable[[Figure], None], width: float, height: float) -> bytes:
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure)
        buffer = io.BytesIO()
        # No "Software" entry: the PNG then depends on the data only, not on the matplotlib version.
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _width(n_languages: int) -> float:
    return min(20.0, max(6.0, 0.45 * n_languages + 2))


def _whiskers(changes: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Error bar lengths below and above each delta, in points. Clipped at 0: rounding can leave a delta a hair
    outside its interval, and matplotlib rejects negative lengths."""
    return np.clip([[100 * (change["delta"] - change["ci_low"]) for change in changes],
                    [100 * (change["ci_high"] - change["delta"]) for change in changes]], 0, None)


def delta_chart(changes: Mapping[str, Mapping[str, Mapping[str, Any]]], languages: Sequence[str],
                metric: str) -> bytes:
    """One panel per strategy ({strategy: {language: change}}): each language's delta in points with its 95%
    interval as whiskers, coloured by category; update languages' names in bold."""
    def draw(figure: Figure) -> None:
        axes = figure.subplots(len(changes), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
        x = np.arange(len(languages))
        for ax, (strategy, by_language) in zip(axes, changes.items()):
            rows = [by_language[lang] for lang in languages]
            delta = np.array([100 * row["delta"] for row in rows])
            ax.bar(x, delta, color=[CATEGORY_COLOURS[row["category"]] for row in rows], width=0.7)
            ax.errorbar(x, delta, yerr=_whiskers(rows), fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_title(strategy, loc="left")
            ax.set_ylabel(f"Δ {metric} (pt)")
            ax.grid(axis="y", linewidth=0.3)
        axes[-1].set_xticks(x, languages, rotation=90 if len(languages) > 12 else 0)
        updated = {lang for by_language in changes.values() for lang, row in by_language.items()
                   if row["category"] == "in_update"}
        for label in axes[-1].get_xticklabels():
            label.set_fontweight("bold" if label.get_text() in updated else "normal")
        handles = [Patch(color=colour, label=CATEGORY_LABELS[category])
                   for category, colour in CATEGORY_COLOURS.items()]
        figure.legend(handles=handles, loc="outside upper right", ncols=3, frameon=False)

    return _png(draw, _width(len(languages)), 1.2 + 2.2 * len(changes))


def score_heatmap(stages: Mapping[str, Sequence[Mapping[str, Any]]], languages: Sequence[str], metric: str) -> bytes:
    """One panel per strategy ({strategy: stage records}): stages × languages, the primary metric in points; the
    languages each update stage trained on are outlined."""
    low = min(100 * record["scores"][lang] for records in stages.values() for record in records for lang in languages)
    high = max(100 * record["scores"][lang] for records in stages.values() for record in records for lang in languages)

    def draw(figure: Figure) -> None:
        axes = figure.subplots(len(stages), 1, squeeze=False)[:, 0]
        for ax, (strategy, records) in zip(axes, stages.items()):
            values = np.array([[100 * record["scores"][lang] for lang in languages] for record in records])
            image = ax.imshow(values, cmap="viridis", vmin=low, vmax=high, aspect="auto")
            ax.set_yticks(range(len(records)), [record["name"] for record in records])
            ax.set_xticks(range(len(languages)), languages, rotation=90 if len(languages) > 12 else 0)
            ax.set_title(strategy, loc="left")
            ax.spines[:].set_visible(False)
            for row, record in enumerate(records):
                for column, lang in enumerate(languages):
                    if record["index"] > 0 and lang in record["updated_languages"]:
                        ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False,
                                                                  edgecolor="white", linewidth=2))
                    if len(languages) <= _ANNOTATED_CELLS:
                        dark = image.norm(values[row, column]) < 0.6  # viridis is dark below ~60%
                        ax.text(column, row, f"{values[row, column]:.1f}", ha="center", va="center", fontsize=8,
                                color="white" if dark else "black")
        figure.colorbar(image, ax=list(axes), label=f"{metric} (pt)", shrink=0.9)

    n_stages = max(len(records) for records in stages.values())
    return _png(draw, _width(len(languages)) + 1, 0.6 + len(stages) * (0.8 + 0.4 * n_stages))


def dendrogram_chart(linkage: np.ndarray, languages: Sequence[str], group_of: Mapping[str, int],
                     updated: set[str], cut: float | None) -> bytes:
    """The average-linkage tree over ``languages`` (the linkage's leaf order), leaves coloured by group, update
    languages in bold, and the height at which the groups were cut, when they come from this tree."""
    from scipy.cluster.hierarchy import dendrogram

    tree = dendrogram(linkage, labels=list(languages), no_plot=True)
    groups = sorted(set(group_of.values()))
    palette = matplotlib.colormaps["tab10"]
    colour = {group: palette(position % 10) for position, group in enumerate(groups)}

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        for xs, ys in zip(tree["icoord"], tree["dcoord"]):
            ax.plot(ys, xs, color="#444444", linewidth=1)  # horizontal tree: leaves on the y axis
        leaves = tree["ivl"]
        ax.set_yticks(5 + 10 * np.arange(len(leaves)), leaves)
        for label in ax.get_yticklabels():
            lang = label.get_text()
            label.set_color(colour[group_of[lang]] if lang in group_of else "black")
            label.set_fontweight("bold" if lang in updated else "normal")
        handles = [Line2D([], [], color=colour[group], marker="s", linestyle="", label=f"group {group}")
                   for group in groups]
        if cut is not None:
            handles.append(ax.axvline(cut, color="#b00020", linestyle="--", linewidth=0.8, label="cut into groups"))
        ax.set_ylim(0, 10 * len(leaves))
        ax.set_xlim(left=0)
        ax.set_xlabel("URIEL+ distance (average linkage)")
        figure.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 8), frameon=False)

    return _png(draw, 7, 1.2 + 0.28 * len(languages))


def distance_scatter(changes: Mapping[str, Mapping[str, Mapping[str, Any]]], threshold: float, metric: str) -> bytes:
    """Delta (points, with 95% interval) against URIEL+ distance to the nearest update language, one marker per
    strategy ({strategy: {language: change}}); languages without a distance are left out."""
    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        spread = 0.006 * (len(changes) - 1)  # strategies side by side at each language's distance
        for position, (strategy, by_language) in enumerate(changes.items()):
            placed = {lang: row for lang, row in by_language.items() if row["distance_to_update"] is not None}
            x = np.array([row["distance_to_update"] for row in placed.values()]) - spread / 2 + 0.006 * position
            y = np.array([100 * row["delta"] for row in placed.values()])
            ax.errorbar(x, y, yerr=_whiskers(list(placed.values())), fmt=MARKERS[position % len(MARKERS)],
                        markersize=5, elinewidth=0.6, capsize=0, label=strategy, color=f"C{position}")
            if position == 0:
                for lang, xi, yi in zip(placed, x, y):
                    ax.annotate(lang, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.axvline(threshold, color="#b00020", linestyle="--", linewidth=0.8)
        ax.text(threshold, 1, " neighbour threshold", transform=ax.get_xaxis_transform(), color="#b00020",
                fontsize=8, va="top")
        ax.set_xlabel("URIEL+ distance to the nearest update language (0: trained in the update)")
        ax.set_ylabel(f"Δ {metric} (pt)")
        ax.grid(linewidth=0.3)
        figure.legend(loc="outside upper center", ncols=min(len(changes), 6), frameon=False)

    return _png(draw, 7.5, 4.2)


def seeds_chart(streams: Sequence[Mapping[str, Any]], title: str, aggregate_bar: float) -> bytes:
    """A multi-seed benchmark table at a glance, one row of two panels per stream (a stream of
    ``benchmarks/cml_quality.py``'s table: ``update_kind``, ``strategies`` in the table's order, ``per_seed``:
    {seed: {strategy: figures}}): left, each strategy's aggregate after the update minus the reference's, in
    points, with ``aggregate_bar`` marked; right, languages improved and degraded. Bars are means over the seeds
    that ran a strategy, dots the seeds themselves."""
    def seed_values(stream: Mapping[str, Any], strategy: str, key: str) -> list[float]:
        return [rows[strategy][key] for rows in stream["per_seed"].values()
                if strategy in rows and rows[strategy].get(key) is not None]

    def bars(ax, y: np.ndarray, values: list[list[float]], colour: str) -> None:
        ax.barh(y, [np.mean(v) if v else np.nan for v in values], height=0.38, color=colour, alpha=0.55)
        for yi, v in zip(y, values):
            ax.plot(v, [yi] * len(v), "o", color=colour, markersize=3)

    def draw(figure: Figure) -> None:
        axes = figure.subplots(len(streams), 2, squeeze=False, width_ratios=(3, 2))
        for (gap_ax, count_ax), stream in zip(axes, streams):
            strategies = list(stream["strategies"])
            y = np.arange(len(strategies))[::-1].astype(float)
            gaps = [seed_values(stream, s, "aggregate_after_vs_reference_pp") for s in strategies]
            bars(gap_ax, y, gaps, "C0")
            gap_ax.axvline(0, color="black", linewidth=0.6)
            gap_ax.axvline(aggregate_bar, color="#b00020", linestyle="--", linewidth=0.8)
            gap_ax.set_yticks(y, strategies)
            gap_ax.set_title(f"{title}, kind {stream['update_kind']}: aggregate after - reference's (pt)", loc="left")
            gap_ax.grid(axis="x", linewidth=0.3)
            bars(count_ax, y + 0.2, [seed_values(stream, s, "n_improved") for s in strategies], "C2")
            bars(count_ax, y - 0.2, [seed_values(stream, s, "n_degraded") for s in strategies], "C3")
            count_ax.set_yticks(y, [])
            count_ax.set_title("languages improved / degraded", loc="left")
            count_ax.grid(axis="x", linewidth=0.3)
        handles = [Patch(color="C0", alpha=0.55, label="mean over seeds"),
                   Line2D([], [], color="#555555", marker="o", linestyle="", markersize=3, label="one seed"),
                   Line2D([], [], color="#b00020", linestyle="--", label=f"{aggregate_bar:+g} pt"),
                   Patch(color="C2", alpha=0.55, label="improved"), Patch(color="C3", alpha=0.55, label="degraded")]
        figure.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)

    n_rows = max((len(stream["strategies"]) for stream in streams), default=1)
    return _png(draw, 11, 0.6 + len(streams) * (0.8 + 0.3 * n_rows))

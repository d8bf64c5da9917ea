"""Quality effect of ``lora.cache_frozen_layers``: laft_uriel trained on kept frozen-prefix outputs (dropout off
below the adapted layers) against laft_uriel trained through the frozen layers (dropout on there), same stream,
seeds and settings.

    python benchmarks/frozen_cache_quality.py [--seeds 0 1 2]
    python benchmarks/frozen_cache_quality.py --show [--markdown]

The stream is the v2 suite's quick ``ud_pos`` stream (configs/benchmarks/suite_v2.yaml). Runs go to
``runs/benchmarks/frozen-cache-seed<k>/`` and resume; writes ``benchmarks/results/frozen-cache-quality.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "benchmarks" / "results" / "frozen-cache-quality.json"
VARIANTS = {"kept": True, "through": False}  # name -> lora.cache_frozen_layers


def config_of(seed: int, output_dir: Path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from quality.suite import overrides_of

    from cml.config import load_config

    folder = REPO / "configs" / "benchmarks"
    suite = yaml.safe_load((folder / "suite_v2.yaml").read_text(encoding="utf-8"))
    stream = suite["benchmarks"]["ud_pos"]
    laft = next(s for s in yaml.safe_load((folder / stream["config"]).read_text(encoding="utf-8"))["strategies"]
                if s["method"] == "laft_uriel")
    strategies = [{**laft, "name": f"laft_uriel_{name}", "lora": {**laft["lora"], "cache_frozen_layers": keep}}
                  for name, keep in VARIANTS.items()]
    overrides = {**stream["quick"], "seed": seed, "name": f"frozen-cache-seed{seed}", "output_dir": str(Path(output_dir).absolute()),
                 "strategies": strategies}
    return load_config(folder / stream["config"], overrides_of(overrides))


def measure(seeds: list[int], output_dir: Path) -> dict:
    from cml.experiment import Experiment

    runs = {}
    for seed in seeds:
        results = Experiment(config_of(seed, output_dir), resume=True).run()
        runs[str(seed)] = {name: {"test": stage["scores"], "train_seconds": stage["train"]["train_seconds"],
                                  "routes": stage["routes"]}
                           for name, stage in ((n, e["stages"][1]) for n, e in results["strategies"].items())}
    means = {name: [statistics.mean(run[f"laft_uriel_{name}"]["test"].values()) for run in runs.values()]
             for name in VARIANTS}
    differences = [kept - through for kept, through in zip(means["kept"], means["through"])]
    speedups = [run["laft_uriel_through"]["train_seconds"] / run["laft_uriel_kept"]["train_seconds"]
                for run in runs.values()]
    return {"stream": "v2 ud_pos quick", "metric": "token accuracy (test)", "runs": runs, "mean_test": means,
            "kept_minus_through_pp": [100 * d for d in differences],
            "training_speedup": speedups,
            "command": "python benchmarks/frozen_cache_quality.py " + " ".join(sys.argv[1:])}


def show(report: dict, markdown: bool) -> None:
    rows = [[seed, *(f"{100 * report['mean_test'][name][i]:.2f}" for name in VARIANTS),
             f"{report['kept_minus_through_pp'][i]:+.2f}", f"{report['training_speedup'][i]:.2f}x"]
            for i, seed in enumerate(report["runs"])]
    differences = report["kept_minus_through_pp"]
    rows.append(["mean ± std", *(f"{100 * statistics.mean(report['mean_test'][n]):.2f}" for n in VARIANTS),
                 f"{statistics.mean(differences):+.2f} ± {statistics.stdev(differences):.2f}"
                 if len(differences) > 1 else f"{differences[0]:+.2f}",
                 f"{statistics.median(report['training_speedup']):.2f}x (median)"])
    header = ["seed", "kept (dropout off below)", "through (dropout on below)", "kept - through (pt)",
              "training time through / kept"]
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    for row in [header, *rows]:
        print("  ".join(f"{cell:>26}" for cell in row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "benchmarks")
    parser.add_argument("--show", action="store_true", help="print the measured table; run nothing")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if not args.show:
        from cml.io import write_json

        write_json(OUTPUT, measure(args.seeds, args.output_dir))
    show(json.loads(OUTPUT.read_text(encoding="utf-8")), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training defaults per task family: which learning rate, rate multiplier for the parameters the checkpoint lacks
(a fresh label head; an assembled decoder's cross-attention) and number of epochs let a model learn from a few
hundred examples per language in every family?

    python benchmarks/train_defaults.py                      # every dataset's points (~100 min CPU at 1 thread)
    python benchmarks/train_defaults.py --datasets ud_pos    # some datasets; points already measured are kept
    python benchmarks/train_defaults.py --quick              # smoke run: 2 languages, 16 examples, 1 epoch, 2 points
    python benchmarks/train_defaults.py --show [--markdown]  # the measured tables (docs/benchmarks.md quotes them)

Each grid point is one ``cml`` run with a single stage (``initial``: every language, N training examples each)
trained from the embedded default model, offline, on real data read in place from ``../shared/data`` (or
simplemma's dictionaries), the best epoch kept by dev score as ``cml run`` does. The points: ``GRID`` (6 of the
4 x 2 rates and multipliers, 3 epochs; ``--full-grid``: all 8), or a dataset's own (seq2seq). A family's default is
the point with the highest dev score, averaged over the family's datasets (ties: the lower rate, then the lower
multiplier, then fewer epochs); test scores are reported for the chosen point and the old default (5e-5, x1,
3 epochs), never used to choose. Results go to ``benchmarks/results/train-defaults.json``
(``train-defaults-quick.json`` with ``--quick``), rewritten after every point, so an interrupted measurement
continues where it stopped.
``src/cml/training/defaults.py`` holds the chosen points, and ``tests/test_train_defaults.py`` checks that the two
agree.

There is no NER data offline. ``ud_propn`` stands in for it: UD's PROPN runs as IOB2 entities (``B-NAME``,
``I-NAME``, ``O`` elsewhere), scored by seqeval entity F1 as NER is; sparse labels like NER's, where a model that
predicts ``O`` everywhere scores 0.0.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
MODEL = "embedded:multilingual-e5-small"
LEARNING_RATES = (5e-5, 1e-4, 2e-4, 5e-4)
SCALES = (1.0, 10.0)
OLD_DEFAULT = (5e-5, 1.0)  # TrainingConfig's learning_rate and new_parameters_lr_scale
# 6 of the 4 x 2 points (--full-grid: all 8), for time (2 shared cores; ~3 min a point at 3 epochs, 1 thread): every
# rate with the new parameters at x10, and x1 at the old rate and at 2e-4, which shows what x10 adds at a low and a
# high rate.
GRID = ((5e-5, 1.0), (2e-4, 1.0), *((lr, 10.0) for lr in LEARNING_RATES))
SELECTION = ("highest dev score averaged over the family's datasets (each dataset's dev score: the mean over its "
             "languages of the best epoch's primary metric); ties: the lower learning rate, then the lower multiplier, "
             "then fewer epochs")


@dataclass(frozen=True)
class Dataset:
    family: str
    what: str
    metric: str
    languages: tuple[str, ...]
    eval_per_language: int  # at most this many dev and test examples per language
    # the dataset's own points, (learning_rate, new_parameters_lr_scale[, epochs]); None: GRID
    grid: tuple[tuple, ...] | None = None
    model: dict[str, Any] = field(default_factory=dict)


DATASETS: dict[str, Dataset] = {
    "sib200": Dataset("classification", "SIB-200 topic classification (7 labels)", "accuracy",
                      ("eng_Latn", "hin_Deva", "arb_Arab", "swh_Latn"), 99),
    "ud_pos": Dataset("tagging", "UD part-of-speech tagging (UPOS, 17 tags), ud_treebanks", "token_accuracy",
                      ("eng", "deu", "fin", "tur"), 200),
    "ud_propn": Dataset("tagging", "NER-like: UD PROPN runs as IOB2 entities (B-NAME, I-NAME, O), ud_treebanks",
                        "entity_f1", ("eng", "deu", "fin", "tur"), 200),
    # The slowest family (a decoder, and generation on dev): the old default and three rates at x10. x10 because
    # the assembled decoder's random cross-attention needs it (configs/lemmatization.yaml: without it the model
    # collapsed to one output string). Every 3-epoch point stayed at 0.0 exact match (150 optimizer steps), so
    # the two best-converging rates (lowest training loss) ran 10 epochs too, as configs/lemmatization.yaml does.
    "simplemma": Dataset("seq2seq", "lemmatisation (form -> lemma), simplemma's dictionaries", "exact_match",
                         ("deu", "fra", "fin", "tur"), 100,
                         grid=((1e-4, 10.0), (2e-4, 10.0), (5e-4, 10.0), (1e-4, 10.0, 10), (2e-4, 10.0, 10)),
                         model={"max_new_tokens": 16}),
}


# ---------------------------------------------------------------------------------------------- data

def propn_iob2(ud_root: Path, out: Path, languages: list[str], cap: int) -> Path:
    """``<out>/<lang>/{train,dev,test}.txt``: the first ``cap`` sentences of each UD split, one ``token tag`` line
    per syntactic word, tags B-NAME/I-NAME over each run of PROPN words and O elsewhere."""
    from cml.config import ConlluSource
    from cml.data.examples import SPLITS
    from cml.data.readers import read_dataset
    from cml.task_family import TaskFamily

    source = ConlluSource(format="conllu", path=str(ud_root), languages=languages, max_per_split=cap)
    dataset = read_dataset(source, TaskFamily.tagging)
    for lang in dataset.languages:
        for split in SPLITS:
            lines = []
            for example in dataset.splits[lang][split]:
                previous = "O"
                for token, upos in zip(example.tokens, example.tags):
                    tag = "O" if upos != "PROPN" else ("I-NAME" if previous != "O" else "B-NAME")
                    lines.append(f"{'_'.join(token.split()) or '_'} {tag}")
                    previous = tag
                lines.append("")
            target = out / lang / f"{split}.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def data_section(name: str, spec: Dataset, languages: list[str], train: int, cap: int, data_root: Path,
                 work: Path) -> dict[str, Any]:
    if name == "sib200":
        return {"format": "sib200", "path": str(data_root / "sib200"), "languages": languages,
                "max_per_split": max(train, cap)}
    if name == "ud_pos":
        return {"format": "conllu", "path": str(data_root / "ud_treebanks"), "languages": languages,
                "max_per_split": max(train, cap)}
    if name == "ud_propn":
        folder = propn_iob2(data_root / "ud_treebanks", work / "ud_propn", languages, max(train, cap))
        return {"format": "conll", "path": str(folder), "languages": languages, "scheme": "IOB2"}
    if name == "simplemma":  # test-only: split train / dev / test into exactly train, cap and cap pairs
        pairs = train + 2 * cap
        return {"format": "simplemma", "languages": languages, "pairs_per_language": pairs,
                "split": {"train": train / pairs, "dev": cap / pairs, "test": cap / pairs}}
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------- measuring

def setting(args: argparse.Namespace, name: str, languages: list[str]) -> dict[str, Any]:
    """What a dataset's points depend on (``epochs``: the points' default): a point measured with the same setting
    is reused."""
    spec = DATASETS[name]
    return {"family": spec.family, "what": spec.what, "languages": languages, "train_per_language": args.train,
            "eval_per_language_at_most": args.eval_cap or spec.eval_per_language, "epochs": args.epochs,
            "batch_size": args.batch_size, "model": args.model, "max_length": args.max_length, **spec.model,
            "seed": args.seed, "data_root": "<shared data>" if args.data_root == DATA else str(args.data_root)}


Key = tuple[float, float, int]  # learning_rate, new_parameters_lr_scale, epochs


def key_of(point: dict) -> Key:
    return point["learning_rate"], point["new_parameters_lr_scale"], point["epochs"]


def point_config(args: argparse.Namespace, name: str, languages: list[str], key: Key, work: Path):
    from cml.config import ExperimentConfig

    spec, (lr, scale, epochs) = DATASETS[name], key
    cap = args.eval_cap or spec.eval_per_language
    return ExperimentConfig.model_validate({
        "name": f"{name}-lr{lr:g}-x{scale:g}-{epochs}ep", "task": spec.family, "seed": args.seed,
        "output_dir": str(work / "runs"),
        "data": data_section(name, spec, languages, args.train, cap, args.data_root, work),
        "stream": {"stages": [{"name": "initial", "languages": "all", "amount": args.train}]},
        "model": {"name": args.model, "max_length": args.max_length, **spec.model},
        "training": {"epochs": epochs, "batch_size": args.batch_size, "learning_rate": float(lr),
                     "new_parameters_lr_scale": float(scale)},
        "strategies": [{"method": "full_finetune"}],
        "evaluation": {"resamples": 100}})


def measure_point(config) -> dict[str, Any]:
    """One run: stage 0 only. Dev: the best epoch's mean over languages (what chose the kept weights)."""
    import torch

    from cml.experiment import Experiment

    wall, cpu = time.perf_counter(), time.process_time()
    results = Experiment(config, overwrite=True).run()
    stage, training = results["stages"][0], config.training
    shutil.rmtree(Path(config.output_dir) / config.name, ignore_errors=True)
    train = stage["train"]
    return {"learning_rate": training.learning_rate, "new_parameters_lr_scale": training.new_parameters_lr_scale,
            "epochs": training.epochs, "dev": train["best_dev"], "dev_history": train["dev_history"],
            "best_epoch": train["best_epoch"], "epoch_losses": train["epoch_losses"],
            "test": sum(stage["scores"].values()) / len(stage["scores"]), "test_per_language": stage["scores"],
            "warnings": stage["warnings"], "train_examples": stage["train_examples"],
            "train_seconds": train["train_seconds"], "wall_seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu, "torch_threads": torch.get_num_threads()}


def grid_of(args: argparse.Namespace, spec: Dataset) -> list[Key]:
    if args.quick:
        points = [OLD_DEFAULT, (LEARNING_RATES[-1], SCALES[-1])]
    elif args.full_grid:
        points = [(lr, scale) for lr in LEARNING_RATES for scale in SCALES]
    else:
        points = [OLD_DEFAULT, *(spec.grid or GRID)]
    return sorted(dict.fromkeys((*point, args.epochs)[:3] for point in points))


def choose(points: list[dict]) -> dict:
    """The point with the highest dev; ties: the lower rate, then the lower multiplier, then fewer epochs."""
    return max(points, key=lambda p: (p["dev"], *(-value for value in key_of(p))))


def family_summary(datasets: dict[str, dict], family: str) -> dict[str, Any] | None:
    """Per grid point measured on every dataset of ``family``: the mean dev; the chosen point; the old default."""
    names = [name for name, found in datasets.items() if found["setting"]["family"] == family]
    if not names:
        return None
    by_key = {name: {key_of(p): p for p in datasets[name]["points"]} for name in names}
    common = [key for key in by_key[names[0]] if all(key in by_key[name] for name in names)]
    points = [{"learning_rate": key[0], "new_parameters_lr_scale": key[1], "epochs": key[2],
               "dev": sum(by_key[name][key]["dev"] for name in names) / len(names),
               "dev_per_dataset": {name: by_key[name][key]["dev"] for name in names}}
              for key in common]
    if not points:
        return None
    key = key_of(choose(points))
    summary = {"datasets": names, "grid": points,
               "chosen": {"learning_rate": key[0], "new_parameters_lr_scale": key[1], "epochs": key[2]},
               "chosen_dev": sum(by_key[name][key]["dev"] for name in names) / len(names),
               "chosen_test": {name: by_key[name][key]["test"] for name in names}}
    old = (*OLD_DEFAULT, datasets[names[0]]["setting"]["epochs"])
    if all(old in by_key[name] for name in names):
        summary["old_default"] = {"learning_rate": old[0], "new_parameters_lr_scale": old[1], "epochs": old[2]}
        summary["old_default_dev"] = sum(by_key[name][old]["dev"] for name in names) / len(names)
        summary["old_default_test"] = {name: by_key[name][old]["test"] for name in names}
    summary["seconds"] = {"wall": sum(datasets[name]["wall_seconds"] for name in names),
                          "cpu": sum(datasets[name]["cpu_seconds"] for name in names)}
    return summary


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    report["families"] = {}
    for family in ("classification", "tagging", "seq2seq"):
        summary = family_summary(report["datasets"], family)
        if summary:
            report["families"][family] = summary
    report["seconds"] = {"wall": sum(d["wall_seconds"] for d in report["datasets"].values()),
                         "cpu": sum(d["cpu_seconds"] for d in report["datasets"].values())}
    return report


def measure(args: argparse.Namespace, output: Path, work: Path) -> dict[str, Any]:
    import torch

    from cml.io import read_json, write_json

    torch.set_num_threads(args.threads)
    earlier = read_json(output, "results") if output.is_file() and not args.remeasure else {}
    report = {"command": " ".join(["python benchmarks/train_defaults.py", *args.argv]),
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": args.threads},
              "grid": {"learning_rate": list(LEARNING_RATES), "new_parameters_lr_scale": list(SCALES),
                       "points": "each dataset's own subset (its points)"},
              "old_default": {"learning_rate": OLD_DEFAULT[0], "new_parameters_lr_scale": OLD_DEFAULT[1],
                              "epochs": 3},
              "selection": SELECTION, "no_ner_data": "no NER data offline: ud_propn (PROPN runs as IOB2 entities) "
              "stands in for it", "datasets": dict(earlier.get("datasets", {}))}
    for name in args.datasets:
        spec = DATASETS[name]
        languages = list(args.languages or (spec.languages[:2] if args.quick else spec.languages))
        wanted = setting(args, name, languages)
        before = report["datasets"].get(name, {})
        kept = {key_of(p): p for p in before.get("points", []) if before.get("setting") == wanted}
        found = {"setting": wanted, "metric": spec.metric, "points": [], "wall_seconds": 0.0, "cpu_seconds": 0.0}
        for key in grid_of(args, spec):
            label = f"{name} lr {key[0]:g} x{key[1]:g} {key[2]} epochs"
            if key in kept:
                point = kept[key]
                print(f"{label}: dev {point['dev']:.4f} (measured before)", flush=True)
            else:
                point = measure_point(point_config(args, name, languages, key, work))
                history = ", ".join(f"{dev:.3f}" for dev in point["dev_history"])
                print(f"{label}: dev {point['dev']:.4f} (per epoch {history}), {point['wall_seconds']:.0f} s",
                      flush=True)
            found["points"] = sorted([*found["points"], point], key=key_of)
            found["wall_seconds"] = sum(p["wall_seconds"] for p in found["points"])
            found["cpu_seconds"] = sum(p["cpu_seconds"] for p in found["points"])
            found["train_examples"] = found["points"][0]["train_examples"]
            report["datasets"][name] = found
            write_json(output, summarize(report))  # after every point: an interrupted run keeps what it measured
    return report


# ---------------------------------------------------------------------------------------------- showing

def _lr(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "—"
    return True


def _setting(key: Key) -> str:
    return f"{_lr(key[0])}, x{key[1]:g}, {key[2]} ep"


def tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows): the chosen defaults against the old one, and each dataset's dev grid."""
    rows = []
    for family, summary in report["families"].items():
        chosen = key_of(summary["chosen"])
        for name in summary["datasets"]:
            found = report["datasets"][name]
            by_key = {key_of(p): p for p in found["points"]}
            old = by_key.get((*OLD_DEFAULT, found["setting"]["epochs"]))
            new = by_key[chosen]
            sizes = f"{len(found['setting']['languages'])} x {found['setting']['train_per_language']}"
            rows.append([family, f"{name}: {', '.join(found['setting']['languages'])}", sizes, found["metric"],
                         f"{old['dev']:.3f}" if old else "", f"{old['test']:.3f}" if old else "",
                         _setting(chosen), f"{new['dev']:.3f}", f"{new['test']:.3f}",
                         f"{found['cpu_seconds'] / 60:.1f}"])
    epochs = sorted({found["setting"]["epochs"] for found in report["datasets"].values()})
    out = [(f"Defaults per family (dev chose, test reported; old: 5e-5, x1, {'/'.join(map(str, epochs))} ep)",
            ["family", "dataset: languages", "languages x train", "metric", "old dev", "old test",
             "chosen (lr, new x, epochs)", "chosen dev", "chosen test", "CPU min"], rows)]
    for name, found in report["datasets"].items():
        by_key = {key_of(p): p for p in found["points"]}
        lrs = sorted({key[0] for key in by_key})
        columns = sorted({key[1:] for key in by_key})
        grid_rows = [[_lr(lr), *(f"{by_key[(lr, *c)]['dev']:.3f}" if (lr, *c) in by_key else "—" for c in columns)]
                     for lr in lrs]
        out.append((f"{name}: dev {found['metric']} per point",
                    ["learning rate", *(f"new x{scale:g}, {epochs} ep" for scale, epochs in columns)], grid_rows))
    return out


def show(report: dict[str, Any], markdown: bool) -> None:
    for title, header, rows in tables(report):
        if markdown:
            numeric = [all(_number(row[i]) for row in rows) for i in range(len(header))]
            print(f"**{title}**\n")
            print("| " + " | ".join(header) + " |")
            print("|" + "|".join("---:" if right else "---" for right in numeric) + "|")
            for row in rows:
                print("| " + " | ".join(row) + " |")
            print()
        else:
            widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
            print(title)
            for row in (header, *rows):
                print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
            print()
    seconds, points = report["seconds"], [p for d in report["datasets"].values() for p in d["points"]]
    threads = {p.get("torch_threads") for p in points}
    line = (f"{len(report['datasets'])} datasets, {len(points)} points: {seconds['cpu'] / 60:.0f} min CPU, "
            f"{seconds['wall'] / 60:.0f} min wall on {report['machine']['cpus']} shared cores; torch threads: "
            + ", ".join(f"{n} ({sum(p.get('torch_threads') == n for p in points)} points)"
                        for n in sorted(threads, key=str)))
    print(f"_{line}_" if markdown else line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--languages", nargs="+", help="these languages instead of each dataset's own")
    parser.add_argument("--train", type=int, default=None, help="training examples per language (default 200)")
    parser.add_argument("--eval-cap", type=int, default=None, help="at most this many dev and test examples per "
                        "language (default: the dataset's own)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the points that do not name theirs "
                        "(default 3)")
    parser.add_argument("--full-grid", action="store_true", help="every dataset: all learning rates x all "
                        "multipliers (default: GRID's 6 points; seq2seq its own)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on the shared 2-core "
                        "machine, 2 threads beside other jobs ran a batch ~6x slower than 1)")
    parser.add_argument("--data-root", type=Path, default=DATA, help="default: ../shared/data from the repository")
    parser.add_argument("--quick", action="store_true", help="2 languages, 16 examples, 1 epoch, 2 grid points")
    parser.add_argument("--remeasure", action="store_true", help="measure every point again, keeping none")
    parser.add_argument("--output", type=Path, default=None,
                        help="default: benchmarks/results/train-defaults[-quick].json")
    parser.add_argument("--work-dir", type=Path, default=None, help="runs and derived data (default: a temporary "
                        "folder, removed at the end)")
    parser.add_argument("--show", action="store_true", help="print the measured tables from the JSON; run nothing")
    parser.add_argument("--markdown", action="store_true", help="with --show: as Markdown tables")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.train = args.train or (16 if args.quick else 200)
    args.eval_cap = args.eval_cap or (16 if args.quick else None)
    args.epochs = args.epochs or (1 if args.quick else 3)
    output = args.output or RESULTS / f"train-defaults{'-quick' if args.quick else ''}.json"

    from cml.errors import CMLError
    from cml.io import read_json

    if args.show:
        if not output.is_file():
            raise CMLError("no measured table yet; run the benchmark first", file=output)
        show(read_json(output, "results"), args.markdown)
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.work_dir:
        report = measure(args, output, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="cml-train-defaults-") as work:
            report = measure(args, output, Path(work))
    show(summarize(report), markdown=False)
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    from cml.errors import exit_on_user_error

    with exit_on_user_error():
        sys.exit(main())

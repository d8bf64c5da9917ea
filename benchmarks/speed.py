"""Speed benchmark: a modular update against full fine-tuning on one stream's first update, side by side.

    python benchmarks/speed.py --stream sib200 [--repeats 3] [--threads 2] [--limit N] [--modular LABEL]
    python benchmarks/speed.py --show [--markdown]      # the table of every speed-<stream>.json measured

``--stream`` names a config of configs/benchmarks/ (or is a config's path). A stream of the v2 benchmark is timed as
the benchmark runs it: the suite's settings for its update (``configs/benchmarks/suite_v2.yaml``, e.g. ``pud_pos``'s 4
update epochs where its config says 2) apply, and the JSON records them under ``suite_overrides``. Each repeat runs,
in one process:

- the update of full_finetune and of laft_uriel (the stream's own entries: same data, epochs, batch size), each
  timed whole: training plus what the strategy does around it (full fine-tuning's per-epoch dev scoring and
  best-epoch choice; laft_uriel's frozen-prefix pass and its gate's dev scoring of every candidate route);
- inference over mixed-language batches (the test sets interleaved) through laft_uriel's routed model and
  through the full fine-tuned one, on the same examples and batches;
- model FLOPs utilisation: full fine-tuning's training FLOP/s over this machine's fp32 matmul FLOP/s, measured
  right after it.

Each figure is a ratio of two measurements of the same repeat (the machine is noisy); the JSON holds every
repeat's seconds, and each figure's median and range. The update starts from the stream's model with a fresh
head (stage 0 is not trained: training's speed does not depend on what the weights learnt, but early stopping
would, so the epochs each update ran are recorded), or with ``--stage0-seed K`` from the v2 benchmark's finished
stage 0 of seed K, read from its run folder (``runs/benchmarks/v2-<stream>-subset-full-seed<K>/``, never written;
``cml_quality.py --v2`` trains it), with that seed's config, as the benchmark's update starts. A seq2seq stream
needs it, and is refused without it: how long generation runs (the gate's dev scoring, evaluation, inference)
depends on when the model has learnt to stop, and an untrained decoder never stops before ``max_new_tokens``, so
a model that has trained a little generates faster than the untrained previous model it is compared with.
``--limit N`` keeps each update language's first N examples (both strategies get the same; a laft_replay entry
adds its memory, which ``--limit`` does not cut, and the JSON's ``update.memory_examples`` counts it).
``--modular LABEL`` times another of the stream's laft_uriel or laft_replay entries (a variant, e.g.
``laft_uriel_top4``) in laft_uriel's place; the JSON names it under ``modular_strategy`` and the table's stream cell
shows it. A laft_replay entry also trains on its memory of stage 0's examples, and its work is counted so.
Writes ``benchmarks/results/speed-<stream>.json`` (``speed-<stream>-<LABEL>.json`` for a variant).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO / "benchmarks") not in sys.path:  # the quality package lies beside this script, which tests load by path
    sys.path.insert(0, str(REPO / "benchmarks"))
STRATEGIES = ("full_finetune", "laft_uriel")
"""The two roles each repeat times, under these keys: the reference and the modular update (``--modular``)."""
MODULAR_METHODS = ("laft_uriel", "laft_replay")
"""The methods ``--modular`` may time in laft_uriel's role."""
FIGURES = ("laft_uriel_over_full_finetune_update_time", "routed_over_single_inference_time",
           "model_flops_utilisation")


def matmul_flops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """fp32 FLOP/s of a square matmul on the training device: the ceiling of model FLOPs utilisation."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def layer_flops(model, features: list[dict]) -> float | None:
    """One layer's forward FLOPs over ``features``: 2 x (non-embedding parameters / layers) per token, plus
    attention's score and mix products (4 x width x sequence length per token); embedding lookups cost no
    multiply-adds. None for encoder-decoders, whose decoder's tokens are not the inputs'."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return None
    dense = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    per_token = 2 * dense / config.num_hidden_layers
    return sum(len(f["input_ids"]) * (per_token + 4 * config.hidden_size * len(f["input_ids"])) for f in features)


def training_flops(model, features: list[dict], epochs: int) -> float | None:
    """Every layer forward and backward (3 forward passes' worth) over ``features`` for ``epochs``."""
    per_layer = layer_flops(model, features)
    return None if per_layer is None else 3 * model.config.num_hidden_layers * per_layer * epochs


def flops_floor(model, ctx, gate: dict, prefix_depth: int, laft_epochs: int, full_epochs: int,
                dev_passes: int, laft_train: list[dict] | None = None) -> float | None:
    """laft_uriel's update FLOPs over full fine-tuning's, counted from the work each does (what a perfectly
    efficient implementation of each would take): full fine-tuning runs every layer forward and backward (3x) per
    epoch plus a dev pass per epoch it scored; laft_uriel runs the prefix once over the batch and the dev sets, the
    layers above it forward and back to their inputs only (2x) per epoch, and each gate candidate's layers above
    the prefix over its language's dev set. ``laft_train``: what laft_uriel trained on where it is not the update's
    data (laft_replay's memory added). None for encoder-decoders (generation has no such count)."""
    train = layer_flops(model, ctx.train_features)
    if train is None:
        return None
    modular = train if laft_train is None else layer_flops(model, laft_train)
    layers = model.config.num_hidden_layers
    dev = {lang: layer_flops(model, features) for lang, (_, features) in ctx.dev.items()}
    full = 3 * layers * train * full_epochs + layers * sum(dev.values()) * dev_passes
    upper = layers - prefix_depth
    candidates = sum(len(gate[lang]["dev"]) * dev[lang] for lang in gate) if gate else 0
    laft = prefix_depth * (modular + sum(dev.values())) + 2 * upper * modular * laft_epochs + upper * candidates
    return laft / full


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed_predict(model, task, features, batch_size: int) -> float:
    from cml.evaluation.inference import predict

    predict(model, task, features[:batch_size], batch_size)  # warm-up
    started = time.perf_counter()
    predict(model, task, features, batch_size)
    return time.perf_counter() - started


def repo_relative(path: Path) -> str:
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def stream_config(stream: str) -> tuple[str, Path]:
    path = Path(stream)
    if path.suffix in (".yaml", ".yml"):
        return path.stem, path
    path = REPO / "configs" / "benchmarks" / f"{stream}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if p.stem != "suite")
        raise SystemExit(f"speed.py: no stream {stream!r} (configs/benchmarks/ has {', '.join(known)})")
    return stream, path


def suite_stream(path: Path, suite_path: Path) -> tuple[dict, dict] | None:
    """(the suite, its benchmark spec) of the suite's stream that runs this config; None if the suite runs no
    stream on it."""
    from quality.suite import benchmarks_of, load_suite

    suite = load_suite(suite_path)
    for bench in benchmarks_of(suite).values():
        if (Path(suite["folder"]) / bench["config"]).resolve() == path.resolve():
            return suite, bench
    return None


def suite_update(bench: dict | None) -> tuple[str | None, dict]:
    """The update kind and settings the suite runs this stream's config with (its first update kind, e.g. v2's
    4 update epochs for ``pud_pos``), so a benchmark stream is timed as the benchmark runs it; (None, {}) for a
    config the suite does not run."""
    if bench is None:
        return None, {}
    kind = next(iter(bench["update_kinds"]))
    return kind, dict(bench["update_kinds"][kind])


def spread(values: list[float | None]) -> dict[str, float | list[float]] | None:
    if None in values:
        return None  # not measurable here (model FLOPs utilisation of an encoder-decoder)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def measure_repeat(experiment, base, strategy_configs: dict, inference_features: list[dict]) -> dict:
    """One repeat: both updates (``strategy_configs``: role in :data:`STRATEGIES` -> config), both inferences,
    the matmul ceiling. Strategies are built afresh, so every repeat pays what a first update pays (grouping,
    typology from its disk cache)."""
    from cml.strategies import make_strategy

    updates, models, records, trained = {}, {}, {}, {}
    for name, strategy_config in strategy_configs.items():
        strategy = make_strategy(strategy_config)
        # No checkpoint folder, no resuming: the run folder may be the benchmark's own (--stage0-seed), in use.
        ctx = dataclasses.replace(experiment.context(strategy.name, 1), checkpoint_dir=None, resume=False,
                                  tracking=None)
        started = time.perf_counter()
        model, record = strategy.update(copy.deepcopy(base), ctx)
        train = record["train"]
        updates[name] = {"update_seconds": time.perf_counter() - started, "train_seconds": train["train_seconds"],
                         "steps": train["steps"], "epochs_run": train["epochs_run"],
                         "examples_seen": train["examples_seen"]}
        models[name] = model
        records[name] = record
        if hasattr(strategy, "training_data"):  # the modular role: its data once more (a memory is not redrawn)
            trained[name] = strategy.training_data(ctx)[1]
            updates[name]["memory_examples"] = len(trained[name]) - len(ctx.train_features)
    batch_size = experiment.training_config(1).eval_batch_size
    single = timed_predict(models["full_finetune"], experiment.task, inference_features, batch_size)
    routed = timed_predict(models["laft_uriel"], experiment.task, inference_features, batch_size)
    ceiling = matmul_flops(experiment.accelerator.device)
    full = updates["full_finetune"]
    ctx = experiment.context("flops", 1)
    flops = training_flops(base.model, ctx.train_features, full["epochs_run"])
    achieved = flops / full["train_seconds"] if flops is not None else None
    prefix = models["laft_uriel"].frozen_prefix
    floor = flops_floor(base.model, ctx, records["laft_uriel"].get("gate") or {}, prefix.depth if prefix else 0,
                        updates["laft_uriel"]["epochs_run"], full["epochs_run"],
                        len(records["full_finetune"]["train"]["dev_history"]), trained.get("laft_uriel"))
    examples = len(inference_features)
    return {"updates": updates, "inference": {"single_seconds": single, "routed_seconds": routed,
                                              "single_examples_per_second": examples / single,
                                              "routed_examples_per_second": examples / routed},
            "flops": {"achieved_training_flops_per_second": achieved, "matmul_flops_per_second": ceiling},
            "figures": {"laft_uriel_over_full_finetune_update_time":
                        updates["laft_uriel"]["update_seconds"] / full["update_seconds"],
                        "routed_over_single_inference_time": routed / single,
                        "model_flops_utilisation": achieved / ceiling if achieved is not None else None},
            "laft_uriel_over_full_finetune_update_flops": floor,
            "routes": {lang: list(route) for lang, route in sorted(models["laft_uriel"].routes.items())}}


def measure(args: argparse.Namespace) -> dict:
    """:func:`measured` at ``args.threads`` torch threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return measured(args)
    finally:  # the caller's thread count back (a test process runs other tests after this one)
        torch.set_num_threads(threads)


def measured(args: argparse.Namespace) -> dict:
    from cml.config import load_config
    from cml.experiment import Experiment
    from cml.routing import RoutedModel

    from quality.run import stage0_model
    from quality.suite import overrides_of, run_config

    name, path = stream_config(args.stream)
    found = suite_stream(path, args.suite)
    kind, overrides = suite_update(found[1] if found else None)
    if args.stage0_seed is None:
        config = load_config(path, overrides_of(overrides))
        if config.task == "seq2seq":
            raise SystemExit(f"speed.py: {name} is a seq2seq stream: pass --stage0-seed K to start from the "
                             "benchmark's trained stage 0 (an untrained decoder generates to max_new_tokens, so its "
                             "timings say nothing of a real update's)")
    elif found is None:
        raise SystemExit(f"speed.py: --stage0-seed needs a stream of the suite {args.suite} (whose run folders hold "
                         f"stage 0); it does not run {path}")
    else:
        suite, bench = found
        config = run_config(bench, kind, args.stage0_seed, False, suite, args.output_dir,
                            list(dict.fromkeys([*suite["references"], args.modular])))
    by_label = {c.label: c for c in config.strategies}
    roles = dict(zip(STRATEGIES, ("full_finetune", args.modular)))
    missing = [label for label in roles.values() if label not in by_label]
    if missing:
        raise SystemExit(f"speed.py: {path} has no strategy {', '.join(missing)}")
    if by_label[args.modular].method not in MODULAR_METHODS:
        raise SystemExit(f"speed.py: --modular {args.modular} is a {by_label[args.modular].method} entry, not one of "
                         f"{', '.join(MODULAR_METHODS)}")
    experiment = Experiment(config, resume=args.stage0_seed is not None)
    update = experiment.stream.stages[1]
    if args.limit is not None:
        update.train = {lang: rows[:args.limit] for lang, rows in update.train.items()}
    strategies = {role: by_label[label] for role, label in roles.items()}
    if args.stage0_seed is None:
        base = RoutedModel(experiment.task.seeded_model(config.seed), experiment.stream.languages)
    else:
        base = stage0_model(experiment, f"python benchmarks/cml_quality.py --v2 --benchmarks {found[1]['name']} "
                                        f"--seeds {args.stage0_seed}")
    # Mixed-language batches: the test sets interleaved, so most batches hold several languages.
    test = [features for _, features in experiment.test.values()]
    mixed = [f for group in zip(*test) for f in group][:args.inference_examples]
    repeats = [measure_repeat(experiment, base, strategies, mixed) for _ in range(args.repeats)]
    return {"stream": name, "modular_strategy": args.modular, "config": repo_relative(path),
            "suite": repo_relative(args.suite) if kind else None,
            "suite_overrides": overrides,
            "update": {"stage": update.name, "languages": list(update.languages),
                       "examples": sum(len(rows) for rows in update.train.values()),
                       "memory_examples": repeats[0]["updates"]["laft_uriel"]["memory_examples"],
                       "epochs": experiment.training_config(1).epochs, "limit": args.limit},
            "stage0": None if args.stage0_seed is None else {"seed": args.stage0_seed,
                                                             "run": repo_relative(experiment.run_dir)},
            "inference_examples": len(mixed),
            "figures": {figure: spread([r["figures"][figure] for r in repeats]) for figure in FIGURES},
            "repeats": repeats, "torch_threads": torch.get_num_threads(), "peak_memory_mib": peak_rss_mib(),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "torch": torch.__version__},
            "command": "python benchmarks/speed.py " + " ".join(args.argv)}


def table(reports: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["stream", "update", "laft_uriel / full_finetune update time", "routed / single inference time",
              "model FLOPs utilisation", "laft_uriel / full_finetune update FLOPs", "full_finetune update s",
              "laft_uriel update s", "evaluation examples/s (single, routed)"]
    rows = []
    for report in reports:
        figures = report["figures"]
        cells = ["n/a" if f is None else f"{f['median']:.2f} ({f['min']:.2f}-{f['max']:.2f})"
                 for f in (figures[k] for k in FIGURES)]
        seconds = [statistics.median(r["updates"][s]["update_seconds"] for r in report["repeats"]) for s in STRATEGIES]
        floor = report["repeats"][0]["laft_uriel_over_full_finetune_update_flops"]
        speeds = [statistics.median(r["inference"][f"{kind}_examples_per_second"] for r in report["repeats"])
                  for kind in ("single", "routed")]
        update = report["update"]
        modular = report.get("modular_strategy", "laft_uriel")
        stream = report["stream"] if modular == "laft_uriel" else f"{report['stream']} ({modular})"
        start = f", from stage 0 of seed {report['stage0']['seed']}" if report.get("stage0") else ""
        rows.append([stream, f"{update['examples']} examples of {', '.join(update['languages'])}, "
                     f"{update['epochs']} epochs{start}", *cells, "n/a" if floor is None else f"{floor:.2f}",
                     *(f"{s:.0f}" for s in seconds),
                     f"{speeds[0]:.1f}, {speeds[1]:.1f}"])
    return header, rows


def show(markdown: bool) -> None:
    reports = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("speed-*.json"))]
    if not reports:
        print("no speed measured yet (benchmarks/results/speed-*.json: none)")
        return
    header, rows = table(reports)
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(f"\nMedian (range) over {', '.join(str(len(r['repeats'])) for r in reports)} repeats; "
              f"torch threads per process: {', '.join(sorted({str(r['torch_threads']) for r in reports}))}.")
        return
    from rich.console import Console
    from rich.table import Table

    out = Table(title="speed (median and range over repeats, each a ratio measured in one repeat)")
    for column in header:
        out.add_column(column)
    for row in rows:
        out.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 160).print(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", help="a config of configs/benchmarks/ (name) or a config's path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the figures are for 2)")
    parser.add_argument("--limit", type=int, help="at most this many update examples per language")
    parser.add_argument("--inference-examples", type=int, default=1024)
    parser.add_argument("--modular", default="laft_uriel",
                        help="the stream's laft_uriel or laft_replay entry (label) timed against full_finetune")
    parser.add_argument("--suite", type=lambda value: Path(value).absolute(),
                        default=REPO / "configs" / "benchmarks" / "suite_v2.yaml",
                        help="a stream this benchmark suite runs is timed with the suite's settings for its first "
                             "update kind (default: configs/benchmarks/suite_v2.yaml)")
    parser.add_argument("--stage0-seed", type=int, help="start the updates from the v2 benchmark's finished stage 0 "
                        "of this seed (its run folder under --output-dir), not from an untrained model; needed for "
                        "a seq2seq stream")
    parser.add_argument("--output-dir", type=lambda value: Path(value).absolute(),
                        default=REPO / "runs" / "benchmarks",
                        help="the benchmark's run folders' parent, for --stage0-seed (default: runs/benchmarks)")
    parser.add_argument("--output", type=Path,
                        help="default: benchmarks/results/speed-<stream>.json (-<LABEL> before .json for a variant)")
    parser.add_argument("--show", action="store_true", help="print the table of the measured speed-*.json")
    parser.add_argument("--markdown", action="store_true", help="with --show: as a Markdown table")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    if args.show:
        show(args.markdown)
        return 0
    if not args.stream:
        parser.error("--stream is required (or --show)")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    from cml.io import write_json

    report = measure(args)
    variant = "" if args.modular == "laft_uriel" else f"-{args.modular}"
    output = args.output or RESULTS / f"speed-{report['stream']}{variant}.json"
    write_json(output, report)
    header, rows = table([report])
    for column, cell in zip(header, rows[0]):
        print(f"{column}: {cell}")
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    from cml.errors import exit_on_user_error

    with exit_on_user_error():
        sys.exit(main())

"""Speed benchmark: each figure is a ratio of two measurements taken in this one run (the machine is noisy).

    python benchmarks/speed.py [--config configs/benchmarks/speed.yaml]

- update training time of laft_uriel / full_finetune on the same data and epochs;
- routed inference over mixed-language batches (LAFT-URIEL's modules) / the same batches through one model;
- one update language served alone through its group's module: LoRA merged into the weights / LoRA beside them;
- achieved training FLOP/s / this machine's measured fp32 matmul FLOP/s (model FLOPs utilisation);
- bytes stored per update stage / a full checkpoint; peak resident memory.
Writes ``benchmarks/results/speed.json``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """fp32 FLOP/s of a square matmul: the ceiling that model FLOPs utilisation is measured against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def training_flops(model, features: list[dict], epochs: int) -> float:
    """6 x (non-embedding parameters) per token, forward and backward, plus attention's score and mix products
    (12 x layers x width x sequence length per token); embedding lookups cost no multiply-adds."""
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    dense = sum(p.numel() for p in model.parameters()) - embedding
    per_token_attention = 12 * config.num_hidden_layers * config.hidden_size
    flops = sum(len(f["input_ids"]) * (6 * dense + per_token_attention * len(f["input_ids"])) for f in features)
    return flops * epochs


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def stored_bytes(tensors: dict[str, torch.Tensor]) -> int:
    from cml.training.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(Path(folder) / "stage", tensors, {})
        return (Path(folder) / "stage" / "model.safetensors").stat().st_size


def timed_predict(model, task, features, batch_size: int, repeats: int = 2) -> float:
    from cml.evaluation.inference import predict

    predict(model, task, features[:batch_size], batch_size)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        predict(model, task, features, batch_size)
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "benchmarks" / "speed.yaml")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "speed.json")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from cml.config import load_config
    from cml.experiment import Experiment, frozen_embedding_names
    from cml.io import write_json
    from cml.routing import RoutedModel
    from cml.strategies import make_strategy

    config = load_config(args.config)
    experiment = Experiment(config)
    base = RoutedModel(experiment.task.seeded_model(config.seed), experiment.stream.languages)
    frozen = frozen_embedding_names(base)
    full_checkpoint = stored_bytes(base.state_dict())
    memory = {"after_load_mib": peak_rss_mib()}
    train_features = experiment.context("speed", 1).train_features
    results, models = {}, {}
    for strategy_config in config.strategies:
        strategy = make_strategy(strategy_config)
        ctx = experiment.context(strategy.name, 1)
        ctx.dev = {}  # training time only: no per-epoch dev evaluation
        ctx.checkpoint_dir = None
        model, record = strategy.update(copy.deepcopy(base), ctx)
        train = record["train"]
        results[strategy.name] = {"train_seconds": train["train_seconds"], "steps": train["steps"],
                                  "examples_per_second": train["examples_seen"] / train["train_seconds"],
                                  "stored_bytes": stored_bytes(strategy.saved_state(model, frozen))}
        memory[f"after_{strategy.name}_mib"] = peak_rss_mib()
        models[strategy.name] = model

    # Mixed-language batches: the test sets interleaved, so most batches hold several languages.
    test = [features for _, features in experiment.test.values()]
    mixed = [f for group in zip(*test) for f in group]
    batch_size = config.training.eval_batch_size
    single = timed_predict(models["full_finetune"], experiment.task, mixed, batch_size)
    modular = models["laft_uriel"]
    routed = timed_predict(modular, experiment.task, mixed, batch_size)
    alone_lang = next(lang for lang in modular.languages if modular.route_of(lang))
    alone = experiment.test[alone_lang][1]
    beside = timed_predict(modular, experiment.task, alone, batch_size, repeats=5)
    modular.eval().merge(modular.route_of(alone_lang))
    merged = timed_predict(modular, experiment.task, alone, batch_size, repeats=5)
    memory["peak_mib"] = peak_rss_mib()

    ceiling = matmul_flops()
    achieved = (training_flops(base.model, train_features, experiment.training_config(1).epochs)
                / results["full_finetune"]["train_seconds"])
    figures = {
        "laft_uriel_over_full_finetune_train_time": results["laft_uriel"]["train_seconds"]
        / results["full_finetune"]["train_seconds"],
        "routed_over_single_inference_time": routed / single,
        "merged_over_unmerged_lora_inference_time": merged / beside,
        "model_flops_utilisation": achieved / ceiling,
        "laft_uriel_stage_bytes_over_full_checkpoint": results["laft_uriel"]["stored_bytes"] / full_checkpoint,
        "full_finetune_stage_bytes_over_full_checkpoint": results["full_finetune"]["stored_bytes"] / full_checkpoint,
    }
    report = {"figures": figures, "strategies": results, "full_checkpoint_bytes": full_checkpoint,
              "inference": {"examples": len(mixed), "single_seconds": single, "routed_seconds": routed,
                            "examples_per_second_single": len(mixed) / single,
                            "examples_per_second_routed": len(mixed) / routed,
                            "served_alone": {"language": alone_lang, "route": list(modular.route_of(alone_lang)),
                                             "examples": len(alone), "unmerged_seconds": beside,
                                             "merged_seconds": merged}},
              "flops": {"achieved_training_flops_per_second": achieved, "matmul_flops_per_second": ceiling},
              "memory": memory, "torch_threads": torch.get_num_threads(),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_json(args.output, report)

    table = Table(title="speed ratios (measured in this run)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.3f}")
    table.add_row("training examples/s full_finetune, laft_uriel",
                  f"{results['full_finetune']['examples_per_second']:.1f}, "
                  f"{results['laft_uriel']['examples_per_second']:.1f}")
    table.add_row("achieved / matmul GFLOP/s", f"{achieved / 1e9:.1f} / {ceiling / 1e9:.1f}")
    table.add_row("peak memory (MiB)", f"{memory['peak_mib']:.0f}")
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

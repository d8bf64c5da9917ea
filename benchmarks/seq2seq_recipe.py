"""Ablation of the assembled encoder-decoder's two learning aids on lemmatisation (docs/method.md).

    python benchmarks/seq2seq_recipe.py [--lang deu] [--steps 250] [--pairs 1088]

Trains the embedded e5 encoder-decoder through cml's own trainer on one language's form -> lemma pairs for
a fixed number of steps, with and without ``model.source_embedding_skip`` and
``training.new_parameters_lr_scale``, and prints the final training loss and the exact match on held-out
pairs. Each variant is ~6 min on 2 CPU cores at the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [(False, 10.0), (True, 1.0), (True, 10.0)]  # (source_embedding_skip, new_parameters_lr_scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="deu")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--pairs", type=int, default=1088, help="sampled pairs; 80%% train, 10%% held out")
    args = parser.parse_args()

    from cml.config import load_config
    from cml.data.readers import read_dataset
    from cml.evaluation.inference import predict
    from cml.tasks import make_task
    from cml.training.trainer import make_accelerator, train

    common = [f"data.languages=[{args.lang}]", f"data.pairs_per_language={args.pairs}",
              f"training.max_steps={args.steps}", "training.epochs=1000", "training.select_best=false",
              "training.warmup_ratio=0.1"]
    base = load_config(REPO / "configs" / "lemmatization.yaml", common)
    splits = read_dataset(base.data, base.task).splits[args.lang]  # the same pairs for every variant
    print(f"{'skip':>5} {'lr scale':>8} {'final loss':>10} {'held-out EM':>11}")
    for skip, scale in VARIANTS:
        config = load_config(REPO / "configs" / "lemmatization.yaml", [
            *common, f"model.source_embedding_skip={str(skip).lower()}", f"training.new_parameters_lr_scale={scale}"])
        task = make_task(config.task, None, config.model)
        model = task.seeded_model(config.seed)
        result = train(model, task, task.features(splits["train"]), config.training,
                       accelerator=make_accelerator(config.training), seed=config.seed)
        predictions = predict(model, task, task.features(splits["test"]), config.training.eval_batch_size)
        exact = task.score(splits["test"], predictions)["exact_match"]
        print(f"{str(skip):>5} {scale:>8g} {result.epoch_losses[-1]:>10.2f} {100 * exact:>10.1f}%", flush=True)


if __name__ == "__main__":
    main()

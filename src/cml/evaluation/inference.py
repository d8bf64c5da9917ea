"""Batched, length-sorted inference that returns predictions in the examples' order."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.batching import sorted_batches


def predict(model: torch.nn.Module, task, features: Sequence[dict], batch_size: int, device=None,
            top_k: int | None = None) -> list:
    """One prediction per feature, in input order (with ``top_k``, its ``top_k`` most probable labels and their
    probabilities instead). Batches hold one language each (a routed model serves each with one route, its
    weights merged) sorted by length, which keeps padding (and time) low."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions: list = [None] * len(features)
    batches = sorted_batches([len(f["input_ids"]) for f in features], batch_size, [f.get("lang", "") for f in features])
    with torch.inference_mode():
        for indices in batches:
            batch = {k: v.to(device) for k, v in task.batch([features[i] for i in indices]).items()}
            outputs = task.predict(model, batch) if top_k is None else task.top_k(model, batch, top_k)
            for i, prediction in zip(indices, outputs):
                predictions[i] = prediction
    model.train(was_training)
    return predictions


def evaluate_languages(model, task, data: dict[str, tuple[Sequence, Sequence[dict]]], batch_size: int):
    """``{lang: (scores, predictions)}`` for ``data = {lang: (examples, features)}``."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    out = {}
    # one bar per machine under `accelerate launch`, as in training
    bar = tqdm(data.items(), desc="evaluate", unit="language", leave=False,
               disable=not PartialState().is_local_main_process)
    for lang, (examples, features) in bar:
        predictions = predict(model, task, features, batch_size)
        out[lang] = (task.score(examples, predictions), predictions)
    return out


def mean_primary(task, results: dict) -> float:
    return sum(scores[task.primary_metric] for scores, _ in results.values()) / max(len(results), 1)

"""Evaluation: batched per-language inference, per-example predictions, scores."""

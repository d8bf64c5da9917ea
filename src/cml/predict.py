"""Serve a finished run: load the deployed model of a strategy at a stage, detect or take each input's
language, route it, predict. A language outside the run goes to its nearest typological group (modular
strategies) or the previous model, and the output says which route served it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from .config import ExperimentConfig, validated
from .data.examples import Example
from .errors import CMLError
from .io import decode_text, parse_json
from .languages import canonical
from .models.embedded import quiet_transformers
from .routing import RoutedModel, route_name
from .run_folder import INITIAL, WEIGHTS, RunFolder
from .saved_stages import load_finished_stage
from .strategies import StageContext, make_strategy
from .task_family import TaskFamily
from .tasks import make_task
from .training.checkpoint import load_model_state


class Predictor:
    """Serves a routed model: ``predict`` takes inputs with their languages and yields predictions with the route
    that served each. Built from a run folder (:meth:`from_run`) or a release (:func:`cml.release.api`); both
    are untrusted input: their configs are validated as strictly as a config file, nothing in them can allow
    remote code (only ``trust_remote_code``, the command line's flag, does), and weights load from safetensors
    only.

    One Predictor may serve several threads (a web server's): a routed forward switches the model's active
    modules and merges a route's LoRA weights into the shared base weights, so two batches of different routes
    running at once would each run on the other's weights and could leave them merged. A lock makes each chunk's
    routing and forward one step; other threads wait, and the generator never holds it while it yields."""

    def __init__(self, task, model: RoutedModel, languages: list[str], strategy=None,
                 served_by: dict | None = None, batch_size: int = 64, scope: str = "run", base: str = "previous"):
        """``scope`` and ``base`` are the words the outputs use: what the languages are ``in the <scope>`` or
        ``outside`` of, and the route name of the network without modules."""
        self.task, self.model, self.strategy = task, model, strategy
        self.scope, self.base = scope, base
        self.languages = list(languages)
        self.task.languages = self.languages
        self.served_by = dict(served_by or {})
        self.batch_size = batch_size
        self.model.eval()
        self._serving = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: str | Path, stage: int | None = None, strategy: str | None = None,
                 trust_remote_code: bool = False) -> Predictor:
        """The deployed model of ``strategy`` (default: the run's reference strategy) after ``stage`` (default:
        the last) of the finished run in ``run_dir``."""
        folder = RunFolder(run_dir)
        if not folder.finished():
            raise CMLError("no results.json: is this a finished run folder or a release folder?", file=folder.root)
        results = folder.read_results()
        path = folder.results_file
        config = validated(ExperimentConfig, results.config, None, path)
        config.allow_remote_code(trust_remote_code)
        languages = list(results.languages)
        names = [entry.label for entry in config.strategies]
        strategy_name = strategy or results.reference_strategy
        if strategy_name not in names:
            raise CMLError(f"no strategy {strategy_name!r} in this run; it has: {', '.join(names)}")
        stages = len(config.stream.stages)
        stage = stages - 1 if stage is None else stage
        if not 0 <= stage < stages:
            raise CMLError(f"--stage must be between 0 and {stages - 1}")
        if not results.labels and config.task is not TaskFamily.seq2seq:
            raise CMLError("no `labels`: a classification or tagging run has its label set", file=path)
        task = make_task(config.task, results.labels, config.model)
        task.languages = list(languages)

        def stage_dir(name: str, index: int) -> Path:
            stage = folder.stage_dir(name, index, config.stream.stages[index].name)
            if not (stage / WEIGHTS).is_file():
                raise CMLError(f"stage {index} of {name} is not in the run folder", file=stage)
            return stage

        with quiet_transformers():  # its "newly initialized" head is replaced by the stage's weights next
            model = RoutedModel(task.seeded_model(config.seed), languages)
        load_model_state(model, stage_dir(INITIAL, 0))
        served = None
        if stage > 0:
            served = make_strategy(next(s for s in config.strategies if s.label == strategy_name))
            saved = stage_dir(strategy_name, stage)
            context = StageContext(task=task, stage=None, index=stage, languages=languages, train_features=[],
                                   dev={}, training=config.training, accelerator=None, seed=0)
            model = load_finished_stage(served, model, folder.read_stage(saved)["record"], context, saved)
        return cls(task, model, languages, served, {"strategy": strategy_name, "stage": stage},
                   config.training.eval_batch_size)

    def route(self, lang: str) -> tuple[str, tuple[str, ...]]:
        """Register ``lang`` if new; return (how it is served, its route)."""
        if lang not in self.languages:
            self.languages.append(lang)
            self.task.languages = self.languages
            self.model.languages = self.languages
            route = self.strategy.route_for_new_language(lang, self.languages[:-1]) if self.strategy else ()
            self.model.routes[lang] = route
            return f"outside the {self.scope}", route
        return f"in the {self.scope}", self.model.route_of(lang)

    def placeholder(self, text: str, lang: str, index: int) -> Example:
        """An example whose (unused) reference only satisfies the encoders' shapes."""
        if self.task.family is TaskFamily.tagging:
            tokens = tuple(text.split())
            return Example(str(index), lang, tokens=tokens, tags=(self.task.labels[0],) * len(tokens))
        if self.task.family is TaskFamily.classification:
            return Example(str(index), lang, text=text, label=self.task.labels[0])
        return Example(str(index), lang, text=text, target=text)

    def predict(self, items: Iterable[dict], chunk: int = 64, top_k: int | None = None) -> Iterator[dict]:
        """Predictions in input order; inputs are read in chunks of ``chunk`` lines and batched a language at a
        time, length-sorted (each batch runs with its route's LoRA weights merged into the base weights, except in
        generation, which runs them beside the base weights). With
        ``top_k`` each output also has ``top_k``: the most probable labels with their probabilities (per word
        for tagging), the prediction being the first."""
        from itertools import islice

        from .evaluation.inference import predict

        items = iter(items)
        while part := list(islice(items, chunk)):
            with self._serving, torch.inference_mode():
                served = [self.route(item["lang"]) for item in part]
                examples = [self.placeholder(item["text"], item["lang"], i) for i, item in enumerate(part)]
                predictions = predict(self.model, self.task, self.task.features(examples), self.batch_size,
                                      top_k=top_k)
            for item, (how, route), prediction in zip(part, served, predictions):
                ranked = {}
                if top_k is not None:
                    ranked = {"top_k": prediction}
                    prediction = _first_labels(prediction)
                yield {**item, "prediction": prediction, **ranked, "served": how,
                       "route": route_name(route, self.base), **self.served_by}


def _first_labels(ranked: list):
    """The most probable label of a ranked prediction: one for a sentence, one per word for tagging."""
    return [_first_labels(word) for word in ranked] if ranked and isinstance(ranked[0], list) else ranked[0]["label"]


class LanguageDetector:
    """py3langid (offline, 97 languages), optionally restricted to a set of languages."""

    def __init__(self, restrict_to: list[str] | None = None):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if restrict_to:
            known = {canonical(code): code for code in self.identifier.nb_classes if _known(code)}
            allowed = [known[lang] for lang in restrict_to if lang in known]
            if allowed:
                self.identifier.set_languages(allowed)

    def __call__(self, text: str) -> tuple[str, float]:
        code, probability = self.identifier.classify(text)
        return canonical(code), float(probability)


def _known(code: str) -> bool:
    try:
        canonical(code)
    except CMLError:
        return False
    return True


MAX_INPUT_CHARS = 100_000


def read_inputs(lines: Iterable[bytes | str], lang: str | None,
                detector: LanguageDetector | None) -> Iterator[dict]:
    """JSONL objects (``text``, optional ``lang``) or plain text lines, in order; blank lines are skipped.
    Lines may be bytes (standard input as it comes): bytes that are not UTF-8 are an error naming the line."""
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = decode_text(line, "<stdin>", first_line=number)
            if "\x00" in line:
                raise CMLError("binary input (a NUL byte): expected text or JSON lines", file="<stdin>", line=number)
        if not line.strip():
            continue
        length = len(line.rstrip("\r\n"))
        if length > MAX_INPUT_CHARS:  # the tokenizer would hold the whole line before truncating it
            raise CMLError(f"line of {length:,} characters; at most {MAX_INPUT_CHARS:,}", file="<stdin>", line=number)
        if line.lstrip().startswith("{"):
            item = parse_json(line, file="<stdin>", line=number)
            if not isinstance(item, dict) or "text" not in item:
                raise CMLError("a JSON input needs a `text` field", file="<stdin>", line=number)
            if not isinstance(item["text"], str) or not item["text"].strip():
                raise CMLError(f"`text` must be a non-empty string, got {json.dumps(item['text'])[:40]}",
                               file="<stdin>", line=number)
            if item.get("lang") is not None and not isinstance(item["lang"], str):
                raise CMLError(f"`lang` must be a string, got {json.dumps(item['lang'])[:40]}",
                               file="<stdin>", line=number)
        else:
            item = {"text": line.rstrip("\r\n")}
        if item.get("lang"):
            item["lang"] = _input_language(item["lang"], number)
        elif lang and lang != "auto":
            item["lang"] = canonical(lang)
        else:
            item["lang"], item["lang_probability"] = detector(item["text"])
            item["lang_detected"] = True
        yield item


def _input_language(code: str, number: int) -> str:
    try:
        return canonical(code)
    except CMLError as err:
        raise CMLError(err.message, file="<stdin>", line=number) from None

"""Serve a finished run: load the deployed model of a strategy at a stage, detect or take each input's
language, route it, predict. A language outside the run goes to its nearest typological group (modular
strategies) or the previous model, and the output says which route served it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from .config import ExperimentConfig
from .data.examples import Example, TaskFamily
from .errors import CMLError
from .languages import canonical
from .routing import RoutedModel
from .strategies import StageContext, make_strategy
from .tasks import make_task
from .training.checkpoint import load_model_state, read_state


class Predictor:
    def __init__(self, run_dir: str | Path, stage: int | None = None, strategy: str | None = None):
        from .experiment import INITIAL, build_model

        self.run_dir = Path(run_dir)
        path = self.run_dir / "results.json"
        if not path.is_file():
            raise CMLError("no results.json: is this a finished run folder?", file=self.run_dir)
        self.results = json.loads(path.read_text(encoding="utf-8"))
        self.config = ExperimentConfig.model_validate(self.results["config"])
        self.languages = list(self.results["languages"])
        self.strategy_name = strategy or self.results["reference_strategy"]
        if self.strategy_name not in self.results["strategies"]:
            raise CMLError(f"no strategy {self.strategy_name!r} in this run; it has: "
                           f"{', '.join(self.results['strategies'])}")
        stages = self.results["strategies"][self.strategy_name]["stages"]
        self.stage = len(stages) - 1 if stage is None else stage
        if not 0 <= self.stage < len(stages):
            raise CMLError(f"--stage must be between 0 and {len(stages) - 1}")
        self.task = make_task(self.config.task, self.results["labels"], self.config.model)
        self.task.languages = list(self.languages)
        self.model = RoutedModel(build_model(self.task, self.config), self.languages)
        load_model_state(self.model, self._stage_dir(INITIAL, 0))
        self.strategy = None
        if self.stage > 0:
            config = next(s for s in self.config.strategies if s.label == self.strategy_name)
            self.strategy = make_strategy(config)
            folder = self._stage_dir(self.strategy_name, self.stage)
            context = StageContext(task=self.task, stage=None, index=self.stage, languages=self.languages,
                                   train_features=[], dev={}, training=self.config.training, accelerator=None, seed=0)
            self.model = self.strategy.restore(self.model, read_state(folder)["record"], context)
            load_model_state(self.model, folder)
        self.model.eval()

    def _stage_dir(self, strategy: str, index: int) -> Path:
        matches = sorted((self.run_dir / "stages" / strategy).glob(f"{index}-*"))
        if not matches:
            raise CMLError(f"stage {index} of {strategy} is not in the run folder", file=self.run_dir)
        return matches[0]

    def route(self, lang: str) -> tuple[str, tuple[str, ...]]:
        """Register ``lang`` if new; return (how it is served, its route)."""
        if lang not in self.languages:
            self.languages.append(lang)
            self.task.languages = self.languages
            self.model.languages = self.languages
            route = self.strategy.route_for_new_language(lang, self.languages[:-1]) if self.strategy else ()
            self.model.routes[lang] = route
            return "outside the run", route
        return "in the run", self.model.route_of(lang)

    def placeholder(self, text: str, lang: str, index: int) -> Example:
        """An example whose (unused) reference only satisfies the encoders' shapes."""
        if self.task.family is TaskFamily.tagging:
            tokens = tuple(text.split())
            return Example(str(index), lang, tokens=tokens, tags=(self.task.labels[0],) * len(tokens))
        if self.task.family is TaskFamily.classification:
            return Example(str(index), lang, text=text, label=self.task.labels[0])
        return Example(str(index), lang, text=text, target=text)

    def predict(self, items: Iterable[dict], chunk: int = 64) -> Iterator[dict]:
        """Predictions in input order; inputs are batched (length-sorted) in chunks of ``chunk`` lines. A chunk
        that one route serves alone runs with that route's LoRA weights merged into the base weights."""
        from itertools import islice

        from .evaluation.inference import predict

        items = iter(items)
        while part := list(islice(items, chunk)):
            served = [self.route(item["lang"]) for item in part]
            if len({route for _, route in served}) == 1:  # one route serves the whole chunk: fold it in
                self.model.merge(served[0][1])
            examples = [self.placeholder(item["text"], item["lang"], i) for i, item in enumerate(part)]
            with torch.inference_mode():
                predictions = predict(self.model, self.task, self.task.features(examples),
                                      self.config.training.eval_batch_size)
            for item, (how, route), prediction in zip(part, served, predictions):
                yield {**item, "prediction": prediction, "served": how, "route": "+".join(route) or "previous",
                       "strategy": self.strategy_name, "stage": self.stage}


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


def read_inputs(lines: Iterable[str], lang: str | None, detector: LanguageDetector | None) -> Iterator[dict]:
    """JSONL objects (``text``, optional ``lang``) or plain text lines, in order; blank lines are skipped."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise CMLError(f"invalid JSON: {err.msg}", file="<stdin>", line=number) from None
            if "text" not in item:
                raise CMLError("a JSON input needs a `text` field", file="<stdin>", line=number)
        else:
            item = {"text": line.rstrip("\n")}
        if item.get("lang"):
            item["lang"] = canonical(item["lang"])
        elif lang and lang != "auto":
            item["lang"] = canonical(lang)
        else:
            item["lang"], item["lang_probability"] = detector(item["text"])
            item["lang_detected"] = True
        yield item

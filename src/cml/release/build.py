"""Making releases: ``train`` (the initial model, from a backbone and data with train, dev and test splits) and
``update`` (a release or a checkpoint with its task head, plus a new batch of labelled data for some languages).

An update scores every language the model serves on the ``eval`` test sets before and after, with a 95% paired
bootstrap interval per language and metric, and records the ship gate's verdict; the release is written (a
folder that appears whole or not at all) whatever the verdict, so that it can be inspected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import FullFinetuneConfig, ModelConfig, ReleaseConfig, TrainConfig, UpdateConfig
from ..data.examples import Example, MultilingualDataset
from ..data.readers import read_dataset
from ..data.stream import Stage
from ..errors import CMLError
from ..evaluation.cml_metrics import metric_changes
from ..evaluation.inference import predict
from ..io import new_folder, refuse_overlap, write_text
from ..models.embedded import quiet_transformers
from ..routing import RoutedModel
from ..strategies import StageContext, make_strategy
from ..strategies.modular import ModularStrategy
from ..task_family import TaskFamily
from ..tasks import make_task
from .ship import check_metric, judge
from ..training.trainer import make_accelerator
from ..versions import package_versions
from .manifest import (ADAPTER_DIR, MODEL_DIR, PREDICTIONS, Change, LanguageResult, ModularState, Origin,
                       Reference, ReleaseRecord, fingerprint_files, now, write_manifest, written_by_cml)
from .model import Source, base_format, copy_base, grow_head, load_model, open_source, save_adapters, save_base

NEEDS_EARLIER_DATA = ("ewc", "replay", "laft_replay")  # they read earlier stages' data, which a release does not keep


@dataclass
class Scored:
    """One model's test results on one language: the metrics, the predictions and each item's scores."""

    metrics: dict
    predictions: list
    items: dict[str, list[float]]


def _read(config: ReleaseConfig, key: str, required: tuple[str, ...]) -> MultilingualDataset:
    source = getattr(config, key)
    with config.locating_errors():
        return read_dataset(source, config.task, required)


def _split(dataset: MultilingualDataset, split: str, languages: list[str], what: str) -> dict[str, list[Example]]:
    missing = [lang for lang in languages if not dataset.splits.get(lang, {}).get(split)]
    if missing:
        raise CMLError(f"{what} has no {split} examples for {', '.join(missing[:10])}"
                       f"{f' and {len(missing) - 10} more' if len(missing) > 10 else ''}: every language the model "
                       f"serves needs a {split} set", file=dataset.source)
    return {lang: dataset.splits[lang][split] for lang in languages}


def _numeric(metrics: dict) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def score(model: RoutedModel, task, test: dict[str, list[Example]], batch_size: int) -> dict[str, Scored]:
    """Every language's test results (metrics, predictions, per-item scores of every metric that has them)."""
    from tqdm.auto import tqdm

    results = {}
    for lang, examples in tqdm(test.items(), desc="test", unit="language", leave=False):
        predictions = predict(model, task, task.features(examples), batch_size)
        results[lang] = Scored(task.score(examples, predictions), predictions,
                               task.item_metric_scores(examples, predictions))
    return results


def changes(before: dict[str, Scored], after: dict[str, Scored], resamples: int,
            seed: int) -> tuple[dict[str, dict[str, Change]], dict[str, dict]]:
    """For the languages scored before and after, every metric with item scores on both sides: {language:
    {metric: Change}} and {metric: the summary figures over languages}
    (:func:`cml.evaluation.cml_metrics.metric_changes`)."""
    langs = [lang for lang in after if lang in before]
    metrics = [metric for metric in after[langs[0]].items if all(
        metric in before[lang].items and metric in _numeric(before[lang].metrics) for lang in langs)] if langs else []
    figures = metric_changes(
        {metric: {lang: _numeric(before[lang].metrics)[metric] for lang in langs} for metric in metrics},
        {metric: {lang: _numeric(after[lang].metrics)[metric] for lang in langs} for metric in metrics},
        {metric: {lang: (before[lang].items[metric], after[lang].items[metric]) for lang in langs} for metric in metrics},
        resamples=resamples, seed=seed)
    by_language = {lang: {metric: Change(**figures[metric]["languages"][lang]) for metric in figures} for lang in langs}
    return by_language, {metric: {key: value for key, value in summary.items() if key != "languages"}
                         for metric, summary in figures.items()}


def _prediction_lines(task, test: dict[str, list[Example]], scored: dict[str, Scored]) -> str:
    import json

    lines = []
    for lang, examples in test.items():
        for i, (example, prediction) in enumerate(zip(examples, scored[lang].predictions)):
            lines.append(json.dumps({"lang": lang, "id": example.id, "prediction": prediction,
                                     "scores": {m: items[i] for m, items in scored[lang].items.items()}},
                                    ensure_ascii=False) + "\n")
    return "".join(lines)


def _model_settings(task) -> dict:
    """What serving needs besides the weights: the model settings, with the input length the tokenizer allows."""
    return {**task.model_config.model_dump(mode="json", exclude={"name"}), "max_length": task.max_length}


def _model_config(model: ModelConfig, parent: Source) -> ModelConfig:
    """The update's model settings: the parent release's (its max_length, decoding), then what the config sets,
    with the model being the parent's."""
    inherited = parent.record.model_settings if parent.record else {}
    settings = {**inherited, **model.model_dump(exclude_unset=True), "name": parent.model}
    config = ModelConfig.model_validate(settings)
    config._trust_remote_code = model.trust_remote_code
    return config


def _context(task, name: str, train: dict[str, list[Example]], dev: dict, languages: list[str], training,
             accelerator, seed: int) -> StageContext:
    return StageContext(task=task, stage=Stage(name=name, train=train), index=1, languages=languages,
                        train_features=[f for lang in sorted(train) for f in task.features(train[lang])],
                        dev={lang: (examples, task.features(examples)) for lang, examples in dev.items()},
                        training=training, accelerator=accelerator, seed=seed)


def _finish(folder: Path, record: ReleaseRecord, task, test, scored) -> ReleaseRecord:
    from .report import write_report

    write_text(folder / PREDICTIONS, _prediction_lines(task, test, scored))
    record.files = fingerprint_files(folder)
    write_manifest(folder, record)
    write_report(folder, record)
    return record


def train(config: TrainConfig, out: str | Path, *, overwrite: bool = False) -> ReleaseRecord:
    """``cml train``: fine-tune ``config.model`` on every language of ``config.data`` (train split), keep the
    best epoch on dev, score on test, and write the release to ``out``."""
    dataset = _read(config, "data", ("train", "dev", "test"))
    languages = dataset.languages
    train_data, dev, test = (_split(dataset, split, languages, "the data") for split in ("train", "dev", "test"))
    with config.locating_errors():
        task = make_task(config.task, dataset.label_set or dataset.observed_labels(), config.model,
                         config.evaluation.primary_metric)
    task.languages = languages
    training = config.resolved_training
    with new_folder(out, overwrite=overwrite, what="release folder", replaceable=written_by_cml) as folder:
        accelerator = make_accelerator(training, folder)
        with quiet_transformers():  # its load report calls the new head "newly initialized", as it should be
            model = RoutedModel(task.seeded_model(config.seed), languages)
        ctx = _context(task, config.name, train_data, dev, languages, training, accelerator, config.seed)
        started = time.perf_counter()
        model, artifacts = make_strategy(FullFinetuneConfig(method="full_finetune")).update(model, ctx)
        seconds = time.perf_counter() - started
        scored = score(model, task, test, training.eval_batch_size)
        save_base(model, task, folder / MODEL_DIR)
        record = ReleaseRecord(
            name=config.name, kind="train", created=now(), task=config.task, primary_metric=task.primary_metric,
            languages=languages, labels=task.labels, origin=Origin(kind="backbone", name=config.model.name),
            backbone=config.model.name, base_format=base_format(task), strategy={"method": "full_finetune"},
            trained={"train": artifacts["train"], "seconds": seconds},
            model_settings=_model_settings(task), training=training.model_dump(mode="json"),
            data=dict(sorted(dataset.inputs.items())), eval_data=dict(sorted(dataset.inputs.items())),
            results={lang: LanguageResult(updated=True, train_examples=len(train_data[lang]),
                                          test_examples=len(test[lang]), scores=_numeric(scored[lang].metrics))
                     for lang in languages},
            files={}, versions=package_versions())
        return _finish(folder, record, task, test, scored)


@dataclass
class UpdatePlan:
    """What every strategy of one ``cml update`` shares: the parent, the task and the stage context."""

    parent: Source
    task: object
    parent_task: object  # the task with the parent's labels, which builds the parent's network
    languages: list[str]
    test: dict[str, list[Example]]
    ctx: StageContext

    @property
    def grows_head(self) -> bool:
        return len(self.task.labels) > len(self.parent.labels)

    def parent_model(self, grow: bool = True) -> RoutedModel:
        """The parent's network; with ``grow``, its head widened to the task's labels (which start with the
        parent's, so the parent's outputs keep their meaning either way)."""
        model = load_model(self.parent_task, self.parent.record, self.parent.folder, self.languages)
        if grow and self.grows_head:
            self.grow(model)
        return model

    def grow(self, model: RoutedModel) -> None:
        self.task.new_parameter_names = grow_head(model.model, self.task, self.parent.labels)

    def check(self, strategy) -> None:
        """Whether ``strategy`` can update this parent: a CMLError saying why not."""
        record = self.parent.record
        modular = isinstance(strategy, ModularStrategy)
        if modular and self.grows_head:
            raise CMLError(f"{strategy.config.method} cannot grow the head: each of its modules trains its own copy "
                           "of it, and the languages served by the base would get the new labels' untrained rows; "
                           "grow it with a full-model update (full_finetune) first")
        if record is None or not record.modules:
            return
        if not modular:
            raise CMLError(f"the parent release serves its languages through adapters ({', '.join(record.modules)}); "
                           f"a {strategy.config.method} update needs one model: `cml export --format merged` it and "
                           "update from the merged folder of a route, or continue with a modular strategy")
        if record.strategy.get("method") != strategy.config.method:
            raise CMLError(f"the parent's modules were made by {record.strategy.get('method')}; this update is "
                           f"{strategy.config.method}: continue with the same method")

    def apply(self, strategy, model: RoutedModel) -> tuple[RoutedModel, dict, float, dict[str, Scored]]:
        """``strategy``'s update of ``model`` (the parent's network), its record, seconds and test results."""
        if isinstance(strategy, ModularStrategy) and self.parent.record is not None and self.parent.record.modules:
            model = strategy.restore(model, self.parent.record.strategy_state.model_dump(), self.ctx)
        started = time.perf_counter()
        model, artifacts = strategy.update(model, self.ctx)
        seconds = time.perf_counter() - started
        model.eval()
        return model, artifacts, seconds, score(model, self.task, self.test, self.ctx.training.eval_batch_size)


def update(config: UpdateConfig, source: str | Path, out: str | Path, *, grow: bool = False,
           overwrite: bool = False) -> ReleaseRecord:
    """``cml update``: apply ``config.strategy`` to ``source`` (a release, or a checkpoint with its task head)
    with every example of ``config.data``; score every served language on ``config.eval`` before and after;
    judge by ``config.ship``; write the release to ``out``. ``config.references`` are applied to the same
    parent and batch and recorded beside it (or why they could not be). Returns the record
    (``record.verdict.ship``)."""
    for index, strategy_config in enumerate((config.strategy, *config.references)):
        if strategy_config.method in NEEDS_EARLIER_DATA:
            key = "strategy.method" if index == 0 else f"references.{index - 1}.method"
            raise CMLError(f"{strategy_config.method} needs the data of earlier updates, which a release does not "
                           "keep; use it in `cml run`, or choose another strategy", key=key)
    parent = open_source(str(source), config.task, config.model.trust_remote_code)
    refuse_overlap(out, parent.folder)
    batch = _read(config, "data", ())
    evaluation = _read(config, "eval", ("dev", "test"))
    served = list(parent.record.languages) if parent.record else evaluation.languages
    languages = served + sorted(set(batch.languages) - set(served))
    train_data = {lang: [e for split in ("train", "dev", "test") for e in batch.splits[lang][split]]
                  for lang in batch.languages}
    dev = _split(evaluation, "dev", languages, "the eval data")
    test = _split(evaluation, "test", languages, "the eval data")
    labels = _labels(config, parent, batch, evaluation, grow)
    model_config = _model_config(config.model, parent)
    with config.locating_errors():
        task = make_task(config.task, labels, model_config, config.evaluation.primary_metric)
        check_metric(config.ship.metric, task, "ship.metric")
    parent_task = task if labels == parent.labels else make_task(config.task, parent.labels, model_config,
                                                                    config.evaluation.primary_metric)
    task.languages = parent_task.languages = languages
    strategy, *others = (make_strategy(entry) for entry in (config.strategy, *config.references))
    training = config.resolved_training
    resamples, seed = config.evaluation.resamples, config.evaluation.seed
    with new_folder(out, overwrite=overwrite, what="release folder", replaceable=written_by_cml) as folder:
        ctx = _context(task, config.name, train_data, dev, languages, training, make_accelerator(training, folder),
                       config.seed)
        plan = UpdatePlan(parent, task, parent_task, languages, test, ctx)
        with config.locating_errors():
            try:
                plan.check(strategy)
            except CMLError as err:
                raise CMLError(err.message, key="strategy") from None
        model = plan.parent_model(grow=False)
        # the parent's head outputs its own labels, a prefix of the task's: its predictions mean the same
        before = score(model, task, {lang: test[lang] for lang in served}, training.eval_batch_size)
        if plan.grows_head:
            plan.grow(model)
        if isinstance(strategy, ModularStrategy):  # the base every route starts from: the parent's network
            if parent.record is not None and parent.record.modules:
                copy_base(parent.folder / MODEL_DIR, folder / MODEL_DIR, link_weights=True)
            else:
                save_base(model, task, folder / MODEL_DIR)
        model, artifacts, seconds, after = plan.apply(strategy, model)
        if isinstance(strategy, ModularStrategy):
            modules = save_adapters(model, folder / ADAPTER_DIR)
            state = ModularState(**{key: artifacts[key] for key in ("groups", "modules", "routes")})
        else:
            save_base(model, task, folder / MODEL_DIR)
            modules, state = [], None
        routes = {lang: list(model.route_of(lang)) for lang in languages}
        del model
        by_language, summary = changes(before, after, resamples, seed)
        references = {reference.name: _reference(plan, reference, before, config) for reference in others}
        gate = artifacts.get("gate") or {}
        record = ReleaseRecord(
            name=config.name, kind="update", created=now(), task=config.task, primary_metric=task.primary_metric,
            languages=languages, labels=task.labels, origin=parent.origin,
            backbone=parent.record.backbone if parent.record else parent.model,
            base_format=parent.record.base_format if parent.record else "hf", strategy=config.strategy.model_dump(mode="json"),
            trained={"train": artifacts.get("train"), "seconds": seconds},
            strategy_state=state, modules=modules, model_settings=_model_settings(task),
            training=training.model_dump(mode="json"), data=dict(sorted(batch.inputs.items())),
            eval_data=dict(sorted(evaluation.inputs.items())),
            results={lang: LanguageResult(route=routes[lang], updated=lang in train_data,
                                          train_examples=len(train_data.get(lang, ())), test_examples=len(test[lang]),
                                          scores=_numeric(after[lang].metrics), changes=by_language.get(lang, {}),
                                          gate=gate.get(lang))
                     for lang in languages},
            summary=summary, verdict=judge(by_language, task.primary_metric, config.ship),
            references=references, files={}, versions=package_versions())
        return _finish(folder, record, task, test, after)


def _reference(plan: UpdatePlan, strategy, before: dict[str, Scored], config: UpdateConfig) -> Reference:
    """``strategy`` applied to the same parent and batch, for comparison; where it cannot apply to this parent
    (a full-model strategy after a modular release), why not."""
    settings = strategy.config.model_dump(mode="json")
    try:
        plan.check(strategy)
    except CMLError as err:
        return Reference(strategy=settings, skipped=err.message)
    _, _, _, after = plan.apply(strategy, plan.parent_model())
    by_language, summary = changes(before, after, config.evaluation.resamples, config.evaluation.seed)
    return Reference(strategy=settings, changes=by_language, summary=summary,
                     verdict=judge(by_language, plan.task.primary_metric, config.ship))


def _labels(config: UpdateConfig, parent: Source, batch: MultilingualDataset, evaluation: MultilingualDataset,
            grow: bool) -> list[str]:
    """The parent's label map in its own order; labels the new data brings are appended when ``grow``, else
    they are an error (a head cannot predict a label it has no row for)."""
    if config.task is TaskFamily.seq2seq:
        return []
    known = set(parent.labels)
    new = sorted({label for dataset in (batch, evaluation) for label in dataset.observed_labels()} - known)
    if new and not grow:
        raise CMLError(f"the new data has labels the model does not: {', '.join(new[:10])}; pass --grow-head to "
                       "add them to its head (the old labels keep their ids)", file=batch.source)
    return list(parent.labels) + new

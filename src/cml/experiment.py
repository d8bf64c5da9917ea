"""The CML experiment recipe: train the initial model on stage 0, apply each update stage, evaluate every
language after every stage, and write ``results.json``. Interrupted runs continue with ``resume``.

Under ``accelerate launch`` every process runs this whole recipe (training is data-parallel; evaluation is
repeated on each process with the same weights, so all get the same scores); only the main process writes
files, and no process reads what another wrote during the run.

The run folder's layout and records: :mod:`cml.run_folder`.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import ExperimentConfig, FullFinetuneConfig, TrainingConfig, with_overrides
from .data.examples import stable_hash
from .data.readers import read_dataset
from .data.stream import Stream, build_stream
from .errors import CMLError
from .evaluation.cml_metrics import REFERENCE, SUMMARY_KEYS, summarize_run
from .evaluation.inference import evaluate_languages, predict
from .io import FolderLock, read_json, remove_stale_temporaries, write_json, write_text
from .routing import RoutedModel
from .run_folder import FORMAT_VERSION, INITIAL, OUTPUTS, STATE, WEIGHTS, RunFolder, stage_state
from .saved_stages import load_finished_stage
from .strategies import StageContext, make_strategy
from .task_family import TaskFamily
from .tasks import make_task
from .training.checkpoint import load_model_state, save_checkpoint, verify_checkpoint
from .training.tracking import Tracking, start_tracking
from .training.trainer import LATEST, make_accelerator
from .versions import package_versions

log = logging.getLogger("cml.run")
class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when it emits: the run's handler outlives the run
    (several runs in one process, a test runner swapping the stream), and a stream captured at set-up may be
    closed by then."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _setup_logging(log_file: Path) -> None:
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loud = _CurrentStderr()  # warnings also on stderr: a stage that learned nothing must not pass unseen
    loud.setLevel(logging.WARNING)
    loud.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.cml_run = loud.cml_run = True
    root = logging.getLogger("cml")
    root.handlers = [h for h in root.handlers if not getattr(h, "cml_run", False)] + [handler, loud]
    root.setLevel(logging.INFO)


def learning_warnings(task, artifacts: dict, predictions: dict[str, list]) -> list[str]:
    """What says a stage learned nothing: a dev score that never left its first value over several epochs,
    or one label predicted for every test item of every language (classification and tagging)."""
    warnings = []
    losses = (artifacts.get("train") or {}).get("epoch_losses") or []
    if any(loss != loss for loss in losses):  # NaN
        warnings.append("the training loss became NaN: the weights are broken (lower the learning rate)")
    history = (artifacts.get("train") or {}).get("dev_history") or []
    if len(history) >= 2 and max(history) - min(history) < 1e-9:
        warnings.append(f"the dev {task.primary_metric} stayed at {history[0]:.4f} in all {len(history)} epochs: "
                        "the model may have learned nothing (raise the learning rate or new_parameters_lr_scale)")
    if task.family is not TaskFamily.seq2seq:
        labels = {label for outputs in predictions.values() for output in outputs
                  for label in (output if isinstance(output, list) else [output])}
        if len(labels) == 1 and sum(map(len, predictions.values())) > 1:
            warnings.append(f"every test prediction of every language is {next(iter(labels))!r}: the model "
                            "predicts one label for everything")
    return warnings


def frozen_embedding_names(model: torch.nn.Module) -> tuple[str, ...]:
    """State-dict names that hold the (frozen, tied) input embedding table: never stored per stage."""
    weight = model.get_input_embeddings().weight
    return tuple(name for name, tensor in model.state_dict(keep_vars=True).items()
                 if tensor.data_ptr() == weight.data_ptr())


def stage_training_config(config: ExperimentConfig, index: int) -> TrainingConfig:
    """Stage 0 trains with ``training``; updates with ``training`` overridden by ``update_training``."""
    return config.training if index == 0 else with_overrides(config.training, config.update_training)


def stage_settings(config: ExperimentConfig, stream: Stream, index: int, strategy_config=None,
                   inputs: dict[str, str] | None = None) -> dict:
    """What stage ``index`` of a run depends on, as JSON. The stages' data enter by example ids, so a stage 0
    shared by runs whose later stages differ (the benchmark's update kinds) has the same settings in each;
    ``inputs`` fingerprints the files they were read from (a relabelled test file changes no id)."""
    data_ids = [stable_hash(*sorted(f"{e.id}@{lang}" for lang, examples in stage.train.items() for e in examples))
                for stage in stream.stages[:index + 1]]
    return {"task": config.task.value, "data": config.data.model_dump(mode="json"), "stage_data": data_ids,
            "model": config.model.model_dump(mode="json"), "inputs": inputs,
            "training": training_settings(stage_training_config(config, index)),
            "seed": config.seed,
            # it picks the best epoch and is what the stage record's scores hold
            "primary_metric": config.evaluation.primary_metric,
            "strategy": strategy_settings(strategy_config) if strategy_config is not None else None}


def strategy_settings(strategy_config) -> dict:
    """A strategy's config as a stage's settings hold it (:func:`without_added_defaults`)."""
    return without_added_defaults(strategy_config.model_dump(mode="json"), ADDED_OPTIONS)


def training_settings(training: TrainingConfig) -> dict:
    """A stage's training config as its settings hold it (:func:`without_added_defaults`)."""
    return without_added_defaults(training.model_dump(mode="json"), ADDED_TRAINING_DEFAULTS)


def without_added_defaults(settings: dict, added: dict[str, bool]) -> dict:
    """``settings`` without the options in ``added`` that are at the default given there: options added since
    runs were saved change nothing at their default, so they enter a stage's settings only when set otherwise,
    and a stage saved before they existed (without the key) stays reusable."""
    for option, default in added.items():
        if settings.get(option) is default:
            del settings[option]
    return settings


ADDED_OPTIONS = {"batches_by_route": False, "borrowed_routes": True}
"""Strategy options that came after stages were saved without them, with the default those stages ran at."""

ADDED_TRAINING_DEFAULTS = {"dropout": True}
"""Training settings that came after stages were saved without them, with the default those stages ran at."""


class StageCost:
    """What a stage cost: wall seconds and CPU seconds (all of this process's threads; under ``accelerate launch``
    the main process's alone) of its update (training, and the gate for gated strategies) plus its test evaluation.
    The benchmark adds them up to say what re-running it costs (benchmarks/tables.py v2-cost). A stage that goes on
    from a training checkpoint another process wrote records none: this process saw only part of its cost."""

    def __init__(self, resumed: bool = False):
        self.resumed = resumed
        self.seconds = self.cpu_seconds = 0.0

    def __enter__(self) -> StageCost:
        self._started = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._started[0]
        self.cpu_seconds = time.process_time() - self._started[1]

    def figures(self) -> dict[str, float]:
        return {} if self.resumed else {"stage_seconds": self.seconds, "stage_cpu_seconds": self.cpu_seconds}


class Experiment:
    def __init__(self, config: ExperimentConfig, *, resume: bool = False, from_stage: int | None = None,
                 overwrite: bool = False):
        self.config = config
        self.resume = resume
        self.from_stage = from_stage
        self.overwrite = overwrite
        self.folder = RunFolder.of(config.output_dir, config.name)
        self.run_dir = self.folder.root
        with config.locating_errors():
            dataset = read_dataset(config.data, config.task)
            self.stream: Stream = build_stream(dataset, config.stream, config.stream_seed)
        self.inputs = dict(sorted(dataset.inputs.items()))
        self.repairs = dataset.repairs
        labels = dataset.label_set or dataset.observed_labels()
        with config.locating_errors():  # a primary metric the task does not compute names its config line
            self.task = make_task(config.task, labels, config.model, config.evaluation.primary_metric)
        self.task.languages = self.stream.languages
        self.accelerator = make_accelerator(config.training, self.run_dir)
        self.steps_taken = 0  # the trackers' global step: optimizer steps of the stages run (or reused) so far
        self.stage_steps: dict[tuple[str, str], int] = {}  # (strategy, stage name) -> the step of its scores
        started = time.perf_counter()
        self.dev = {lang: (ex, self.task.features(ex)) for lang, ex in self.stream.dev.items()}
        self.test = {lang: (ex, self.task.features(ex)) for lang, ex in self.stream.test.items()}
        self.tokenize_seconds = time.perf_counter() - started
        if from_stage is not None and not 1 <= from_stage < len(self.stream.stages):
            raise CMLError(f"--from-stage must be between 1 and {len(self.stream.stages) - 1}, got {from_stage}")

    def settings(self, index: int, strategy_config=None) -> dict:
        """What a stage's weights and record depend on (``stage_settings``). A resumed run reuses a stage only
        with the same settings: otherwise an edited config would silently keep the old results."""
        return stage_settings(self.config, self.stream, index, strategy_config, self.inputs)

    def finished(self, stage_dir: Path, index: int, settings: dict) -> dict | None:
        """The saved record of a finished stage that this run may reuse, else None."""
        needed = self.from_stage is not None and index < self.from_stage
        reusable = self.resume or needed
        saved = self.readable_stage(stage_dir, needed) if reusable else None
        if needed and not (saved and saved["complete"]):
            raise CMLError(f"cannot roll back to stage {self.from_stage}: stage {index} is not finished", file=stage_dir)
        if not (saved and saved["complete"]):
            return None
        self.check_same_settings(saved["settings"], settings, stage_dir / STATE, "this finished stage")
        return saved["record"]

    def check_same_settings(self, saved: dict, settings: dict, where: Path, what: str) -> None:
        """Refuse to continue work made with other settings or from other input files than this run's."""
        saved_inputs = saved.get("inputs")
        if saved_inputs != settings["inputs"]:
            saved_inputs = saved_inputs if isinstance(saved_inputs, dict) else {}
            differ = sorted(path for path in {*saved_inputs, *settings["inputs"]}
                            if saved_inputs.get(path) != settings["inputs"].get(path))
            source = Path(self.config.data.path or "")
            shown = [str(source / path) if source.is_dir() else str(source) for path in differ[:5]]
            raise CMLError(f"input changed since {what} ran: {', '.join(shown)}"
                           f"{f' and {len(differ) - 5} more' if len(differ) > 5 else ''}; its scores would be stale. "
                           "Run with --overwrite instead of --resume to redo the run on the new data", file=where)
        changed = sorted(key for key, value in saved.items() if settings.get(key) != value)
        if changed:
            raise CMLError(f"{what} was run with other {', '.join(changed)} settings than the config's; give the "
                           "run another name, or run with --overwrite instead of --resume to redo it", file=where)

    def readable_stage(self, stage_dir: Path, needed: bool) -> dict | None:
        """A finished stage's state if its files can be read back; a truncated or corrupt stage is redone (and
        said so), unless a roll-back needs it, which is then an error naming the file."""
        if not (stage_dir / STATE).is_file():
            return None
        try:
            verify_checkpoint(stage_dir)
            return self.folder.read_stage(stage_dir)
        except CMLError as err:
            if needed:
                raise
            log.warning("a saved stage cannot be read (%s); redoing that stage", err)
            return None

    def in_progress(self, ctx: StageContext, settings: dict) -> bool:
        """Record what a stage's in-progress checkpoints are made with (``settings.json`` beside them), and on
        --resume refuse checkpoints made with other settings or input files: training would otherwise go on
        from weights trained on data that has since changed. Returns whether the stage goes on from a training
        checkpoint an earlier process wrote (a stage killed before its first checkpoint starts over)."""
        path = ctx.checkpoint_dir / "settings.json"
        if self.resume and path.is_file():
            saved = read_json(path, "checkpoint settings")
            if not isinstance(saved, dict):
                raise CMLError("checkpoint settings are not a JSON object", file=path)
            self.check_same_settings(saved, settings, path, "the stage in progress")
        if self.accelerator.is_main_process:
            write_json(path, settings)
        return self.resume and (ctx.checkpoint_dir / LATEST).is_dir()

    def stage_dir(self, strategy: str, index: int) -> Path:
        return self.folder.stage_dir(strategy, index, self.stream.stages[index].name)

    def training_config(self, index: int) -> TrainingConfig:
        return stage_training_config(self.config, index)

    def context(self, strategy: str, index: int) -> StageContext:
        stage = self.stream.stages[index]
        return StageContext(task=self.task, stage=stage, index=index, languages=self.stream.languages,
                            train_features=[f for lang in stage.languages for f in self.task.features(stage.train[lang])],
                            dev=self.dev, training=self.training_config(index), accelerator=self.accelerator,
                            seed=self.config.seed + index, checkpoint_dir=self.folder.checkpoint_dir(strategy, index),
                            resume=self.resume, history=self.stream.stages[:index], tracking=self.tracking(strategy))

    def tracking(self, strategy: str) -> Tracking | None:
        """Where ``strategy``'s next training logs, after the run's steps so far; None without trackers."""
        return Tracking(self.accelerator, strategy, self.steps_taken) if self.config.training.trackers else None

    def track_stage(self, strategy: str, model, record: dict) -> None:
        """Count a finished stage's optimizer steps into the global step, and log every language's dev and test
        score there (the primary metric; dev is scored here only for the trackers, results.json has no dev)."""
        if not self.config.training.trackers:
            return
        self.steps_taken += (record.get("train") or {}).get("steps", 0)
        self.stage_steps[(strategy, record["name"])] = self.steps_taken
        if not self.accelerator.is_main_process:  # the one that logs
            return
        dev = evaluate_languages(model, self.task, self.dev, self.config.training.eval_batch_size)
        Tracking(self.accelerator, strategy, self.steps_taken).log(
            {**{f"dev/{lang}": metrics[self.task.primary_metric] for lang, (metrics, _) in dev.items()},
             **{f"test/{lang}": score for lang, score in record["scores"].items()}})

    def track_summary(self, summary: dict) -> None:
        """Log each update stage's summary figures (:data:`SUMMARY_KEYS`, and those against the reference) at the
        step of that stage's scores."""
        for strategy, stages in summary.items():
            for name, figures in stages.items():
                numbers = {**{key: figures[key] for key in SUMMARY_KEYS}, **(figures["vs_reference"] or {})}
                Tracking(self.accelerator, strategy, self.stage_steps[(strategy, name)]).log(
                    {f"summary/{key}": value for key, value in numbers.items() if value is not None})

    def run(self) -> dict:
        """The whole recipe, holding the run folder's lock (on the main process, which alone writes there)."""
        if self.accelerator.is_main_process:
            self.folder.create()
        lock = FolderLock(self.run_dir) if self.accelerator.is_main_process else None
        if lock:
            lock.acquire()
        try:
            return self._run()
        finally:
            if lock:
                lock.release()

    def refuse_to_replace(self) -> None:
        """A run folder that holds a run is continued (--resume, --from-stage) or replaced on request only;
        replacing it first removes what this tool wrote there, so nothing of the old run can mix with the new."""
        if self.resume or self.from_stage is not None:
            return
        if self.overwrite:
            for name in OUTPUTS:
                path = self.run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            return
        finished = self.folder.finished()
        if self.folder.holds_a_run():
            raise CMLError(f"this folder holds {'a finished' if finished else 'an unfinished'} run: pass --resume "
                           "to continue it, --overwrite to replace it, or give the run another name",
                           file=self.run_dir)

    def _run(self) -> dict:
        main = self.accelerator.is_main_process
        if main:  # one run.log: the other processes' lines would repeat the main one's
            self.refuse_to_replace()
            _setup_logging(self.folder.log_file)
            for path in remove_stale_temporaries(self.run_dir):
                log.info("removed %s, left by an interrupted write", path)
            for path, count in sorted(self.repairs.items()):
                log.warning("%s: %d IOB2 tags repaired (a stray I-X read as B-X)", path, count)
        if self.config.training.trackers:
            start_tracking(self.accelerator, self.config.name, self.config.model_dump(mode="json"))
        model = RoutedModel(self.task.seeded_model(self.config.seed), self.stream.languages)
        frozen = frozen_embedding_names(model) if self.config.model.freeze_embeddings else ()
        initial = self.initial_stage(model, frozen)
        strategies = {}
        for strategy_config in self.config.strategies:
            strategy = make_strategy(strategy_config)
            records = [initial]
            deployed = copy.deepcopy(model)
            for index in range(1, len(self.stream.stages)):
                deployed, record = self.update_stage(strategy, deployed, index, frozen)
                records.append(record)
            strategies[strategy.name] = {"method": strategy_config.method, "stages": records}
            del deployed
        results = self.results(strategies)
        if main:  # the summary reads the prediction files, which only the main process writes
            shutil.rmtree(self.folder.checkpoints, ignore_errors=True)
            results["summary"] = summarize_run(results, self.run_dir, reference=results["reference_strategy"],
                                               **self.config.evaluation.model_dump())
            self.folder.write_results(results)
            if self.config.training.trackers:
                self.track_summary(results["summary"])
        self.accelerator.wait_for_everyone()  # every process returns once results.json is written
        self.accelerator.end_training()
        return results

    def initial_stage(self, model: RoutedModel, frozen: tuple[str, ...]) -> dict:
        """Stage 0: full training on every language; the starting point of every strategy."""
        stage_dir = self.stage_dir(INITIAL, 0)
        settings = self.settings(0)
        saved = self.finished(stage_dir, 0, settings)
        if saved:
            load_model_state(model, stage_dir)
            log.info("stage 0: reused from %s", stage_dir)
            self.track_stage(INITIAL, model, saved)
            return saved
        ctx = self.context(INITIAL, 0)
        with StageCost(resumed=self.in_progress(ctx, settings)) as cost:
            _, artifacts = make_strategy(FullFinetuneConfig(method="full_finetune", name=INITIAL)).update(model, ctx)
            evaluation = self.evaluate(model, INITIAL, 0)
        record = {**self.record(ctx, INITIAL, artifacts, evaluation), **cost.figures()}
        if self.accelerator.is_main_process:
            save_checkpoint(stage_dir, {k: v for k, v in model.state_dict().items() if k not in frozen},
                            stage_state(record, settings))
        self.track_stage(INITIAL, model, record)
        return record

    def update_stage(self, strategy, model: RoutedModel, index: int, frozen: tuple[str, ...]):
        stage_dir = self.stage_dir(strategy.name, index)
        ctx = self.context(strategy.name, index)
        settings = self.settings(index, strategy.config)
        saved = self.finished(stage_dir, index, settings)
        if saved:
            model = load_finished_stage(strategy, model, saved, ctx, stage_dir)
            log.info("%s stage %d: reused from %s", strategy.name, index, stage_dir)
            self.track_stage(strategy.name, model, saved)
            return model, {**saved, "stored_bytes": (stage_dir / WEIGHTS).stat().st_size}
        with StageCost(resumed=self.in_progress(ctx, settings)) as cost:
            model, artifacts = strategy.update(model, ctx)
            evaluation = self.evaluate(model, strategy.name, index)
        record = {**self.record(ctx, strategy.name, artifacts, evaluation), **cost.figures()}
        if self.accelerator.is_main_process:  # the run folder may be on the main machine only
            save_checkpoint(stage_dir, strategy.saved_state(model, frozen),
                            stage_state(record, settings))
            record["stored_bytes"] = (stage_dir / WEIGHTS).stat().st_size
        self.track_stage(strategy.name, model, record)
        return model, record

    def record(self, ctx: StageContext, strategy: str, artifacts: dict, evaluation: dict) -> dict:
        predictions = evaluation.pop("test_predictions")
        warnings = learning_warnings(self.task, artifacts, predictions)
        for warning in warnings:
            log.warning("%s, stage %d (%s): %s", strategy, ctx.index, ctx.stage.name, warning)
        return {"name": ctx.stage.name, "index": ctx.index, "updated_languages": ctx.stage.languages,
                "train_examples": ctx.stage.counts(), **artifacts, **evaluation, "warnings": warnings}

    def evaluate(self, model, strategy: str, index: int) -> dict:
        started = time.perf_counter()
        scores, metrics, lines, outputs = {}, {}, [], {}
        path = self.folder.predictions_file(strategy, index, self.stream.stages[index].name)
        for lang, (examples, features) in tqdm(self.test.items(), desc=f"{strategy} test", unit="language",
                                               leave=False, disable=not self.accelerator.is_local_main_process):
            predictions = predict(model, self.task, features, self.config.training.eval_batch_size)
            outputs[lang] = predictions
            metrics[lang] = self.task.score(examples, predictions)
            scores[lang] = metrics[lang][self.task.primary_metric]
            items = self.task.item_metric_scores(examples, predictions)
            for position, (example, prediction) in enumerate(zip(examples, predictions)):
                item = {metric: values[position] for metric, values in items.items()}
                lines.append(json.dumps({"lang": lang, "id": example.id, "prediction": prediction,
                                         "score": item[self.task.primary_metric], "scores": item},
                                        ensure_ascii=False) + "\n")
        if self.accelerator.is_main_process:
            write_text(path, "".join(lines))
        seconds = time.perf_counter() - started
        n = len(lines)
        return {"scores": scores, "metrics": metrics, "eval_seconds": seconds, "eval_examples_per_second": n / seconds,
                "predictions": self.folder.relative(path), "test_predictions": outputs}

    def results(self, strategies: dict) -> dict:
        reference = REFERENCE if REFERENCE in strategies else next(iter(strategies))
        return {"format_version": FORMAT_VERSION, "name": self.config.name, "task": self.config.task.value,
                "metric": self.task.primary_metric, "seed": self.config.seed, "languages": self.stream.languages,
                "labels": self.task.labels,
                "reference_strategy": reference, "stages": strategies[reference]["stages"],
                "strategies": strategies, "tokenize_seconds": self.tokenize_seconds,
                "config": self.config.model_dump(mode="json"), "versions": package_versions(), "inputs": self.inputs,
                "processes": self.accelerator.num_processes}

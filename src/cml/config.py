"""Experiment configuration: one YAML file, validated into typed models.

Errors name the file, the line and the key path (``configs/x.yaml:12: stream.stages.1.amount: ...``), or the
``--set`` argument that gave the bad value. Values are strict: ``epochs: "2"`` is an error, not 2. Relative
paths in a config resolve against the config file's folder, and ``$VARS`` are expanded, so a config works from
any working directory. Nothing in a config file can allow remote code: that is the ``--trust-remote-code``
flag of the command the user types (``allow_remote_code``).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, StrictInt, ValidationError,
                      create_model, field_validator, model_serializer, model_validator)
from pydantic.fields import FieldInfo

from .errors import CMLError
from .io import read_text
from .languages import canonical
from .metrics import METRIC_NAMES
from .task_family import TaskFamily


class Strict(BaseModel):
    # strict: a quoted number or a "true" string in a config is a mistake to report, not to convert
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


_YAML_1_1_BOOLEANS = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}


def _yaml_boolean(value):
    # A boolean setting also takes YAML 1.1's yes/no/on/off, which the loader reads as strings (so that `no`
    # stays Norwegian and Accelerate's `no` elsewhere); any other non-boolean is refused by strict validation.
    return _YAML_1_1_BOOLEANS.get(value.lower(), value) if isinstance(value, str) else value


Flag = Annotated[bool, BeforeValidator(_yaml_boolean)]

FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_folder_name(name: str) -> str:
    """Run, stage and strategy names become folder names (``<output_dir>/<run>/stages/<strategy>/<k>-<stage>``):
    each must be one path component, so that no name from a config or run folder reaches outside the run."""
    if not FOLDER_NAME.fullmatch(name):
        raise ValueError("must be one folder name of letters, digits, '.', '_' and '-' (at most 128, starting "
                         "with a letter or digit)")
    return name


FolderName = Annotated[str, AfterValidator(check_folder_name)]


def _canonical_codes(codes: list[str]) -> list[str]:
    # ValueError, not CMLError, so that pydantic reports the key path of the bad code.
    try:
        return [canonical(code) for code in codes]
    except CMLError as err:
        raise ValueError(err.message) from None


def _check_amount(value: int | float) -> int | float:
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a count must be a positive integer")
    elif not 0.0 < value <= 1.0:
        raise ValueError("a fraction must be in (0, 1]; write an integer for a count of examples")
    return value


Amount = Annotated[Union[StrictInt, float], AfterValidator(_check_amount)]
"""An integer is a count of examples; a float is a fraction of the available examples (``1.0`` = all)."""


class SplitRatios(Strict):
    train: float = Field(0.8, ge=0, le=1)
    dev: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, gt=0, le=1)


def _check_path(path: str) -> str:
    if "\x00" in path:
        raise ValueError("a path cannot contain a NUL character")
    return path


PathText = Annotated[str, AfterValidator(_check_path)]


class SplitCaps(Strict):
    """At most this many examples of a language in each split (none: no cap): the first ones in file order."""

    train: int | None = Field(None, gt=0)
    dev: int | None = Field(None, gt=0)
    test: int | None = Field(None, gt=0)


class RemoteCodeByFlagOnly(Strict):
    """A section that loads code-bearing things (a model, a hub dataset). Whether their own Python code may
    run is never read from a file: only ``ExperimentConfig.allow_remote_code`` (the ``--trust-remote-code``
    flag of the command the user types) sets it."""

    _trust_remote_code: bool = PrivateAttr(False)

    @model_validator(mode="before")
    @classmethod
    def _no_remote_code_from_files(cls, data):
        if isinstance(data, dict) and "trust_remote_code" in data:
            if data["trust_remote_code"] is not False:  # false asks for what is so anyway
                raise ValueError("trust_remote_code: remote code cannot be allowed from a file; pass "
                                 "--trust-remote-code to the command, if you trust the model's or dataset's code")
            data = {key: value for key, value in data.items() if key != "trust_remote_code"}
        return data

    @property
    def trust_remote_code(self) -> bool:
        return self._trust_remote_code


def _check_pattern(pattern: str, field: str) -> str:
    """A ``str.format`` pattern with the one field ``{field}`` (``{split}``, ``{code}``)."""
    try:
        pattern.format(**{field: "x"})
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"a pattern may only use {{{field}}}, got {pattern!r} ({type(err).__name__}: {err})") from None
    return pattern


class SourceBase(Strict):
    path: PathText | None = None
    languages: list[str] | Literal["all"] = "all"
    exclude_languages: list[str] = []
    labels: list[str] | None = Field(None, description="the label (or tag) set; other labels are an error")
    max_per_split: Annotated[int, Field(gt=0)] | SplitCaps | None = Field(
        None, description="read at most this many examples per language and split (the first ones in file order); "
        "a mapping {train, dev, test} caps each split on its own")
    split: SplitRatios = SplitRatios()

    @field_validator("languages", "exclude_languages")
    @classmethod
    def _canonical_languages(cls, value):
        return value if value == "all" else _canonical_codes(value)


class SIB200Source(SourceBase):
    format: Literal["sib200"]


class DelimitedColumns(Strict):
    id: str | None = None
    language: str | None = None
    split: str | None = None
    text: str = "text"
    label: str = "label"
    tokens: str = "tokens"
    tags: str = "tags"
    source: str = "source"
    target: str = "target"


class DelimitedSource(SourceBase):
    """TSV/CSV/JSONL: one file with a language column, or a folder ``<root>/<lang>/{train,dev,test}.<ext>``."""

    format: Literal["tsv", "csv", "jsonl"]
    columns: DelimitedColumns = DelimitedColumns()


class ConlluSource(SourceBase):
    format: Literal["conllu"]
    tag_column: Literal["upos", "xpos"] = "upos"


class ConllSource(SourceBase):
    """CoNLL token/tag files (NER): ``<root>/<lang>/{train,dev,test}.txt``, blank line between sentences."""

    format: Literal["conll"]
    token_column: int = 0
    tag_column: int = -1
    scheme: Literal["IOB2", "none"] = "IOB2"
    repair: Flag = Field(False, description="IOB2: read an I-X that does not continue an X entity as B-X (as "
                         "seqeval's lenient mode does) instead of refusing the file; repairs are counted per file")
    file_pattern: str = "{split}.txt"

    @field_validator("file_pattern")
    @classmethod
    def _pattern(cls, value):
        return _check_pattern(value, "split")


class SimplemmaSource(SourceBase):
    format: Literal["simplemma"]
    languages: list[str]
    pairs_per_language: int = Field(2000, gt=0)
    include_identity: Flag = Field(False, description="keep pairs whose lemma equals the form")
    seed: int = 0


class HuggingFaceSource(SourceBase, RemoteCodeByFlagOnly):
    format: Literal["huggingface"]
    dataset: str = Field(description="hub id (e.g. Davlan/sib200) or a builder such as json")
    config_template: str | None = Field(None, description="per-language config name, e.g. '{code}' or '{code}_pud'")
    language_codes: dict[str, str] = Field({}, description="our code -> the dataset's code, where they differ")
    data_files: dict[str, str] | None = Field(None, description="for builders such as json: split -> file pattern with {code}")
    columns: DelimitedColumns = DelimitedColumns()

    @field_validator("config_template")
    @classmethod
    def _template(cls, value):
        return value if value is None else _check_pattern(value, "code")

    @field_validator("data_files")
    @classmethod
    def _patterns(cls, value):
        return value if value is None else {split: _check_pattern(p, "code") for split, p in value.items()}


DataSource = Annotated[
    Union[SIB200Source, DelimitedSource, ConlluSource, ConllSource, SimplemmaSource, HuggingFaceSource],
    Field(discriminator="format"),
]


class AllExcept(Strict):
    all_except: list[str]

    @field_validator("all_except")
    @classmethod
    def _canonical(cls, value):
        return _canonical_codes(value)


class StageConfig(Strict):
    name: FolderName
    languages: list[str] | Literal["all"] | AllExcept = "all"
    amount: Amount = 1.0
    per_language: dict[str, Amount] = Field({}, description="amount overrides for some languages")

    @field_validator("languages")
    @classmethod
    def _canonical_languages(cls, value):
        return _canonical_codes(value) if isinstance(value, list) else value

    @field_validator("per_language")
    @classmethod
    def _canonical_keys(cls, value):
        codes = _canonical_codes(list(value))
        if len(set(codes)) != len(codes):
            raise ValueError(f"two keys name the same language: {list(value)} are {codes}")
        return dict(zip(codes, value.values()))


class StreamConfig(Strict):
    stages: list[StageConfig] = Field(min_length=1)
    seed: int | None = Field(None, description="defaults to the experiment seed")
    disjoint_sentences: Flag = Field(
        False, description="a parallel sentence id used in one stage (any language) is never used in a later one")

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return self


class ModelConfig(RemoteCodeByFlagOnly):
    name: str = "embedded:multilingual-e5-small"
    max_length: int = Field(128, gt=0, le=1_000_000)
    freeze_embeddings: Flag = True
    decoder: str | None = Field(None, description="seq2seq: decoder checkpoint for an EncoderDecoderModel")
    source_embedding_skip: Flag = Field(
        True, description="assembled seq2seq: the decoder attends to the encoder's last states plus the source "
        "tokens' input embeddings, so copying a source piece is one attention step. Applies only where the decoder "
        "is the encoder's checkpoint (one tied table) and that table is as wide as the hidden states")
    num_beams: int = Field(1, gt=0, description="seq2seq decoding: 1 is greedy, more is beam search")
    max_new_tokens: int = Field(32, gt=0, description="seq2seq decoding: longest output")


class TrainingConfig(Strict):
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    batch_size: int = Field(16, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(5e-5, gt=0, le=10)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0)
    new_parameters_lr_scale: float = Field(
        1.0, gt=0, description="learning-rate multiplier for the parameters the checkpoint lacked (a label "
        "head; an assembled decoder's cross-attention and output transform), which start random")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="stop after this many epochs without a better dev score")
    select_best: Flag = Field(True, description="end with the weights of the epoch with the best dev score")
    dropout: Flag = Field(
        True, description="false: the model's dropout modules (torch.nn.Dropout and its kin: BERT's attention, "
        "hidden and head dropout; a LoRA module's) are off while it trains, which on CPU saves drawing their masks, "
        "about a tenth of a training step (docs/benchmarks.md); dropout a model applies from a plain number (T5's "
        "attention, BART) stays on")
    checkpoint_every_steps: int = Field(0, ge=0, description="0: checkpoint at the end of each stage only")
    bucket_multiplier: int = Field(
        50, gt=0, description="length bucketing: sort by length within chunks of this many batches")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", description="GPUs only: on CPU bf16 matmuls are ~300x slower than fp32 here, so CPU runs use no")
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = []


class Overrides(Strict):
    """Some settings of another section; only those given are stored and applied."""

    @model_serializer(mode="wrap")
    def _only_given(self, handler):
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}


def _overrides_of(model: type[BaseModel], name: str) -> type[Overrides]:
    """``model``'s settings, each optional: validated like ``model``'s (types, ranges, spelling) field by field."""
    # The field's own type, with None as the "not given" default (defaults are not validated): an explicit null
    # is refused where the setting itself refuses it.
    fields = {key: (info.annotation, FieldInfo.merge_field_infos(info, default=None))
              for key, info in model.model_fields.items()}
    return create_model(name, __base__=Overrides, __module__=__name__, **fields)


TrainingOverrides = _overrides_of(TrainingConfig, "TrainingOverrides")


def with_overrides(training: TrainingConfig, overrides: Overrides | None) -> TrainingConfig:
    """``training`` with the settings that ``overrides`` gives, validated as a whole."""
    if overrides is None or not overrides.model_fields_set:
        return training
    return TrainingConfig.model_validate({**training.model_dump(), **overrides.model_dump()})


class LoraOptions(Strict):
    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["query", "key", "value", "dense"], description="module names (suffixes) that get LoRA matrices")
    layers: list[int] | None = Field(
        None, description="only these encoder layers get LoRA; upper layers only make the backward pass short")
    train_head: Flag = Field(True, description="each module gets its own copy of the task head")
    cache_frozen_layers: Flag = Field(
        True, description="compute the output of the layers below the lowest adapted one once per update (dropout "
                          "off there) and train and gate on it: epochs and gate candidates then run only the "
                          "adapted layers (docs/benchmarks.md, 'Speed')")


class StrategyBase(Strict):
    name: FolderName | None = Field(None, description="defaults to the method; set it to compare variants of a method")
    training: TrainingOverrides = Field(TrainingOverrides(), description="overrides of the update training settings")

    @property
    def label(self) -> str:
        return self.name or self.method


class FullFinetuneConfig(StrategyBase):
    method: Literal["full_finetune"]


class ModularConfig(StrategyBase):
    """Parameter-efficient modules on the frozen previous model, one per group of languages."""

    method: Literal["lora_shared", "lora_per_language", "laft_uriel", "laft_random"]
    lora: LoraOptions = LoraOptions()
    n_groups: int | None = Field(
        None, gt=0, description="laft: number of URIEL groups (default: a third of the languages, at least 2)")
    group_threshold: float | None = Field(None, gt=0, description="laft: cut the dendrogram at this distance instead")
    max_group_size: int | None = Field(
        None, gt=0, description="laft: split groups larger than this at their top merge until none is (a module "
                                "shared by many languages has little capacity for each)")
    kinds: list[str] | None = Field(None, description="URIEL distance kinds (default: the typology module's)")
    route_to_nearest: float | None = Field(
        None, gt=0, description="a language whose group got no data uses the nearest trained group within this "
                                "URIEL distance")
    hierarchical: Flag = Field(False, description="a shared module under the group modules, trained on all data")
    borrowed_routes: Flag = Field(
        True, description="after an update a language may also take a module of a group other than its own: the "
        "nearest trained group's (under the gate, or within route_to_nearest) and, hierarchical, the shared module "
        "alone; false: only its own group's module or the previous model (a language the model never saw, at "
        "prediction time, still borrows). In the v2 runs so far (found after results), the gate's borrowed moves "
        "lost on test more often than they gained (docs/method.md, 'Borrowed routes')")
    gate: Flag | None = Field(None, description="pick each language's route by dev score (default: on for laft_uriel "
                                                "and laft_replay)")
    gate_confidence: float | None = Field(
        None, gt=0.5, lt=1, description="gate: leave the previous model only for a route whose dev gain over it is "
        "positive at this one-sided paired-bootstrap confidence (e.g. 0.9); none: any dev gain is enough")
    group_seed: int = Field(0, description="laft_random: seed of the random assignment")
    batches_by_route: Flag = Field(
        False, description="training batches hold one route each where they can (each shuffled chunk sorted by route, "
        "then length), so no module's product is split over routes; the batches differ from the default's, so the "
        "result does too")

    @property
    def gated(self) -> bool:
        return self.method in GATED_BY_DEFAULT if self.gate is None else self.gate


GATED_BY_DEFAULT = ("laft_uriel", "laft_replay")


class LaftReplayConfig(ModularConfig):
    """LAFT-URIEL whose modules also rehearse a memory of earlier stages' examples of every language (reservoir
    sampled, as ``replay`` keeps it): every group's module trains, the groups without new data on their memory
    alone, and the gate keeps each language on the previous model unless its module scores better on dev."""

    method: Literal["laft_replay"]
    per_language: int = Field(32, gt=0, description="memory size k per language (reservoir sampling)")
    seed: int = Field(0, description="seed of the memory's sampling (as replay's: not the run's seed, so runs of "
                                     "several seeds rehearse the same examples)")


class EWCConfig(StrategyBase):
    """Elastic weight consolidation: full fine-tuning plus a quadratic pull towards the previous weights,
    weighted by the diagonal Fisher information computed at the end of each stage on that stage's data."""

    method: Literal["ewc"]
    # 1e6: the strength the lemmatisation benchmark's dev set picked from 1e3-1e7 with the embedded model;
    # at 1e3 the penalty stayed ~0.002 against a task loss of ~1 and EWC repeated full fine-tuning exactly
    # (docs/benchmarks.md, "EWC strength"). The Fisher's scale depends on the model and task: sweep it.
    ewc_lambda: float = Field(1.0e6, ge=0, description="strength of the penalty")
    fisher_examples: int = Field(512, gt=0, description="examples per stage used to estimate the Fisher")


class ReplayConfig(StrategyBase):
    """Full fine-tuning on the update data mixed with a memory of k examples per language from earlier stages."""

    method: Literal["replay"]
    per_language: int = Field(32, gt=0, description="memory size k per language (reservoir sampling)")
    seed: int = 0


class DistillConfig(StrategyBase):
    """LwF-style distillation: full fine-tuning plus a KL term to the previous model's outputs on the update data."""

    method: Literal["distill"]
    alpha: float = Field(1.0, ge=0, description="weight of the distillation term")
    temperature: float = Field(2.0, gt=0)


class WiseFTConfig(StrategyBase):
    """WiSE-FT: fine-tune, then interpolate previous and fine-tuned weights: (1 - alpha) prev + alpha new."""

    method: Literal["wise_ft"]
    alpha: float | Literal["dev"] = Field(0.5, description="a number in [0, 1], or `dev` to pick it on dev")
    alpha_grid: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], description="candidates when alpha is `dev`")

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, value):
        if value != "dev" and not 0.0 <= value <= 1.0:
            raise ValueError("alpha must be in [0, 1] or `dev`")
        return value


class NoUpdateConfig(StrategyBase):
    """The previous model kept as is: trains nothing (a reference beside full fine-tuning; ``training`` is unused)."""

    method: Literal["no_update"]


StrategyConfig = Annotated[Union[FullFinetuneConfig, ModularConfig, LaftReplayConfig, EWCConfig, ReplayConfig,
                                 DistillConfig, WiseFTConfig, NoUpdateConfig], Field(discriminator="method")]


def _metric_name(name: str | None) -> str | None:
    if name is not None and name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; one of {', '.join(sorted(METRIC_NAMES))}")
    return name


class EvaluationConfig(Strict):
    primary_metric: str | None = Field(
        None, description="the metric that deltas, gates, early stopping and the summary count (null: the task "
                          "family's own: accuracy, token_accuracy or entity_f1, exact_match); the report shows "
                          "every other metric beside it and flags where they disagree")
    neighbour_threshold: float = Field(
        0.4, gt=0, description="URIEL distance below which a language counts as a neighbour of an update language")
    resamples: int = Field(1000, gt=0, le=100_000, description="paired bootstrap resamples for the 95% intervals")
    seed: int = Field(0, description="bootstrap seed")

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, name: str | None) -> str | None:
        # Any family's metric passes here; whether this task computes it is checked where the task is built
        # (only the labels tell a NER tag set from a POS one).
        return _metric_name(name)


class ConfigFile(Strict):
    """What every config file shares: where its values came from (for errors that name a line), and the
    ``--trust-remote-code`` flag reaching its model and hub data sources."""

    _origin: ConfigOrigin | None = PrivateAttr(None)

    def data_sources(self) -> list[SourceBase]:
        return [getattr(self, key) for key in ("data", "eval") if isinstance(getattr(self, key, None), SourceBase)]

    def allow_remote_code(self, allowed: bool) -> None:
        """Let the model's and data's own code from the hub run (``--trust-remote-code``)."""
        self.model._trust_remote_code = allowed
        for source in self.data_sources():
            if isinstance(source, HuggingFaceSource):
                source._trust_remote_code = allowed

    @contextmanager
    def locating_errors(self):
        """A CMLError raised inside with a key path and no file (data read or a stream built from this config)
        names the config file and line of that key, or the ``--set`` argument that gave it."""
        try:
            yield
        except CMLError as err:
            if err.file is not None or not err.key or self._origin is None:
                raise
            raise CMLError(err.message, **self._origin.locate(tuple(err.key.split(".")))) from None


class ExperimentConfig(ConfigFile):
    name: FolderName
    task: Annotated[TaskFamily, Field(strict=False)]
    seed: int = Field(0, ge=0, lt=2**32)
    output_dir: PathText = "runs"
    data: DataSource
    stream: StreamConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    update_training: TrainingOverrides = Field(
        TrainingOverrides(), description="overrides of `training` for update stages, e.g. {epochs: 2, learning_rate: 3e-5}")
    strategies: list[StrategyConfig] = Field(
        [FullFinetuneConfig(method="full_finetune")], min_length=1,
        description="update strategies compared on the same stream, each from the same stage-0 model")
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _unique_strategy_names(self):
        labels = [s.label for s in self.strategies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"strategy names must be unique (set `name` for variants), got {labels}")
        return self

    @property
    def stream_seed(self) -> int:
        return self.seed if self.stream.seed is None else self.stream.seed


class ShipCriteria(Strict):
    """When an update may ship: at most ``max_significant_losses`` languages whose ``metric`` dropped with
    the whole 95% interval below zero, and a mean change over languages of at least ``min_mean_delta``."""

    max_significant_losses: int = Field(0, ge=0)
    min_mean_delta: float = Field(0.0, description="a fraction in [-1, 1]: 0.01 is one point")
    metric: str | None = Field(None, description="the metric the criteria read (default: the primary metric)")

    @field_validator("min_mean_delta")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not -1 <= value <= 1:
            raise ValueError(f"a change is a fraction in [-1, 1] (0.01 is one point), got {value}")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str | None) -> str | None:
        return _metric_name(name)


class ReleaseConfig(ConfigFile):
    """What ``cml train`` and ``cml update`` share. ``training`` lists only the settings to change: the rest
    are the task family's measured defaults (:mod:`cml.training.defaults`), not ``TrainingConfig``'s."""

    name: FolderName
    task: Annotated[TaskFamily, Field(strict=False)]
    seed: int = Field(0, ge=0, lt=2**32)
    data: DataSource
    model: ModelConfig = ModelConfig()
    training: TrainingOverrides = TrainingOverrides()
    evaluation: EvaluationConfig = EvaluationConfig()

    @property
    def resolved_training(self) -> TrainingConfig:
        from .training.defaults import training_defaults

        return TrainingConfig.model_validate({**TrainingConfig().model_dump(), **training_defaults(self.task),
                                              **self.training.model_dump()})


class TrainConfig(ReleaseConfig):
    """``cml train``: the initial model, trained on ``data``'s train split of every language, chosen on its dev
    split and scored on its test split."""


def _default_strategy() -> StrategyConfig:
    return ModularConfig(method="laft_uriel")


class UpdateConfig(ReleaseConfig):
    """``cml update``: ``data`` is the new batch (every example of it is trained on); ``eval`` holds the dev and
    test sets of every language the model serves; the model is the release or checkpoint given by ``--from``."""

    eval: DataSource
    strategy: StrategyConfig = Field(default_factory=_default_strategy)
    ship: ShipCriteria = ShipCriteria()
    references: list[StrategyConfig] = Field(
        [], description="strategies also applied to the same model and batch, scored and shown beside the update "
        "in its report (not shipped): full_finetune shows what naive fine-tuning would have done")

    @model_validator(mode="after")
    def _distinct_references(self):
        labels = [s.label for s in (self.strategy, *self.references)]
        if len(set(labels)) != len(labels):
            raise ValueError(f"the strategy and its references need distinct names (set `name`), got {labels}")
        return self

    @field_validator("model")
    @classmethod
    def _no_model_name(cls, value: ModelConfig):
        if "name" in value.model_fields_set:
            raise ValueError("an update's model is the release or checkpoint given by --from, not model.name")
        return value


@dataclass
class ConfigOrigin:
    """Where a config's values came from: the file's YAML nodes and the ``--set`` overrides' key paths."""

    path: Path
    node: yaml.Node | None
    overrides: list[tuple[str, ...]] = field(default_factory=list)

    def locate(self, loc: tuple) -> dict:
        """``file``, ``line`` and ``key`` of a CMLError about the value at ``loc``."""
        key = ".".join(str(k) for k in loc) or None
        for override in reversed(self.overrides):  # the last --set of a key wins, so it is the one to name
            if _covers(override, loc):
                return {"key": f"--set {'.'.join(override)}" + (f" ({key})" if key != ".".join(override) else "")}
        return {"file": self.path, "line": _line_of(self.node, loc), "key": key}


def _covers(override: tuple[str, ...], loc: tuple) -> bool:
    """Whether the value at ``loc`` lies inside what ``override`` set, or holds it (an error about the section
    an override created); ``loc`` may carry pydantic's union tags, which no override names."""
    matched, parts = 0, [str(k) for k in loc]
    for part in parts:
        if matched < len(override) and part == override[matched]:
            matched += 1
    return matched == len(override) or (0 < matched == len(parts))


def _set_override(tree: dict, keys: tuple[str, ...], value: Any, origin: str) -> tuple[str, ...]:
    """Set ``value`` at ``keys`` in ``tree``; returns the key path it set (a negative list index made positive)."""
    node: Any = tree
    resolved = list(keys)
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth]) or "the config"
        if isinstance(node, list):
            index = _list_index(key, origin)
            if not -len(node) <= index < len(node):
                raise CMLError(f"{where} has {len(node)} entries; there is no entry {index}", key=origin)
            index %= len(node)
            resolved[depth] = str(index)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise CMLError(f"{where} is a value ({node!r}), not a section with a setting {key!r}", key=origin)
    return tuple(resolved)


def _list_index(key: str, origin: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise CMLError(f"expected a list index, got {key!r}", key=origin) from None


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the deepest YAML node on the pydantic error path ``loc``."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and str(key).isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
        else:
            continue  # pydantic adds union/discriminator tags to the path; they have no YAML node
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _resolve_paths(config: ConfigFile, base: Path) -> None:
    for source in config.data_sources():
        if source.path is not None:
            source.path = str((base / os.path.expandvars(source.path)).resolve())
    if isinstance(config, ExperimentConfig):
        config.output_dir = str((base / os.path.expandvars(config.output_dir)))


class _Loader(yaml.SafeLoader):
    """YAML 1.2's booleans, true and false only: YAML 1.1 (PyYAML's default) also reads a bare yes, no, on
    and off as booleans, which turns `mixed_precision: no` and Norwegian's code `no` into false."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# YAML 1.2's floats too: YAML 1.1 reads `1e-3` (no dot) as a string, which strict validation would refuse.
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)$"), list("-+.0123456789"))


MAX_YAML_VALUES = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias expanded (aliases share nodes, hence the memo)."""
    if id(node) not in memo:
        memo[id(node)] = 1  # a node reached again while it is being counted (a cycle) counts once
        children = [child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        memo[id(node)] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[id(node)]


def _check_node(node: yaml.Node, file: Path | None, key: str | None) -> None:
    """Refuse a document that expands (through aliases) past MAX_YAML_VALUES values, or maps a key twice."""
    if _expanded_size(node, {}) > MAX_YAML_VALUES:
        raise CMLError(f"the YAML expands to more than {MAX_YAML_VALUES:,} values (aliases repeated inside "
                       "aliases?)", file=file, key=key)
    pending, seen = [node], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: dict[object, yaml.Node] = {}
            for name, value in current.value:
                if isinstance(name, yaml.ScalarNode) and name.value in keys and name.tag != "tag:yaml.org,2002:merge":
                    raise CMLError(f"{name.value!r} is set twice in one section (also on line "
                                   f"{keys[name.value].start_mark.line + 1}): the last would silently win",
                                   file=file, line=name.start_mark.line + 1 if file else None, key=key)
                keys[getattr(name, "value", id(name))] = name
                pending += [name, value]
        elif isinstance(current, yaml.SequenceNode):
            pending += current.value


def parse_yaml(text: str, *, file: Path | None = None, key: str | None = None) -> tuple[Any, yaml.Node | None]:
    """YAML text's value and its node tree (which ``validated`` turns into line numbers). Anything that is not
    valid YAML is a CMLError with ``file`` (and the line, where PyYAML knows it) or ``key``."""
    loader = None
    try:  # one parse: the node tree, then the values constructed from it (what yaml.load does inside)
        loader = _Loader(text)  # noqa: S506 (a SafeLoader subclass); it refuses non-printable characters
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_node(node, file, key)
        return loader.construct_document(node), node
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise CMLError(f"invalid YAML: {getattr(err, 'problem', None) or err}", file=file,
                       line=mark.line + 1 if mark and file else None, key=key) from None
    except (ValueError, KeyError, AttributeError, TypeError, RecursionError) as err:
        # PyYAML's constructors raise plain errors for tagged values they cannot build (`!!int x`, a date
        # out of range, an integer of more than 4,300 digits) and nesting deeper than Python's stack
        raise CMLError(f"invalid YAML value ({type(err).__name__}: {str(err)[:120]})", file=file, key=key) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path, what: str = "config") -> tuple[dict, yaml.Node]:
    """A YAML file's top-level mapping and its node tree. A missing file, bad bytes, bad YAML or a non-mapping
    is a CMLError naming the file and line."""
    if not path.is_file():
        raise CMLError(f"{what} file not found", file=path)
    tree, node = parse_yaml(read_text(path, what), file=path)
    if not isinstance(tree, dict):
        raise CMLError("expected a mapping of settings at the top level", file=path, line=1)
    return tree, node


def validated(model: type[BaseModel], tree: dict, node: yaml.Node | None, path: Path,
              origin: ConfigOrigin | None = None):
    """``model`` validated from ``tree``; the first error becomes a CMLError naming file, line and key path
    (or the ``--set`` argument that gave the value)."""
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        where = (origin or ConfigOrigin(path, node)).locate(loc)
        raise CMLError(_describe(first), **where) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                kind: type[ConfigFile] = ExperimentConfig) -> Any:
    """Read, override (``key.path=value``, the value parsed as YAML) and validate a config file of ``kind``
    (an experiment's, by default)."""
    path = Path(path)
    tree, node = read_yaml(path)
    origin = ConfigOrigin(path, node)
    for override in overrides:
        key, sep, raw = override.partition("=")
        keys = tuple(part.strip() for part in key.split("."))
        if not sep or not all(keys):
            raise CMLError(f"--set expects key.path=value, got {override!r}")
        label = f"--set {'.'.join(keys)}"
        value, _ = parse_yaml(raw, key=label)
        origin.overrides.append(_set_override(tree, keys, value, label))
    config = validated(kind, tree, node, path, origin)
    config._origin = origin
    _resolve_paths(config, path.parent)
    return config


def _describe(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for our validators' messages
    if error["type"] == "extra_forbidden":
        return "unknown setting (check its spelling and section)"
    if error["type"] == "missing":
        return "required setting is missing"
    # a whole section as the "input" is noise, not a hint; a long value is cut (it may be huge)
    if "input" in error and error["type"] not in ("union_tag_invalid",) and not isinstance(error["input"], dict):
        shown = repr(error["input"]) if not isinstance(error["input"], (list, tuple)) or len(error["input"]) < 50 \
            else f"a list of {len(error['input'])} values"
        message += f" (got {shown[:200]}{'...' if len(shown) > 200 else ''})"
    return message

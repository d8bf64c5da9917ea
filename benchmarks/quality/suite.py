"""The suite manifest (``configs/benchmarks/suite.yaml``, ``suite_v2.yaml``) and the experiment config it makes
for each benchmark, update kind and seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cml.evaluation.cml_metrics import REFERENCE

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "configs" / "benchmarks" / "suite.yaml"
SUITE_V2 = REPO / "configs" / "benchmarks" / "suite_v2.yaml"
SEEDS = (0, 1, 2)  # a full run's seeds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchmarkSpec(_Strict):
    config: str  # an experiment config, relative to the suite file
    update_kinds: dict[str, dict[str, Any]]  # kind -> config overrides (`--set` keys, YAML values)
    quick: dict[str, Any] = {}  # overrides of the quick variant
    strategies: list[str] | None = None  # this stream's strategies (labels), where they are not the suite's


class QuickSelection(_Strict):
    benchmarks: list[str]
    update_kinds: list[str]
    strategies: list[str]


class Suite(_Strict):
    # A named suite (v2) prefixes its runs and tables with the name and adds the v2 figures (figures.v2_extras).
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=32)] | None = None
    references: list[str] = Field([REFERENCE], min_length=1)
    default_strategy: str | None = None  # the strategy the project recommends, named in the tables
    added_after_results: list[str] = []  # variants added after seeing results: marked in the tables
    # strategies a full run no longer runs (dominated on every stream that ran them): their measured rows stay in
    # the tables, marked, and their settings in the stream configs, so `--strategies` can still run one
    retired: list[str] = []
    strategies: list[str] | None = None  # the strategies a full run runs (labels; default: all of each config's)
    benchmarks: dict[str, BenchmarkSpec]
    quick: QuickSelection

    @field_validator("references")
    @classmethod
    def _reference_first(cls, references: list[str]) -> list[str]:
        # Every figure against "the reference" (the targets, the tables' "vs FT" columns) reads the first one.
        if references[0] != REFERENCE or len(set(references)) != len(references):
            raise ValueError(f"references must start with {REFERENCE} and not repeat, got {references}")
        return references

    @field_validator("quick")
    @classmethod
    def _quick_names_known(cls, quick: QuickSelection, info: ValidationInfo) -> QuickSelection:
        unknown = sorted(set(quick.benchmarks) - set(info.data.get("benchmarks", {})))
        if unknown:
            raise ValueError(f"benchmarks {unknown} are not in this suite's benchmarks")
        if info.data.get("name") and len(quick.benchmarks) != 1:
            raise ValueError("a named suite's quick mode runs one benchmark (its table is <name>-quick.json)")
        return quick

    @model_validator(mode="after")
    def _references_run(self):
        lists = [("strategies", self.strategies), ("quick.strategies", self.quick.strategies),
                 *((f"benchmarks.{name}.strategies", bench.strategies) for name, bench in self.benchmarks.items())]
        for where, labels in lists:
            missing = [label for label in self.references if labels is not None and label not in labels]
            if missing:
                raise ValueError(f"{where} must run every reference; it lacks {missing}")
        named = [self.default_strategy] if self.default_strategy else []
        run = {label for _, labels in lists for label in labels or ()}
        still_run = sorted(set(self.retired) & run)
        if still_run:
            raise ValueError(f"retired strategies are not run, but {still_run} are")
        unknown = [label for label in named if run and label not in run]
        unknown += [label for label in self.added_after_results if run and label not in run | set(self.retired)]
        if unknown:
            raise ValueError(f"default_strategy must be among the strategies run, added_after_results among those run "
                             f"or retired; {unknown} are not")
        return self


def load_suite(path: Path) -> dict:
    """The benchmark manifest, validated (errors name its file, line and key), as plain data plus its file and
    folder."""
    from cml.config import read_yaml, validated

    tree, node = read_yaml(path, what="suite")
    return {**validated(Suite, tree, node, path).model_dump(), "file": path, "folder": path.parent}


def suite_header(suite: dict) -> dict:
    """What a named suite's tables say of the suite itself: its name, references, the strategy it recommends, the
    variants added after results and the retired strategies."""
    return {"suite": suite["name"], "references": suite["references"], "default_strategy": suite["default_strategy"],
            "added_after_results": suite["added_after_results"], "retired": suite["retired"]}


def benchmarks_of(suite: dict) -> dict[str, dict]:
    """{name: the benchmark's spec, with its name}: what ``run_config`` takes."""
    return {name: {"name": name, **spec} for name, spec in suite["benchmarks"].items()}


def overrides_of(mapping: dict) -> list[str]:
    # JSON is YAML: load_config parses each value back into the structure written here.
    return [f"{key}={json.dumps(value)}" for key, value in mapping.items()]


def run_config(bench: dict, kind: str, seed: int, quick: bool, suite: dict, output_dir: Path,
               strategies: list[str] | None = None):
    """The experiment config of one benchmark, update kind and seed; ``strategies`` (labels) keeps only those,
    else the quick mode's list, the stream's own, the suite's, or all of the config's."""
    from cml.config import load_config
    from cml.errors import CMLError

    prefix = f"{suite['name']}-" if suite.get("name") else ""
    name = f"{prefix}{bench['name']}-{kind}-{'quick' if quick else 'full'}-seed{seed}"
    # A config resolves a relative output_dir against its own folder; this one comes from the command line.
    overrides = {**(bench.get("quick", {}) if quick else {}), **bench["update_kinds"][kind],
                 "seed": seed, "name": name, "output_dir": str(Path(output_dir).absolute())}
    path = Path(suite["folder"]) / bench["config"]
    config = load_config(path, overrides_of(overrides))
    wanted = strategies or (suite["quick"]["strategies"] if quick else bench.get("strategies") or suite.get("strategies"))
    if wanted:
        labels = [s.label for s in config.strategies]
        references = suite.get("references") or [REFERENCE]
        if set(references) - set(wanted) or set(wanted) - set(labels):
            raise CMLError(f"--strategies must name {' and '.join(references)} (the references) and only strategies "
                           f"of this config: {labels}", file=path)
        config = config.model_copy(update={"strategies": [s for s in config.strategies if s.label in wanted]})
    return config

"""The Python API of releases: ``Release.load(path).predict(texts, lang=...)``, and ``train``/``update`` with
the arguments of the ``cml train`` and ``cml update`` commands."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from ..config import ConfigFile, ShipCriteria, StrategyConfig, TrainConfig, UpdateConfig, load_config
from ..errors import CMLError
from ..languages import canonical
from ..models.embedded import loading_model
from ..strategies import make_strategy
from ..strategies.modular import ModularStrategy
from ..tasks import make_task
from .manifest import BASE_ROUTE, MANIFEST, ReleaseRecord, Verdict, read_manifest, verify_files
from .model import load_model, model_name
from .ship import judge


class Release:
    """A release folder, checked (its record, and every weight file against its sha256) and loaded for serving.

    >>> release = Release.load("releases/v2")                       # doctest: +SKIP
    >>> release.predict(["Der Zug fährt um acht."], lang="deu")     # doctest: +SKIP
    [{'text': 'Der Zug fährt um acht.', 'lang': 'deu', 'prediction': 'travel', 'route': 'g1', ...}]
    """

    def __init__(self, folder: Path, record: ReleaseRecord, predictor):
        self.folder, self.record, self.predictor = folder, record, predictor

    @classmethod
    def load(cls, path: str | Path, *, trust_remote_code: bool = False) -> Release:
        from ..config import ModelConfig
        from ..predict import Predictor

        folder = Path(path)
        record = read_manifest(folder)
        verify_files(folder, record)
        settings = {**record.model_settings, "name": model_name(folder, record)}
        with loading_model(str(folder)):
            model_config = ModelConfig.model_validate(settings)
        model_config._trust_remote_code = trust_remote_code
        task = make_task(record.task, record.labels, model_config, record.primary_metric)
        task.languages = list(record.languages)
        model = load_model(task, record, folder, list(record.languages))
        return cls(folder, record, Predictor(task, model, record.languages, _strategy(record, folder),
                                             {"release": record.name}, scope="release", base=BASE_ROUTE))

    @property
    def languages(self) -> list[str]:
        return list(self.record.languages)

    @property
    def labels(self) -> list[str]:
        return list(self.record.labels)

    def predict(self, texts: str | Sequence[str], lang: str | Sequence[str], *, top_k: int | None = None) -> list[dict]:
        """One output per text, in order: ``prediction`` (a label, one per whitespace-separated word for tagging,
        or text), the ``route`` that served it, and with ``top_k`` the most probable labels with their
        probabilities. ``lang`` is one language for all texts or one per text; a language the release does not
        serve goes to its nearest typological group (modular releases) or the base model."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        langs = [lang] * len(texts) if isinstance(lang, str) else list(lang)
        if len(langs) != len(texts):
            raise CMLError(f"{len(texts)} texts but {len(langs)} languages")
        if any(not isinstance(text, str) or not text.strip() for text in texts):
            raise CMLError("every text must be a non-empty string")
        items = [{"text": text, "lang": canonical(code)} for text, code in zip(texts, langs)]
        return list(self.predictor.predict(items, top_k=top_k))

    def check(self, max_significant_losses: int | None = None, min_mean_delta: float | None = None,
              metric: str | None = None) -> Verdict:
        """The ship verdict under other criteria than the release's own (those it was made with by default)."""
        return check(self.folder, max_significant_losses, min_mean_delta, metric)


def _strategy(record: ReleaseRecord, folder: Path):
    """The strategy that made a modular release, with its groups: it routes a language the release does not
    serve (nearest typological group). None for full-model releases."""
    if not record.modules:
        return None
    try:
        config = TypeAdapter(StrategyConfig).validate_python(record.strategy)
    except ValidationError as err:
        raise CMLError(f"not a strategy's settings ({err.errors()[0]['msg']})", file=folder / MANIFEST,
                       key="strategy") from None
    strategy = make_strategy(config)
    if isinstance(strategy, ModularStrategy):
        strategy.groups = dict(record.strategy_state.groups)
        strategy.deployed_modules = list(record.modules)
    return strategy


def check(path: str | Path, max_significant_losses: int | None = None, min_mean_delta: float | None = None,
          metric: str | None = None) -> Verdict:
    """``cml check``: the verdict on the release at ``path`` under its own criteria, each overridable."""
    record = read_manifest(path)
    if record.verdict is None:
        raise CMLError("an initial release (cml train) has nothing before it to check against", file=path)
    given = {"max_significant_losses": max_significant_losses, "min_mean_delta": min_mean_delta, "metric": metric}
    own = {"max_significant_losses": record.verdict.max_significant_losses,
           "min_mean_delta": record.verdict.min_mean_delta, "metric": record.verdict.metric}
    try:
        criteria = ShipCriteria.model_validate({**own, **{k: v for k, v in given.items() if v is not None}})
    except ValidationError as err:
        first = err.errors()[0]
        raise CMLError(first["msg"].removeprefix("Value error, "), key=f"--{str(first['loc'][0]).replace('_', '-')}") \
            from None
    return judge({lang: result.changes for lang, result in record.results.items()}, record.primary_metric,
                 criteria)


def release_config(config: str | Path | ConfigFile, kind: type[ConfigFile], overrides: Sequence[str] = (),
                   trust_remote_code: bool = False) -> ConfigFile:
    """A train or update config: a file read (with ``--set`` overrides) and checked, or a config object."""
    if not isinstance(config, ConfigFile):
        config = load_config(config, overrides, kind=kind)
    elif overrides:
        raise CMLError("overrides apply to a config file; change the config object instead")
    if not isinstance(config, kind):
        raise CMLError(f"expected a {kind.__name__}, got a {type(config).__name__}")
    config.allow_remote_code(trust_remote_code)
    return config


def train(config: str | Path | TrainConfig, out: str | Path, *, overrides: Sequence[str] = (),
          overwrite: bool = False, trust_remote_code: bool = False) -> Release:
    """``cml train CONFIG --out OUT``: the initial release, loaded."""
    from .build import train as build

    build(release_config(config, TrainConfig, overrides, trust_remote_code), out, overwrite=overwrite)
    return Release.load(out, trust_remote_code=trust_remote_code)


def update(config: str | Path | UpdateConfig, source: str | Path, out: str | Path, *, overrides: Sequence[str] = (),
           grow_head: bool = False, overwrite: bool = False, trust_remote_code: bool = False) -> Release:
    """``cml update CONFIG --from SOURCE --out OUT``: the updated release, loaded, whatever its verdict
    (``release.record.verdict.ship`` says whether it may ship)."""
    from .build import update as build

    build(release_config(config, UpdateConfig, overrides, trust_remote_code), source, out, grow=grow_head,
          overwrite=overwrite)
    return Release.load(out, trust_remote_code=trust_remote_code)


def export(release: str | Path, out: str | Path, format: str, *, overwrite: bool = False,
           push_to_hub: str | None = None) -> Path:
    """``cml export RELEASE --format FORMAT --out OUT [--push-to-hub REPO]``: returns ``out``."""
    from .export import export as write, push

    write(release, out, format, overwrite=overwrite)
    if push_to_hub:
        push(out, push_to_hub)
    return Path(out)

"""Lemmatisation pairs (form -> lemma) from the dictionaries that the PyPI package ``simplemma`` ships.

A seq2seq source that works offline in 54 languages. Pairs are sampled deterministically per language
(seeded, over the dictionary's stored order), then split train/dev/test by the ``split`` ratios. Forms
whose lemma equals the form are left out unless ``include_identity`` is set: they teach copying.
"""

from __future__ import annotations

import functools
import json
import random

from ...cache import cache_root
from ...errors import CMLError
from ...io import write_json
from ...languages import canonical
from ...task_family import TaskFamily
from ..examples import Example, MultilingualDataset


@functools.lru_cache(maxsize=1)
def simplemma_languages() -> dict[str, str]:
    """``{canonical code: simplemma code}`` for every dictionary simplemma ships."""
    from simplemma.strategies.dictionaries.dictionary_factory import SUPPORTED_LANGUAGES

    return {canonical(code): code for code in sorted(SUPPORTED_LANGUAGES)}


def read_simplemma(source, task: TaskFamily) -> MultilingualDataset:
    if task is not TaskFamily.seq2seq:
        raise CMLError(f"simplemma pairs are a seq2seq task, but the task is {task.value}", key="task")
    available = simplemma_languages()
    missing = [lang for lang in source.languages if lang not in available]
    if missing:
        raise CMLError(f"simplemma has no dictionary for {', '.join(missing)}; it has: {', '.join(available)}",
                       key="data.languages")
    from importlib.metadata import version

    dataset = MultilingualDataset(task, source="simplemma", inputs={"simplemma": version("simplemma")})
    for lang in source.languages:
        if lang in source.exclude_languages:
            continue
        sample = _sample_pairs(available[lang], source.pairs_per_language, source.include_identity, source.seed)
        if len(sample) < source.pairs_per_language:
            raise CMLError(f"simplemma's {lang} dictionary has {len(sample)} usable pairs, fewer than "
                           f"pairs_per_language={source.pairs_per_language}", key="data.pairs_per_language")
        dataset.add("test", (Example(form, lang, text=form, target=lemma) for form, lemma in sample))
    return dataset


def _sample_pairs(code: str, count: int, include_identity: bool, seed: int) -> list[tuple[str, str]]:
    """Walk the dictionary in a seeded random order and keep the first ``count`` usable pairs.

    Decoding a dictionary takes 1.5-6 s per language (simplemma's front-coded format), so the sample
    is cached as JSON, keyed by the simplemma version and the sampling settings.
    """
    from importlib.metadata import version

    from simplemma.strategies.dictionaries.dictionary_factory import _load_dictionary_from_disk

    cached = cache_root() / "simplemma" / f"{code}-{version('simplemma')}-{count}-{include_identity}-{seed}.json"
    if cached.is_file():
        return [tuple(pair) for pair in json.loads(cached.read_text(encoding="utf-8"))]
    raw = _load_dictionary_from_disk(code)
    forms = sorted(raw)
    rng = random.Random(f"{seed}:{code}")
    pairs: list[tuple[str, str]] = []
    for index in rng.sample(range(len(forms)), len(forms)):
        form, lemma = forms[index].decode(), raw[forms[index]].decode()
        if (include_identity or form != lemma) and _is_word(form) and _is_word(lemma):
            pairs.append((form, lemma))
            if len(pairs) == count:
                break
    write_json(cached, pairs)
    return pairs


def _is_word(text: str) -> bool:
    return text.replace("-", "").replace("'", "").isalpha()

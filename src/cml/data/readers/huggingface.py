"""Hugging Face ``datasets`` sources (optional extra ``continual-multilingual[hf]``), for online users.

Either a hub dataset with one config per language (``Davlan/sib200`` with ``config_template: "{code}"``,
``universal_dependencies`` with ``"{code}_pud"``), or a builder such as ``json`` with per-language
``data_files`` patterns (works offline). Rows are mapped with ``columns`` as for delimited files; integer
class or tag ids are turned into names with the dataset's ``ClassLabel`` features.
"""

from __future__ import annotations

from ...errors import CMLError
from ...task_family import TaskFamily
from ..examples import SPLITS, Example, MultilingualDataset
from .common import check_example, check_tags

_SPLIT_NAMES = {"train": ("train",), "dev": ("validation", "dev"), "test": ("test",)}


def read_huggingface(source, task: TaskFamily) -> MultilingualDataset:
    try:
        import datasets
    except ImportError:
        raise CMLError("the huggingface source needs the `datasets` package: "
                       "pip install 'continual-multilingual[hf]'") from None
    if source.languages == "all":
        raise CMLError("a huggingface source needs an explicit list of languages", key="data.languages")
    label_set = set(source.labels) if source.labels else None
    dataset = MultilingualDataset(task, label_set=tuple(sorted(label_set)) if label_set else None,
                                  source=source.dataset)
    for lang in source.languages:
        if lang in source.exclude_languages:
            continue
        code = source.language_codes.get(lang, lang)
        kwargs = {"trust_remote_code": True} if source.trust_remote_code else {}
        try:
            if source.data_files:
                loaded = datasets.load_dataset(source.dataset, data_files={
                    split: pattern.format(code=code) for split, pattern in source.data_files.items()}, **kwargs)
            else:
                name = source.config_template.format(code=code) if source.config_template else None
                loaded = datasets.load_dataset(source.dataset, name, **kwargs)
        except Exception as err:  # datasets raises many types (network, missing config, file errors)
            raise CMLError(f"could not load {source.dataset} for {lang} ({code}): {err}") from None
        for split in SPLITS:
            name = next((n for n in _SPLIT_NAMES[split] if n in loaded), None)
            if name is not None:
                part = loaded[name]
                where = f"{source.dataset}[{code}/{name}]"
                dataset.inputs[where] = getattr(part, "_fingerprint", None) or "unknown"
                dataset.add(split, (check_example(_example(row, i, lang, task, source.columns, part.features, where),
                                                  task, label_set, where, i + 1) for i, row in enumerate(part)), lang)
    return dataset


def _names(value, feature):
    """Turn ClassLabel ids (or sequences of them) into their names."""
    inner = getattr(feature, "feature", None)
    if hasattr(feature, "int2str") and isinstance(value, int):
        return feature.int2str(value)
    if inner is not None and hasattr(inner, "int2str"):
        return [inner.int2str(v) if isinstance(v, int) else v for v in value]
    return value


def _column(row, column, features, where, index):
    if column not in row:
        raise CMLError(f"missing column {column!r} (has: {', '.join(row)})", file=where, line=index + 1)
    return _names(row[column], features.get(column))


def _example(row, index, lang, task, columns, features, where) -> Example:
    example_id = str(row[columns.id]) if columns.id and columns.id in row else f"{where}:{index}"

    def get(column):
        return _column(row, column, features, where, index)

    if task is TaskFamily.classification:
        return Example(example_id, lang, text=str(get(columns.text)), label=str(get(columns.label)))
    if task is TaskFamily.tagging:
        tags = tuple(map(str, get(columns.tags)))
        if all(t == "O" or t[:2] in ("B-", "I-") for t in tags):
            check_tags(tags, "IOB2", where, [index + 1] * len(tags))
        return Example(example_id, lang, tokens=tuple(map(str, get(columns.tokens))), tags=tags)
    return Example(example_id, lang, text=str(get(columns.source)), target=str(get(columns.target)))

"""CoNLL-style token/tag files (NER), e.g. MasakhaNER: ``<root>/<lang>/{train,dev,test}.txt``.

One token per line with whitespace-separated columns, a blank line between sentences, ``-DOCSTART-``
lines ignored. Tags are validated as strict IOB2 unless ``scheme: none``; ``repair: true`` reads a stray I-X as
B-X, as real corpora need, and counts the repairs per file.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import CMLError
from ...task_family import TaskFamily
from ..examples import SPLITS, Example, MultilingualDataset
from .common import check_example, check_tags, language_folders, open_source_file, source_path


def read_conll(source, task: TaskFamily) -> MultilingualDataset:
    if task is not TaskFamily.tagging:
        raise CMLError(f"CoNLL token/tag data is for tagging, but the task is {task.value}", key="task")
    root = source_path(source, "CoNLL folder")
    label_set = set(source.labels) if source.labels else None
    dataset = MultilingualDataset(task, label_set=tuple(sorted(label_set)) if label_set else None, source=str(root))
    for lang, folder in language_folders(root, source).items():
        for split in SPLITS:
            path = folder / source.file_pattern.format(split=split)
            if path.is_file():
                dataset.add(split, (check_example(e, task, label_set, path, n)
                                    for n, e in _sentences(path, lang, source, dataset)), lang)
    return dataset


def _sentences(path: Path, lang: str, source, dataset: MultilingualDataset):
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def sentence():
        checked, repaired = check_tags(tags, source.scheme, path, lines, source.repair)
        if repaired:
            dataset.repairs[str(path)] = dataset.repairs.get(str(path), 0) + repaired
        return lines[0], Example(f"{path.stem}:{lines[0]}", lang, tokens=tuple(tokens), tags=checked)

    for number, line in enumerate(open_source_file(path, dataset), start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                yield sentence()
            tokens, tags, lines = [], [], []
            continue
        if len(fields) < 2:
            raise CMLError("expected a token and a tag column", file=path, line=number)
        try:
            token, tag = fields[source.token_column], fields[source.tag_column]
        except IndexError:
            raise CMLError(f"line has {len(fields)} columns; token_column {source.token_column} or "
                           f"tag_column {source.tag_column} is out of range", file=path, line=number) from None
        tokens.append(token)
        tags.append(tag)
        lines.append(number)
    if tokens:
        yield sentence()

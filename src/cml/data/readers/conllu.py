"""CoNLL-U treebanks (Universal Dependencies): one tag per word, UPOS or XPOS.

Files are found under the path recursively. The language comes from the file name (``de_pud-ud-test``)
or, failing that, the UD folder name (``UD_German-PUD``); the split from ``-ud-{train,dev,test}``. With a
``languages`` selection, files whose code names no known language (UD's private ``qaf``, ``qpm``) are skipped, so
that a folder of many treebanks can be read; without one, such a file is an error.
Multiword-token ranges (``3-4``) and empty nodes (``5.1``) are skipped: tags belong to syntactic words.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import CMLError
from ...task_family import TaskFamily
from ..examples import Example, MultilingualDataset
from .common import check_example, language_of, open_source_file, source_path, wanted

_FILE = re.compile(r"^(?P<code>[a-z]{2,3})_[a-z0-9]+-ud-(?P<split>train|dev|test)\.conllu$")
_COLUMN = {"upos": 3, "xpos": 4}


def read_conllu(source, task: TaskFamily) -> MultilingualDataset:
    if task is not TaskFamily.tagging:
        raise CMLError(f"CoNLL-U data is for tagging, but the task is {task.value}", key="task")
    root = source_path(source, "CoNLL-U folder")
    files = [root] if root.is_file() else sorted(root.rglob("*.conllu"))
    if not files:
        raise CMLError("no .conllu files found", file=root)
    label_set = set(source.labels) if source.labels else None
    dataset = MultilingualDataset(task, label_set=tuple(sorted(label_set)) if label_set else None, source=str(root))
    for path in files:
        try:
            lang, split = _language_and_split(path)
        except CMLError:
            if source.languages != "all":
                continue  # a code we cannot name is none of the (canonical) languages the source selects
            raise
        if wanted(lang, source):
            dataset.add(split, (check_example(e, task, label_set, path, n)
                                for n, e in read_conllu_file(path, lang, _COLUMN[source.tag_column], dataset)), lang)
    return dataset


def _language_and_split(path: Path) -> tuple[str, str]:
    match = _FILE.match(path.name)
    if match:
        return language_of(match.group("code"), path), match.group("split")
    return language_of(path.parent.name, path), "test"


def read_conllu_file(path: Path, lang: str, column: int, dataset: MultilingualDataset):
    """Yield ``(first line number, Example)`` per sentence; the id is ``sent_id`` (or the line number)."""
    tokens: list[str] = []
    tags: list[str] = []
    sent_id = None
    start = None
    for number, line in enumerate(open_source_file(path, dataset), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if tokens:
                yield start, Example(sent_id or f"line{start}", lang, tokens=tuple(tokens), tags=tuple(tags))
            tokens, tags, sent_id, start = [], [], None, None
            continue
        start = start or number
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip() == "sent_id":
                sent_id = value.strip()
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise CMLError(f"expected 10 tab-separated CoNLL-U columns, got {len(fields)}", file=path, line=number)
        word_id = fields[0]
        if "-" in word_id or "." in word_id:
            continue
        if not word_id.isdigit():
            raise CMLError(f"invalid word id {word_id!r}", file=path, line=number)
        tokens.append(fields[1])
        tags.append(fields[column])
    if tokens:
        yield start, Example(sent_id or f"line{start}", lang, tokens=tuple(tokens), tags=tuple(tags))

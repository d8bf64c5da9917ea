"""TSV, CSV and JSONL sources.

Two layouts: one file with a language column (and optionally a split column), or a folder per language
``<root>/<lang>/{train,dev,test}.<ext>``. A language with no train and dev rows is split by ``split``
ratios. Column names are configurable (``columns``); rows need the columns their task family reads.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from ...errors import CMLError
from ...io import parse_json
from ...task_family import TaskFamily
from ..examples import SPLITS, Example, MultilingualDataset
from .common import check_example, language_folders, language_of, open_source_file, source_path, wanted


def read_delimited(source, task: TaskFamily) -> MultilingualDataset:
    root = source_path(source)
    label_set = set(source.labels) if source.labels else None
    dataset = MultilingualDataset(task, label_set=tuple(sorted(label_set)) if label_set else None, source=str(root))
    if root.is_file():
        _read_single_file(root, source, task, label_set, dataset)
        return dataset
    for lang, folder in language_folders(root, source).items():
        for split in SPLITS:
            path = folder / f"{split}.{source.format}"
            if path.is_file():
                dataset.add(split, (check_example(_example(row, lang, f"{split}:{n}", task, source.columns, path, n),
                                                  task, label_set, path, n)
                                    for n, row in _rows(path, source.format, dataset)), lang)
    return dataset


def _read_single_file(path: Path, source, task, label_set, dataset: MultilingualDataset) -> None:
    columns = source.columns
    if columns.language is None:
        raise CMLError("a single-file source needs columns.language (or use a folder per language)",
                       key="data.columns.language")
    for number, row in _rows(path, source.format, dataset):
        lang = language_of(_text(row, columns.language, path, number), path, number)
        if not wanted(lang, source):
            continue
        split = _text(row, columns.split, path, number) if columns.split else "test"
        if split not in SPLITS:
            raise CMLError(f"split {split!r} is not one of {SPLITS}", file=path, line=number)
        example = _example(row, lang, str(number), task, columns, path, number)
        dataset.add(split, [check_example(example, task, label_set, path, number)])


def _rows(path: Path, fmt: str, dataset: MultilingualDataset) -> Iterator[tuple[int, dict]]:
    """``(line number, row)`` pairs; a row is a dict keyed by the header (TSV/CSV) or the JSON object."""
    with open_source_file(path, dataset, newline="") as handle:
        if fmt == "jsonl":
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = parse_json(line, file=path, line=number)
                if not isinstance(row, dict):
                    raise CMLError("expected a JSON object per line", file=path, line=number)
                yield number, row
            return
        # TSV is split on tabs without quoting (text often holds unbalanced quotes); CSV follows RFC 4180.
        lines = (csv.reader(handle) if fmt == "csv" else (line.rstrip("\r\n").split("\t") for line in handle))
        try:
            header = next(lines, None)
        except csv.Error as err:
            raise CMLError(f"malformed CSV: {err}", file=path, line=1) from None
        if header is None:
            raise CMLError("empty file (expected a header row)", file=path, line=1)
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise CMLError(f"the header names a column twice: {', '.join(repeated)}", file=path, line=1)
        for number, fields in enumerate(_csv_guarded(lines, path, fmt), start=2):
            if fmt == "csv":
                number = lines.line_num  # a quoted field may span lines
            if fields == [""] or not fields:
                continue
            if len(fields) != len(header):
                raise CMLError(f"expected {len(header)} columns ({', '.join(header)}), got {len(fields)}",
                               file=path, line=number)
            yield number, dict(zip(header, fields))


def _csv_guarded(lines, path: Path, fmt: str):
    """The rows, with the csv module's errors (a NUL byte, an unclosed quote at the end) as CMLErrors."""
    number = 1
    while True:
        number += 1
        try:
            yield next(lines)
        except StopIteration:
            return
        except csv.Error as err:
            raise CMLError(f"malformed {fmt.upper()}: {err}", file=path, line=number) from None


def _field(row: dict, column: str, path: Path, number: int):
    if column not in row:
        raise CMLError(f"missing column {column!r} (has: {', '.join(map(str, row))})", file=path, line=number)
    return row[column]


def _text(row: dict, column: str, path: Path, number: int) -> str:
    """A text column: a string (JSONL's null or a number is a mistake, not the text "None")."""
    value = _field(row, column, path, number)
    if not isinstance(value, str):
        raise CMLError(f"column {column!r} must be a string, got {json.dumps(value)[:80]}", file=path, line=number)
    return value


def _label(row: dict, column: str, path: Path, number: int) -> str:
    """A label column: a string, or a JSON integer (class ids are often written as numbers)."""
    value = _field(row, column, path, number)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CMLError(f"column {column!r} must be a string or an integer, got {json.dumps(value)[:80]}",
                       file=path, line=number)
    return str(value)


def _sequence(value, path: Path, number: int) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    if isinstance(value, str):
        return tuple(value.split())
    raise CMLError(f"expected a list of strings or a space-separated string, got {json.dumps(value)[:80]}",
                   file=path, line=number)


def _example(row: dict, lang: str, fallback_id: str, task: TaskFamily, columns, path: Path, number: int) -> Example:
    example_id = _label(row, columns.id, path, number) if columns.id else fallback_id
    if task is TaskFamily.classification:
        return Example(example_id, lang, text=_text(row, columns.text, path, number),
                       label=_label(row, columns.label, path, number))
    if task is TaskFamily.tagging:
        return Example(example_id, lang, tokens=_sequence(_field(row, columns.tokens, path, number), path, number),
                       tags=_sequence(_field(row, columns.tags, path, number), path, number))
    return Example(example_id, lang, text=_text(row, columns.source, path, number),
                   target=_text(row, columns.target, path, number))

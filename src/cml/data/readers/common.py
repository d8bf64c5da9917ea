"""What every reader shares: locating files, selecting languages, checking labels."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

from ...errors import CMLError
from ...io import decode_text, read_bytes, sha256_bytes
from ...languages import canonical
from ...task_family import TaskFamily
from ..examples import SPLITS, Example, MultilingualDataset, split_by_id

_BIO = re.compile(r"^(?:O|[BI]-.+)$")


def source_path(source, what: str = "data") -> Path:
    if source.path is None:
        raise CMLError(f"the {source.format} source needs a path to its {what}", key="data.path")
    path = Path(source.path)
    if not path.exists():
        raise CMLError(f"{what} not found", file=path)
    return path


def open_source_file(path: Path, dataset: MultilingualDataset, what: str = "data file",
                     newline: str | None = None) -> io.StringIO:
    """A data file as text lines, its sha256 recorded in ``dataset.inputs`` (by its path inside the source
    folder ``dataset.source``, or its name for a single-file source). A byte-order mark is accepted;
    bytes that are not UTF-8 are an error naming the file, line and byte offset."""
    data = read_bytes(path, what)
    root = Path(dataset.source)
    # keyed by the path inside the source, so that a data folder that moves keeps its fingerprints
    key = path.relative_to(root).as_posix() if root.is_dir() and path.is_relative_to(root) else path.name
    dataset.inputs[key] = sha256_bytes(data)
    return io.StringIO(decode_text(data, path), newline=newline)


def language_of(code: str, where: Path | str, line: int | None = None) -> str:
    try:
        return canonical(code)
    except CMLError as err:
        raise CMLError(err.message, file=where, line=line) from None


def wanted(lang: str, source) -> bool:
    """Whether a language passes the source's language selection (before reading its files)."""
    if lang in source.exclude_languages:
        return False
    return source.languages == "all" or lang in source.languages


def language_folders(root: Path, source) -> dict[str, Path]:
    """``{canonical language: folder}`` for a per-language folder layout, filtered by the selection."""
    folders: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        lang = language_of(folder.name, folder)
        if lang in folders:
            raise CMLError(f"folders {folders[lang].name} and {folder.name} are the same language ({lang})",
                           file=root)
        if wanted(lang, source):
            folders[lang] = folder
    return folders


def check_tags(tags: Sequence[str], scheme: str, where: Path, lines: Sequence[int],
               repair: bool = False) -> tuple[tuple[str, ...], int]:
    """IOB2: every tag is O, B-X or I-X, and I-X continues a B-X or I-X of the same type. Strict, a stray I-X is
    an error at its token's line; with ``repair`` it is read as B-X (seqeval's lenient reading). Returns the
    tags and how many were repaired."""
    if scheme != "IOB2":
        return tuple(tags), 0
    fixed, repaired, previous = [], 0, "O"
    for tag, line in zip(tags, lines):
        if not _BIO.match(tag):
            raise CMLError(f"tag {tag!r} is not an IOB2 tag (O, B-TYPE, I-TYPE)", file=where, line=line)
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            if not repair:
                raise CMLError(f"invalid IOB2 sequence: {tag} follows {previous} (set `repair: true` to read it "
                               f"as B-{tag[2:]})", file=where, line=line)
            tag, repaired = f"B-{tag[2:]}", repaired + 1
        fixed.append(tag)
        previous = tag
    return tuple(fixed), repaired


def check_label(label: str, label_set: set[str] | None, where: Path | str, line: int | None) -> None:
    if label_set is not None and label not in label_set:
        raise CMLError(f"label {label!r} is not in the label set {sorted(label_set)}", file=where, line=line)


def check_example(example: Example, task: TaskFamily, label_set: set[str] | None, where: Path | str,
                  line: int | None) -> Example:
    """Refuse an example that lacks what its task family needs, or carries an unknown label."""
    if task is TaskFamily.tagging:
        if not example.tokens:
            raise CMLError("empty token sequence", file=where, line=line)
        if example.tags is None or len(example.tags) != len(example.tokens):
            raise CMLError(f"{len(example.tokens)} tokens but {len(example.tags or ())} tags", file=where, line=line)
        for tag in example.tags:
            check_label(tag, label_set, where, line)
        return example
    if not example.text or not example.text.strip():
        raise CMLError("empty text", file=where, line=line)
    if task is TaskFamily.classification:
        if not example.label:
            raise CMLError("empty label", file=where, line=line)
        check_label(example.label, label_set, where, line)
    elif not example.target or not example.target.strip():
        raise CMLError("empty target", file=where, line=line)
    return example


def finish_dataset(dataset: MultilingualDataset, source, required: Sequence[str] = SPLITS) -> MultilingualDataset:
    """Split test-only languages, cap splits, check the selection was found, check that every language has the
    ``required`` splits."""
    ratios = source.split.model_dump()
    for lang, by_split in dataset.splits.items():
        if not by_split["train"] and not by_split["dev"] and by_split["test"]:
            by_split.update(split_by_id(by_split["test"], ratios, seed=0))
        if source.max_per_split:
            caps = source.max_per_split
            for split in SPLITS:
                cap = caps if isinstance(caps, int) else getattr(caps, split)
                if cap:
                    del by_split[split][cap:]
    if source.languages != "all":
        missing = [lang for lang in source.languages if lang not in dataset.splits]
        if missing:
            raise CMLError(f"languages not found in the source: {', '.join(missing)}; "
                           f"available: {', '.join(dataset.languages) or 'none'}", file=dataset.source)
    if source.labels is not None and dataset.label_set is None:
        dataset.label_set = tuple(source.labels)
    dataset.check(required)
    return dataset

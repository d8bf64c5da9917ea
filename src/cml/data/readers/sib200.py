"""SIB-200: ``<root>/<lang>_<Script>/{train,dev,test}.tsv`` with columns index_id, category, text."""

from __future__ import annotations

from pathlib import Path

from ...errors import CMLError
from ...task_family import TaskFamily
from ..examples import SPLITS, Example, MultilingualDataset
from .common import check_example, language_folders, open_source_file, source_path

_HEADER = ["index_id", "category", "text"]


def read_sib200(source, task: TaskFamily) -> MultilingualDataset:
    if task is not TaskFamily.classification:
        raise CMLError(f"SIB-200 is a classification dataset, but the task is {task.value}", key="task")
    root = source_path(source, "SIB-200 folder")
    dataset = MultilingualDataset(task, source=str(root))
    label_set = set(source.labels) if source.labels else _labels_file(root, dataset)
    dataset.label_set = tuple(sorted(label_set)) if label_set else None
    for lang, folder in language_folders(root, source).items():
        for split in SPLITS:
            dataset.add(split, _read_file(folder / f"{split}.tsv", lang, task, label_set, dataset), lang)
    return dataset


def _labels_file(root: Path, dataset: MultilingualDataset) -> set[str] | None:
    """SIB-200 ships ``labels.txt`` inside each language folder; any one of them gives the label set."""
    for labels in sorted(root.glob("*/labels.txt"))[:1]:
        return {line.strip() for line in open_source_file(labels, dataset, "label file") if line.strip()}
    return None


def _read_file(path: Path, lang: str, task: TaskFamily, label_set: set[str] | None,
               dataset: MultilingualDataset) -> list[Example]:
    if not path.is_file():
        raise CMLError("missing SIB-200 split file", file=path)
    examples = []
    with open_source_file(path, dataset) as handle:
        # Plain split on tabs rather than csv: the text column holds unbalanced quotes.
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").rstrip("\r").split("\t")
            if number == 1:
                if fields != _HEADER:
                    raise CMLError(f"expected the header {_HEADER}, got {fields}", file=path, line=1)
                continue
            if len(fields) != 3:
                raise CMLError(f"expected 3 tab-separated columns, got {len(fields)}", file=path, line=number)
            index_id, category, text = fields
            examples.append(check_example(Example(id=index_id, lang=lang, text=text, label=category),
                                          task, label_set, path, number))
    return examples

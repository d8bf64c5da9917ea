"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str | Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give them the modes a plain write would."""
    path = Path(path)
    mask = _umask()
    for entry in (path, *(path.iterdir() if path.is_dir() else ())):
        entry.chmod((0o777 if entry.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Clear what a killed process left of its atomic writes under ``root``, and return what it removed:
    ``.<name>.*.tmp`` files and folders (``atomic_open``, ``save_checkpoint``) are removed; a ``.<name>.old``
    folder (``save_checkpoint``'s swap) is removed, or renamed back to ``<name>`` when the kill fell between
    the two renames of the swap and ``<name>`` is missing: the older checkpoint is still a valid one."""
    removed = []
    for folder, subfolders, files in os.walk(root):
        for name in [n for n in files if n.startswith(".") and n.endswith(".tmp")]:
            (Path(folder) / name).unlink()
            removed.append(Path(folder) / name)
        for name in [n for n in subfolders if n.startswith(".") and n.endswith((".tmp", ".old"))]:
            path = Path(folder) / name
            subfolders.remove(name)  # nothing to walk in there any more
            original = path.with_name(name[1:-len(".old")])
            if name.endswith(".old") and not original.exists():
                os.replace(path, original)
                continue
            shutil.rmtree(path)
            removed.append(path)
    return removed

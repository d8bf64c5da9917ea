"""Files as this tool touches them: atomic writes (a reader never sees a half-written file, and a failed write
leaves nothing behind), clean-up of what a killed write left (only names this tool made), an exclusive lock per
run folder, and one way to read text that turns bad bytes into an error naming the file, line and byte."""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import CMLError

# Every temporary this tool creates starts with this prefix, so that clean-up can never touch a user's file.
TEMPORARY_PREFIX = ".cml-"
LOCK_FILE = ".cml.lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str | Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries, and so do some writers inside them (transformers 5's
    weight files); give them all the modes a plain write would."""
    path = Path(path)
    mask = _umask()
    for entry in (path, *(path.rglob("*") if path.is_dir() else ())):
        if not entry.is_symlink():
            entry.chmod((0o777 if entry.is_dir() else 0o666) & ~mask)


def temporary_name(name: str) -> str:
    """The prefix of the temporary that will become ``name`` (mkstemp/mkdtemp add a random part and ``.tmp``)."""
    return f"{TEMPORARY_PREFIX}{name}."


def swap_name(name: str) -> str:
    """Where ``name`` waits while its replacement is renamed in (a folder swap is two renames)."""
    return f"{TEMPORARY_PREFIX}{name}.old"


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_name(path.name), suffix=".tmp", dir=path.parent)
    try:
        with writing(path):
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


def _occupied(folder: Path) -> bool:
    return folder.is_symlink() or folder.exists() and (not folder.is_dir() or any(folder.iterdir()))


@contextlib.contextmanager
def new_folder(folder: str | Path, *, overwrite: bool = False, what: str = "output folder",
               replaceable: Callable[[Path], bool] = lambda _: False) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to fill; it becomes ``folder`` (two renames) only if the block
    succeeds, so no reader ever sees half of it. A ``folder`` that exists and is not empty is replaced only with
    ``overwrite`` and when ``replaceable(folder)`` says it is this tool's output (checked again at the rename:
    another process may have written there meanwhile); never a link, the working folder or an ancestor of it."""
    folder = Path(folder)
    resolved = folder.resolve()
    if folder.name in ("", ".", "..") or resolved in (Path(resolved.anchor), Path.home()) \
            or Path.cwd().is_relative_to(resolved):
        raise CMLError(f"the {what} must be a new folder, not the working folder, a parent of it or the root",
                       file=folder)

    def check() -> None:
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise CMLError(f"the {what} exists and is not a folder", file=folder)
        if _occupied(folder) and not overwrite:
            raise CMLError(f"the {what} is not empty: choose another, or pass --overwrite to replace it", file=folder)
        if _occupied(folder) and not replaceable(folder):
            raise CMLError(f"--overwrite replaces only what cml wrote, and this {what} holds something else",
                           file=folder)

    check()
    with writing(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temporary_name(folder.name), suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        make_readable(tmp)
        check()
        with writing(folder):
            old = folder.with_name(swap_name(folder.name))
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def refuse_overlap(out: str | Path, source: str | Path | None) -> None:
    """An output folder may not be its own input, hold it or lie inside it: replacing it would destroy the input."""
    if source is None:
        return
    out, source = Path(out).resolve(), Path(source).resolve()
    if out == source or source.is_relative_to(out) or out.is_relative_to(source):
        raise CMLError(f"the output folder and the input {source} overlap: write to a folder beside it", file=out)


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """A refused write (no space left, no permission, a read-only disk) as a CMLError naming ``path``: errors
    from a file handle carry no file name of their own."""
    try:
        yield
    except OSError as err:
        raise CMLError(f"cannot write: {err.strerror or err}", file=path) from None


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Clear what a killed process left of its atomic writes under ``root`` (a run folder), and return what it
    removed. Only entries whose names this tool makes are touched: ``.cml-<name>.<random>.tmp`` files and
    folders (``atomic_open``, ``save_checkpoint``) are removed; a ``.cml-<name>.old`` folder (a checkpoint
    swap) is removed, or renamed back to ``<name>`` when the kill fell between the two renames of the swap and
    ``<name>`` is missing: the older checkpoint is still a valid one. Links are never followed."""
    removed = []
    for folder, subfolders, files in os.walk(root):
        for name in [n for n in files if n.startswith(TEMPORARY_PREFIX) and n.endswith(".tmp")]:
            (Path(folder) / name).unlink()
            removed.append(Path(folder) / name)
        for name in [n for n in subfolders if n.startswith(TEMPORARY_PREFIX) and n.endswith((".tmp", ".old"))]:
            path = Path(folder) / name
            subfolders.remove(name)  # nothing to walk in there any more
            original_name = name[len(TEMPORARY_PREFIX):-len(".old")]
            if path.is_symlink() or original_name in ("", ".", ".."):  # not a name this tool makes
                continue
            original = path.with_name(original_name)
            if name.endswith(".old") and not original.exists():
                os.replace(path, original)
                continue
            shutil.rmtree(path)
            removed.append(path)
    return removed


class FolderLock:
    """An exclusive lock on a folder (``fcntl.flock`` on ``<folder>/.cml.lock``), held from ``acquire`` until
    ``release`` or the process's end: the kernel drops it when its holder dies, so a lock left by a killed
    process never blocks. The file holds the holder's PID, named in the refusal a second process gets."""

    def __init__(self, folder: str | Path, what: str = "run folder"):
        self.folder = Path(folder)
        self.what = what
        self._handle: IO | None = None

    def acquire(self) -> FolderLock:
        """Take the lock, then refuse the folder if anything in it is a link: every path this tool writes under
        the folder then stays inside it (a link planted in someone else's run folder could point anywhere)."""
        path = self.folder / LOCK_FILE
        try:  # O_NOFOLLOW: a planted link named .cml.lock must not make us write (the PID) through it
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise CMLError(f"cannot open the lock file ({err.strerror}); is it a link?", file=path) from None
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CMLError("the lock file is not a regular file", file=path)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = handle.read(32).strip() or "unknown"
                raise CMLError(f"this {self.what} is in use by another cml process (PID {holder}); wait for it "
                               "to finish or stop it", file=self.folder) from None
            refuse_links(self.folder)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_links(folder: Path, why: str = "a run folder may not hold links: this one could make cml write "
                                           "outside it") -> None:
    """A CMLError naming the first symbolic link found anywhere under ``folder`` (links are not followed)."""
    for parent, subfolders, files in os.walk(folder):
        for name in [*subfolders, *files]:
            if (Path(parent) / name).is_symlink():
                raise CMLError(why, file=Path(parent) / name)


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """A file's bytes; a missing or unreadable file is a CMLError naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CMLError(f"{what} not found", file=path) from None
    except IsADirectoryError:
        raise CMLError(f"expected a {what}, found a folder", file=path) from None
    except OSError as err:
        raise CMLError(f"cannot read the {what}: {err.strerror}", file=path) from None


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's contents, a byte-order mark accepted and dropped. Bytes that are not UTF-8 are a
    CMLError naming the file, the line and the byte offset; a missing or unreadable file names the file."""
    return decode_text(read_bytes(path, what), path)


def decode_text(data: bytes, where: str | Path, first_line: int = 1) -> str:
    """UTF-8 ``data`` (a leading byte-order mark dropped) as text; ``first_line`` is the line ``data`` starts on,
    for an error's line number."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[:err.start]  # lines end in \n, \r\n or a lone \r
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + first_line
        raise CMLError(f"not valid UTF-8: byte 0x{data[err.start]:02x} at byte offset {err.start} "
                       "(save the file as UTF-8)", file=where, line=line) from None


def parse_json(text: str, *, file: str | Path | None, line: int | None = None, what: str = "JSON"):
    """``json.loads`` with every way it fails (bad syntax, nesting deeper than Python's stack, an integer of
    more than 4,300 digits) as a CMLError naming the file and line."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
        # a lone surrogate (`"\ud800"`) parses, but is no text: it breaks tokenizers and writes later
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return value
    except json.JSONDecodeError as err:
        raise CMLError(f"invalid {what}: {err.msg}", file=file, line=(line or 1) + err.lineno - 1) from None
    except UnicodeEncodeError:
        raise CMLError(f"invalid {what}: a \\u escape names a lone surrogate, which is not text", file=file,
                       line=line) from None
    except (ValueError, RecursionError) as err:  # a number too large for a float is one too: 1e400 is inf
        raise CMLError(f"invalid {what}: {type(err).__name__}: {str(err)[:120]}", file=file, line=line) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(digits: str) -> int:
    # no number this tool reads needs 300 digits; a bigger one overflows every float it meets later
    if len(digits) > 300:
        raise ValueError(f"an integer of {len(digits)} digits")
    return int(digits)


def read_json(path: str | Path, what: str = "file"):
    """A JSON file's value; a truncated or malformed file is a CMLError naming the file and line."""
    return parse_json(read_text(path, what), file=path, what=f"{what}: not valid JSON, it may be truncated or "
                                                              "hand-edited;")


def open_text(path: str | Path, what: str = "file") -> io.StringIO:
    """``read_text`` as lines to iterate."""
    return io.StringIO(read_text(path, what))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

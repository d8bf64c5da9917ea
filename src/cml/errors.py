"""One error type for everything a user can get wrong: it names where (file, line, key path) and what."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click


class CMLError(Exception):
    """A user-facing error. The CLI prints it as ``file:line: key: message`` and exits with status 2."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 key: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        super().__init__(self.location_prefix() + message)

    def location_prefix(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file + (f":{self.line}" if self.line is not None else ""))
        if self.key:
            parts.append(self.key)
        return "".join(p + ": " for p in parts)


def invalid_record(err, what: str, file: str | Path) -> CMLError:
    """A record file's first validation error (a pydantic ``ValidationError``) as "not <what> (<why>)", naming the
    file and the dotted key."""
    first = err.errors()[0]
    return CMLError(f"not {what} ({first['msg'].removeprefix('Value error, ')})", file=file,
                    key=".".join(map(str, first["loc"])) or None)


def printable(text: str) -> str:
    """``text`` on one line with its control characters escaped: a message may quote a hostile file, whose
    escape sequences must not reach the terminal."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@contextmanager
def exit_on_user_error():
    """Turns a CMLError raised inside (or an OSError that names its file: no space left, no permission) into one
    clear red line on stderr and exit status 2: the behaviour of the ``cml`` command and of the scripts under
    ``benchmarks/``."""
    try:
        yield
    except CMLError as err:
        click.secho(f"error: {printable(str(err))}", fg="red", err=True)
        sys.exit(2)
    except OSError as err:  # a file the machine would not let us read or write: say which, not a traceback
        if err.filename is None:
            raise
        click.secho(f"error: {printable(str(err.filename))}: {err.strerror}", fg="red", err=True)
        sys.exit(2)

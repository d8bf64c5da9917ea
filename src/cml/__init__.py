"""cml: continual multilingual learning.

``from cml import Release, train, update, check, export``: the release API (:mod:`cml.release.api`), imported on first
use so that the command line starts fast.
"""

__version__ = "0.1.0"
_API = ("Release", "train", "update", "check", "export")


def __getattr__(name: str):
    if name in _API:
        from .release import api

        return getattr(api, name)
    raise AttributeError(f"module 'cml' has no attribute {name!r}")


__all__ = list(_API)

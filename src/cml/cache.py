"""The toolkit's cache folder: converted models, typology matrices, sampled datasets."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_root() -> Path:
    """``$CML_CACHE_DIR`` if set, else the user cache folder (``~/.cache/cml`` on Linux)."""
    configured = os.environ.get("CML_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path(platformdirs.user_cache_dir("cml"))

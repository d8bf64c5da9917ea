"""The versions a run or a release was made with, recorded beside its results."""

from __future__ import annotations

import platform
from importlib.metadata import version

PACKAGES = ("continual-multilingual", "torch", "transformers", "accelerate", "peft", "tokenizers", "sacrebleu", "seqeval")


def package_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{name: version(name) for name in PACKAGES}}

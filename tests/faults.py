"""Run ``cml`` with one fault: SIGKILL the process at the N-th occurrence of a point.

    python tests/faults.py POINT N -- <cml arguments>

Points (each patches the object the code actually calls):

``mid-epoch``
    right after the N-th optimizer step of the process (any optimizer, any stage), before the training loop
    logs, counts or checkpoints that step: a torch global optimizer-step post-hook.
``checkpoint-write`` or ``checkpoint-write:FOLDER``
    inside the N-th ``save_checkpoint`` (only those that save into a folder named FOLDER, e.g. ``latest``,
    ``best``, ``0-initial``, ``1-update``), just after its ``model.safetensors`` was written into the temporary
    folder ``.cml-<FOLDER>.<random>.tmp`` and before that folder is renamed into place
    (``cml.training.checkpoint.save_file``).
``checkpoint-swap``
    between the two renames of the N-th checkpoint that replaces an existing one: the old folder has become
    ``.cml-<FOLDER>.old``, the new one is still ``.cml-<FOLDER>.<random>.tmp`` (``os.replace``).
``results-write``
    at the N-th rename of a temporary onto ``results.json``: the temporary is written, results.json is not
    there (``os.replace`` as ``cml.io`` calls it; ``cml.io.os`` is the ``os`` module).
``between-stages``
    right after the N-th finished stage was saved by the experiment (``cml.experiment.save_checkpoint``).

Before the kill one line ``faults: SIGKILL at <point> #<N> (<detail>)`` goes to stderr, so a caller can tell this
kill from any other death. With ``FAULTS_TRACE=1`` every counted occurrence is printed the same way (``faults:
<point> #<n> (<detail>)``) and nothing is killed unless N is reached: run with a large N to list the points.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

POINTS = ("mid-epoch", "checkpoint-write", "checkpoint-swap", "results-write", "between-stages")


def _say(line: str) -> None:
    sys.stderr.write(f"\nfaults: {line}\n")  # on a line of its own, after any progress bar
    sys.stderr.flush()


class Counter:
    def __init__(self, point: str, n: int):
        self.point, self.n, self.count = point, n, 0

    def hit(self, detail: str) -> None:
        """Count one occurrence; SIGKILL this process at the N-th."""
        self.count += 1
        if os.environ.get("FAULTS_TRACE"):
            _say(f"{self.point} #{self.count} ({detail})")
        if self.count == self.n:
            _say(f"SIGKILL at {self.point} #{self.count} ({detail})")
            os.kill(os.getpid(), signal.SIGKILL)


def _target_of_temporary(folder: Path) -> str | None:
    """``latest`` for ``.cml-latest.<random>.tmp`` (the names ``save_checkpoint`` makes), else None."""
    name = folder.name
    if not (name.startswith(".cml-") and name.endswith(".tmp")):
        return None
    return name[len(".cml-"):-len(".tmp")].rsplit(".", 1)[0]


def install(point: str, n: int) -> None:
    """Install the one patch that kills this process at the ``n``-th occurrence of ``point``."""
    kind, _, only = point.partition(":")
    if kind not in POINTS:
        raise SystemExit(f"faults: unknown point {point!r}; one of {', '.join(POINTS)}")
    counter = Counter(point, n)

    if kind == "mid-epoch":
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(
            lambda optimizer, args, kwargs: counter.hit(type(optimizer).__name__ + ".step"))

    elif kind == "checkpoint-write":
        import cml.training.checkpoint as checkpoint

        original = checkpoint.save_file

        def save_file(tensors, filename, *args, **kwargs):
            result = original(tensors, filename, *args, **kwargs)
            path = Path(filename)
            target = _target_of_temporary(path.parent)
            if path.name == "model.safetensors" and target is not None and (not only or target == only):
                counter.hit(f"{path.parent} holds model.safetensors")
            return result

        checkpoint.save_file = save_file

    elif kind in ("checkpoint-swap", "results-write"):
        import cml.io

        original = cml.io.os.replace  # the os module's: cml.training.checkpoint calls the same function

        def replace(src, dst, *args, **kwargs):
            if kind == "results-write" and Path(dst).name == "results.json":
                counter.hit(f"{src} -> {dst}")
            result = original(src, dst, *args, **kwargs)
            name = Path(dst).name
            if kind == "checkpoint-swap" and name.startswith(".cml-") and name.endswith(".old"):
                counter.hit(f"{src} -> {dst}")
            return result

        cml.io.os.replace = replace

    elif kind == "between-stages":
        import cml.experiment as experiment

        original = experiment.save_checkpoint

        def save_checkpoint(folder, *args, **kwargs):
            result = original(folder, *args, **kwargs)
            counter.hit(f"saved {folder}")
            return result

        experiment.save_checkpoint = save_checkpoint


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[2] != "--":
        raise SystemExit(__doc__)
    point, n, cml_args = argv[0], int(argv[1]), argv[3:]
    install(point, n)
    from cml.cli import main as cml_main

    cml_main(args=cml_args, prog_name="cml", standalone_mode=True)


if __name__ == "__main__":
    main(sys.argv[1:])

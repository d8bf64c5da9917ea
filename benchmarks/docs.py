"""Every generated block of README.md and docs/*.md, regenerated from ``benchmarks/results/*.json`` (issue 32, item 5).

    python benchmarks/docs.py            # rewrite every block from its command's output
    python benchmarks/docs.py --check    # exit 1, naming each stale block and its file; write nothing
    python benchmarks/docs.py --list     # the blocks and the commands that print them

A generated block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in a Markdown file. Its
content is what a command prints (stripped of leading and trailing blank lines), and ``BLOCKS`` below says which
command: the benchmark scripts' ``--show`` modes (and ``benchmarks/tables.py`` for the tables they do not print),
each of which only reads the committed JSON. They run as subprocesses, so this file depends on their command lines
and printed output only, not on how the scripts are built inside. A marker in a file that ``BLOCKS`` does not name,
or a registered block whose markers are missing, is an error, so a block cannot silently stop being checked.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUALITY = ("benchmarks/cml_quality.py",)

# (file, block name) -> the command line (after the Python interpreter) whose output the block holds
BLOCKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("README.md", "headline"): ("benchmarks/tables.py", "v2-headline"),
    ("docs/benchmarks.md", "targets"): ("benchmarks/tables.py", "targets"),
    ("docs/benchmarks.md", "quality-v1"): (*QUALITY, "--show", "--markdown"),
    ("docs/benchmarks.md", "quality-v1-quick"): (*QUALITY, "--show", "--markdown", "--quick"),
    ("docs/benchmarks.md", "dominated"): (*QUALITY, "--dominated", "subset"),
    ("docs/benchmarks.md", "v2-quick"): (*QUALITY, "--v2", "--show", "--markdown", "--quick"),
    ("docs/benchmarks.md", "v2-full"): (*QUALITY, "--v2", "--show", "--markdown"),
    ("docs/benchmarks.md", "dominated-v2"): (*QUALITY, "--v2", "--dominated", "subset"),
    ("docs/benchmarks.md", "v2-cost"): ("benchmarks/tables.py", "v2-cost"),
    ("docs/benchmarks.md", "speed"): ("benchmarks/speed.py", "--show", "--markdown"),
    ("docs/benchmarks.md", "frozen-cache"): ("benchmarks/frozen_cache_quality.py", "--show", "--markdown"),
    ("docs/benchmarks.md", "scale"): ("benchmarks/tables.py", "scale"),
    ("docs/method.md", "gate-moves"): ("benchmarks/tables.py", "gate-moves"),
    ("docs/benchmarks.md", "train-defaults"): ("benchmarks/train_defaults.py", "--show", "--markdown"),
}
DOCUMENTS = ("README.md", "docs/*.md")  # where markers are looked for
MARKER = re.compile(r"^<!-- ([A-Za-z0-9_.-]+):(start|end) -->$", re.MULTILINE)  # a marker is a line of its own


class DocsError(Exception):
    """A block that cannot be regenerated: missing or unknown markers, or a command that failed."""


def command_line(argv: tuple[str, ...]) -> str:
    return "python " + " ".join(argv)


def run(argv: tuple[str, ...], root: Path = REPO) -> str:
    """What ``python ARGV`` prints, run from the repository root with this interpreter."""
    done = subprocess.run([sys.executable, *argv], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise DocsError(f"{command_line(argv)} exited {done.returncode}:\n{tail}")
    return done.stdout


def markers(text: str) -> dict[str, tuple[int, int]]:
    """{name: (end of the start marker's line, start of the end marker)} for every block of ``text``."""
    found: dict[str, dict[str, int]] = {}
    for match in MARKER.finditer(text):
        name, side = match.groups()
        if side in found.setdefault(name, {}):
            raise DocsError(f"block {name!r}: two {side} markers")
        found[name][side] = match.end() if side == "start" else match.start()
    spans = {}
    for name, sides in found.items():
        if set(sides) != {"start", "end"} or sides["start"] > sides["end"]:
            raise DocsError(f"block {name!r}: needs <!-- {name}:start --> before <!-- {name}:end -->")
        spans[name] = (sides["start"], sides["end"])
    return spans


def fill(text: str, outputs: dict[str, str]) -> str:
    """``text`` with each named block's content replaced by its output (blocks not in ``outputs`` unchanged)."""
    spans = markers(text)
    for name, (start, end) in sorted(spans.items(), key=lambda item: -item[1][0]):
        if name in outputs:
            text = text[:start] + "\n" + outputs[name].strip("\n") + "\n" + text[end:]
    return text


def documents(root: Path = REPO) -> list[str]:
    return sorted({str(p.relative_to(root)) for pattern in DOCUMENTS for p in root.glob(pattern)})


def plan(root: Path = REPO, blocks: dict = BLOCKS) -> dict[str, dict[str, tuple[str, ...]]]:
    """{file: {block: command}}, after checking that the files' markers and ``blocks`` name the same blocks."""
    by_file: dict[str, dict[str, tuple[str, ...]]] = {}
    for (name, block), argv in blocks.items():
        by_file.setdefault(name, {})[block] = argv
    problems = []
    for name in sorted(set(documents(root)) | set(by_file)):
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: absent, but blocks {sorted(by_file[name])} are registered for it")
            continue
        found = set(markers(path.read_text(encoding="utf-8")))
        wanted = set(by_file.get(name, {}))
        problems += [f"{name}: block {b!r} has no command in benchmarks/docs.py BLOCKS" for b in sorted(found - wanted)]
        problems += [f"{name}: block {b!r} is registered but has no <!-- {b}:start --> / <!-- {b}:end --> markers"
                     for b in sorted(wanted - found)]
    if problems:
        raise DocsError("\n".join(problems))
    return by_file


def regenerate(check: bool, root: Path = REPO, blocks: dict = BLOCKS, jobs: int = 2) -> list[str]:
    """Regenerate (or with ``check``, compare) every block; returns one line per stale block (check) or per file
    rewritten."""
    by_file = plan(root, blocks)
    commands = sorted({argv for wanted in by_file.values() for argv in wanted.values()})
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        printed = dict(zip(commands, pool.map(lambda argv: run(argv, root), commands)))
    lines = []
    for name, wanted in sorted(by_file.items()):
        path = root / name
        text = path.read_text(encoding="utf-8")
        new = fill(text, {block: printed[argv] for block, argv in wanted.items()})
        if new == text:
            continue
        old_spans, new_spans = markers(text), markers(new)
        stale = [block for block in sorted(wanted) if text[slice(*old_spans[block])] != new[slice(*new_spans[block])]]
        if check:
            lines += [f"{name}: block {block!r} is stale; regenerate with python benchmarks/docs.py "
                      f"(it holds the output of {command_line(wanted[block])})" for block in stale]
        else:
            path.write_text(new, encoding="utf-8")
            lines.append(f"{name}: rewrote {', '.join(stale)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if a block is stale")
    parser.add_argument("--list", action="store_true", help="print the blocks and their commands")
    parser.add_argument("--jobs", type=int, default=2, help="commands run at once (default 2)")
    args = parser.parse_args(argv)
    if args.list:
        for (name, block), command in BLOCKS.items():
            print(f"{name}  {block}  {command_line(command)}")
        return 0
    try:
        lines = regenerate(args.check, jobs=args.jobs)
    except DocsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=sys.stderr if args.check else sys.stdout)
    if args.check and lines:
        return 1
    if not lines:
        print(f"all {len(BLOCKS)} generated blocks are up to date", file=sys.stderr if args.check else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

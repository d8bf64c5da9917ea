"""The results tables (``benchmarks/results/<benchmark>-<mode>.json``, a named suite's ``<name>-<benchmark>.json``):
where each lies, read back, and a run's streams merged in and written, keeping every earlier seed's rows."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cml.errors import CMLError
from cml.evaluation.cml_metrics import REFERENCE
from cml.io import write_json

from .figures import FIGURES
from .streams import in_order, stream_table

RESULTS = Path(__file__).resolve().parents[1] / "results"


def table_path(results_dir: Path, suite: dict, benchmark: str, mode: str) -> Path:
    """Where a benchmark's table goes: ``<benchmark>-<mode>.json``; a named suite's ``<name>-<benchmark>.json``,
    its quick mode's (one benchmark) ``<name>-quick.json``."""
    if suite.get("name"):
        return Path(results_dir) / f"{suite['name']}-{'quick' if mode == 'quick' else benchmark}.json"
    return Path(results_dir) / f"{benchmark}-{mode}.json"


@dataclass
class Ledger:
    """One benchmark's results table: its header (benchmark and mode; a named suite's name, primary metric,
    references, default strategy and variants added after results) and its streams by update kind, each with its
    per-seed rows. The full benchmark runs over many sessions, one update kind, seed or set of strategies at a time,
    so a run adds its rows to the table (``record``) and must not erase another run's."""

    path: Path
    header: dict = field(default_factory=dict)
    streams: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Ledger:
        """The table at ``path``, empty where there is none yet. A run reads it before any training, so an
        unreadable table stops the run at once rather than after hours."""
        if not path.is_file():
            return cls(path)
        try:
            table = json.loads(path.read_text("utf-8"))
            streams = {stream["update_kind"]: stream for stream in table["streams"]}
            header = {key: value for key, value in table.items() if key != "streams"}
        except (ValueError, KeyError, TypeError) as err:
            raise CMLError(f"cannot merge into this benchmark table ({err}); move it away to start a new one",
                           file=path) from None
        without_rows = [kind for kind, stream in streams.items() if not isinstance(stream.get("per_seed"), dict)]
        if without_rows:
            raise CMLError(f"cannot merge into this benchmark table: streams {without_rows} have no per-seed rows; "
                           "move it away to start a new one", file=path)
        return cls(path, header, streams)

    def report(self, kinds: list[str] | None = None) -> dict:
        """The table as written: the header and the streams, or those of ``kinds`` in that order."""
        chosen = kinds or list(self.streams)
        return {**self.header, "streams": [self.streams[kind] for kind in chosen if kind in self.streams]}

    def record(self, header: dict, streams: dict[str, dict], kinds: list[str], strategies: list[str],
               quick: bool = False) -> dict:
        """Merge a run's streams ({update kind: ``stream_table``}) into the table and write it (atomically: a run
        killed here leaves the earlier table whole); returns the table written. Streams of update kinds the run
        did not repeat are kept whole, a repeated one keeps the seeds and strategies the run left out
        (``merged_stream``). ``kinds`` and ``strategies`` give the order, the suite's and the config's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.path.parent):
            # the table as it is now: another run of this benchmark (another seed) may have recorded since this
            # one read it, and its rows must be kept
            self.streams = Ledger.read(self.path).streams
            merged = {**self.streams, **{kind: merged_stream(self.streams.get(kind), stream, strategies, quick)
                                         for kind, stream in streams.items()}}
            self.header, self.streams = header, {kind: merged[kind] for kind in in_order(merged, kinds)}
            table = self.report()
            write_json(self.path, table)
        return table

    def restamp(self, header: dict) -> None:
        """Rewrite the table's header fields in ``header`` (a suite's, ``suite_header``), its rows untouched: what
        the suite says of its strategies (the default, the variants added after results, the retired) changes
        without a run. Atomic, and under the lock a recording run takes."""
        with _exclusive(self.path.parent):
            current = Ledger.read(self.path)
            if not current.streams:
                raise CMLError("no table to restamp; run the benchmark first", file=self.path)
            current.header.update(header)
            write_json(self.path, current.report())


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``flock`` on the folder itself, so it leaves no file behind), waiting
    for another holder: runs that record into its tables at the same time take turns."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # drops the lock


def merged_stream(earlier: dict | None, stream: dict, order: list[str], quick: bool = False) -> dict:
    """A run's stream merged into the earlier run's, seed by seed (``merged_seed``); seeds the run did not repeat
    are kept whole. Each earlier run's record keeps the strategies by seed it still accounts for, and a named
    suite's stage-0 curves stay with their seeds' rows. ``order``: the config's strategy labels."""
    if earlier is None:
        return stream
    per_seed, replaced = dict(earlier["per_seed"]), {}
    for seed, rows in stream["per_seed"].items():
        per_seed[seed], replaced[seed] = merged_seed(per_seed.get(seed, {}), rows)
    runs = [kept for kept in (still_accounted(run, replaced) for run in earlier["runs"]) if kept]
    stage0 = None
    if "stage0" in stream:
        stage0 = {seed: curve for seed, curve in (earlier.get("stage0") or {}).items() if seed in per_seed}
        stage0.update(stream["stage0"])
    return stream_table(stream["update_kind"], stream["config"], per_seed, runs + stream["runs"], order, stage0, quick)


def merged_seed(earlier: dict[str, dict], rows: dict[str, dict]) -> tuple[dict[str, dict], set[str]]:
    """One seed's rows after a run that repeated it: the run's rows, plus the earlier rows of the strategies it left
    out when both runs measured the same reference (``same_reference``), else none of them. Also returns the
    earlier strategies whose rows are gone (replaced or dropped)."""
    kept = {k: v for k, v in earlier.items() if k not in rows} if same_reference(earlier, rows) else {}
    return {**kept, **rows}, set(earlier) - set(kept)


def same_reference(earlier: dict[str, dict], rows: dict[str, dict]) -> bool:
    """Whether two runs of one seed measured the same reference: the same figures for full fine-tuning (training time
    aside). Full fine-tuning is deterministic, so that holds when the config, data and code it depends on are
    unchanged, and then the earlier strategies' figures, all relative to it, still hold."""
    def figures(row: dict) -> dict:
        return {key: row.get(key) for key in FIGURES if not key.endswith("seconds")}

    return REFERENCE in earlier and REFERENCE in rows and figures(earlier[REFERENCE]) == figures(rows[REFERENCE])


def still_accounted(run: dict, gone: dict[str, set[str]]) -> dict | None:
    """An earlier run's record without the rows now ``gone`` ({seed: strategies}); None when none is left."""
    remaining = {seed: [s for s in strategies if s not in gone.get(seed, ())]
                 for seed, strategies in run["strategies"].items()}
    remaining = {seed: strategies for seed, strategies in remaining.items() if strategies}
    return {**run, "strategies": remaining} if remaining else None

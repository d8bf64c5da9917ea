"""Quality benchmark: does each update strategy spread gains and shrink losses on real data?

Runs the streams of ``configs/benchmarks/suite.yaml`` (each benchmark's "subset" update and its other update
kinds) with every strategy over several seeds, prints the headline table against ``full_finetune`` and the
paper's targets for ``laft_uriel``, and writes ``benchmarks/results/<benchmark>-<mode>.json``.

    python benchmarks/cml_quality.py --quick            # one seed, fewer languages: under 15 min on 2 CPU cores
    python benchmarks/cml_quality.py                    # every benchmark and update kind, seeds 0 1 2
    python benchmarks/cml_quality.py --benchmarks sib200 --kinds subset --seeds 0
    python benchmarks/cml_quality.py --show --markdown  # the tables already measured, as docs/benchmarks.md quotes them
    python benchmarks/cml_quality.py --show --plot docs/img  # ... and as charts: docs/img/<benchmark>-<mode>.png
    python benchmarks/cml_quality.py --v2 --quick       # the benchmark v2 (issue 30): under 10 min on 2 CPU cores
    python benchmarks/cml_quality.py --v2 --benchmarks ud_pos --seeds 0   # v2, one stream and seed (resumable)
    python benchmarks/cml_quality.py --v2 --show --markdown   # v2's tables, as docs/benchmarks.md quotes them
    python benchmarks/cml_quality.py --v2 --restamp   # the tables take the suite's default, variants and retired strategies

Runs go to ``runs/benchmarks/<benchmark>-<kind>-<mode>-seed<k>/`` and resume where they stopped. The full benchmark
takes many sessions, so the table is built in pieces and keeps each seed's rows: a run of some update kinds keeps the
other kinds' streams, a run of some seeds keeps the other seeds' rows, and a run of some strategies (``--strategies``,
full_finetune among them) keeps, per seed, the other strategies' rows when it measured the same full fine-tuning.
The update kinds of one benchmark share stage 0 (same data, model and seed), so its trained model is reused, not
retrained.

``--v2`` runs the suite ``configs/benchmarks/suite_v2.yaml`` (a suite with a ``name``): its runs and tables carry the
name (``runs/benchmarks/v2-<benchmark>-...``, ``benchmarks/results/v2-<benchmark>.json``, the quick mode's one stream
in ``v2-quick.json``), every table has both references (``full_finetune`` and ``no_update``), each row adds the
total loss, the figures against each reference and the same figures for every metric the task computes, each
stream records its stage-0 dev curves and how many languages full fine-tuning degraded significantly per seed, and
the run fails (exit 1) where that problem is absent: fewer than ``PROBLEM_MIN_LOSSES`` languages in a full run, no
language outside the update in the quick one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the quality package lies beside this script, which the tests load by its path
    sys.path.insert(0, BENCHMARKS)

from quality.ledger import RESULTS, Ledger, table_path  # noqa: E402
from quality.run import Request, run_benchmarks  # noqa: E402
from quality.show import show_dominance, show_tables  # noqa: E402
from quality.suite import REPO, SEEDS, SUITE, SUITE_V2, load_suite, suite_header  # noqa: E402

from cml.evaluation.cml_metrics import REFERENCE  # noqa: E402


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, fewer languages and streams (see suite.yaml)")
    parser.add_argument("--benchmarks", nargs="+", help="benchmarks of suite.yaml to run (default: all, or quick's)")
    parser.add_argument("--kinds", nargs="+", help="update kinds to run (default: all, or quick's)")
    parser.add_argument("--seeds", nargs="+", type=int, help=f"default: {' '.join(map(str, SEEDS))}; --quick: 0")
    parser.add_argument("--strategies", nargs="+", help=f"only these strategies (labels; {REFERENCE} among them)")
    parser.add_argument("--v2", action="store_true", help=f"the benchmark v2 (suite {SUITE_V2.relative_to(REPO)})")
    parser.add_argument("--suite", type=Path, help=f"the benchmark manifest (default: {SUITE.relative_to(REPO)})")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "benchmarks", help="where the runs go")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON tables go")
    parser.add_argument("--show", action="store_true", help="print the tables already in --results-dir; train nothing")
    parser.add_argument("--markdown", action="store_true", help="with --show: print the tables as Markdown")
    parser.add_argument("--dominated", metavar="KIND",
                        help="print, from the measured full tables, which strategies others dominate on the streams "
                             "of update kind KIND (how --v2's strategies were cut); train nothing")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="with --show: also draw each table as DIR/<benchmark>-<mode>.png")
    parser.add_argument("--restamp", action="store_true",
                        help="a named suite's tables take what the suite now says of its strategies (default, "
                             "variants added after results, retired); their rows are untouched; train nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if (args.markdown or args.plot) and not args.show:
        parser.error("--markdown and --plot go with --show")
    if args.show and (args.seeds or args.strategies):
        parser.error("--show prints whole tables; --seeds and --strategies choose what to run")
    if args.v2 and args.suite:
        parser.error("--v2 runs its own suite; --suite chooses another")
    suite_path = args.suite or (SUITE_V2 if args.v2 else SUITE)
    suite = load_suite(suite_path)
    names = args.benchmarks or (suite["quick"]["benchmarks"] if args.quick else list(suite["benchmarks"]))
    unknown = sorted(set(names) - set(suite["benchmarks"]))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; {suite_path} has {sorted(suite['benchmarks'])}")
    if args.restamp:
        if not suite.get("name"):
            parser.error("--restamp rewrites a named suite's tables (--v2); this suite has no name")
        for name in names:
            ledger = Ledger.read(table_path(args.results_dir, suite, name, "quick" if args.quick else "full"))
            ledger.restamp(suite_header(suite))
            print(f"restamped {ledger.path}")
        return 0
    if args.dominated:
        show_dominance(suite, names, args.results_dir, args.dominated)
        return 0
    if args.show:
        show_tables(suite, names, "quick" if args.quick else "full", args.results_dir, kinds=args.kinds,
                    markdown=args.markdown, plot=args.plot, chosen=bool(args.benchmarks))
        return 0
    command = "python benchmarks/cml_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    request = Request(suite, seeds=args.seeds or ([0] if args.quick else list(SEEDS)), quick=args.quick,
                      output_dir=args.output_dir, results_dir=args.results_dir, command=command, kinds=args.kinds,
                      strategies=args.strategies)
    return run_benchmarks(request, names)


if __name__ == "__main__":
    from cml.errors import exit_on_user_error

    with exit_on_user_error():
        sys.exit(main())

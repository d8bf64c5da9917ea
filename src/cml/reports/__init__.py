"""Reports on finished runs: ``report.md``, a self-contained ``report.html`` and ``results.csv`` for one run
(:func:`cml.reports.report.write_report`), and a comparison of several runs (:mod:`.compare`).

Nothing is imported here, so that loading the CLI commands (:mod:`.command`) stays cheap.
"""

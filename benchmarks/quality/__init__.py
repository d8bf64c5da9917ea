"""The quality benchmark's parts, one job a module (``benchmarks/cml_quality.py`` is the command line):

- ``suite``: the suite manifest and the experiment config of each benchmark, update kind and seed;
- ``figures``: one run's ``results.json`` reduced to a row of figures per strategy;
- ``streams``: a stream's entry of a results table: rows aggregated over seeds, targets and the problem checked;
- ``ledger``: the results tables (``benchmarks/results/*.json``): where they lie, read, merged and written;
- ``tables``: the tables printed (terminal, Markdown) and the dominance table;
- ``run``: the run program: the runs, stage 0 shared across update kinds, each benchmark's table updated;
- ``show``: the show program: the tables already measured, printed and drawn, trained nothing.
"""

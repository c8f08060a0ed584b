"""The benchmark report: a pure function from result files to tables, figures and one HTML page.

Modules (imported on demand, so ``import compare.report`` stays cheap):

- :mod:`~benchcore.experiments`: the validated experiments sheet (``config/experiments.tsv``).
- :mod:`~compare.report.collect`: ``metrics.json`` / efficiency files -> DataFrames; expected vs missing runs.
- :mod:`~compare.report.tables`: display tables and :func:`~compare.report.tables.write_table` (CSV, MD, LaTeX).
- :mod:`~compare.report.reference`: user-supplied paper numbers and the paper-vs-reproduced table.
- :mod:`~compare.report.figures`: matplotlib figures (Agg).
- :mod:`~compare.report.html`: :func:`~compare.report.html.build_report`, the whole report.

Command line: ``python -m compare.report --results results --config config/config.yaml
--experiments config/experiments.tsv --out results/report [--seeds 0 1 2] [--reference FILE]``.
"""

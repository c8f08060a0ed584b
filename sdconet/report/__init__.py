"""The benchmark report: a pure function from result files to tables, figures and one HTML page.

Modules (imported on demand, so ``import sdconet.report`` stays cheap):

- :mod:`~sdconet.report.experiments`: the validated experiments sheet (``config/experiments.tsv``).
- :mod:`~sdconet.report.collect`: ``metrics.json`` / efficiency files -> DataFrames; expected vs missing runs.
- :mod:`~sdconet.report.tables`: display tables and :func:`~sdconet.report.tables.write_table` (CSV, MD, LaTeX).
- :mod:`~sdconet.report.reference`: user-supplied paper numbers and the paper-vs-reproduced table.
- :mod:`~sdconet.report.figures`: matplotlib figures (Agg).
- :mod:`~sdconet.report.html`: :func:`~sdconet.report.html.build_report`, the whole report.

Command line: ``python -m sdconet.report --results results --config config/config.yaml
--experiments config/experiments.tsv --out results/report [--seeds 0 1 2] [--reference FILE]``.
"""

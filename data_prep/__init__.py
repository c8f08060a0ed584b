"""Data stage of sdconet-bench: fetch, convert, tile, partition, degrade and export datasets.

See ``docs/formats.md`` for every on-disk format. Run ``python -m data_prep --help``.
"""
import benchcore as _benchcore  # noqa: F401  (applies offline-safe library defaults)

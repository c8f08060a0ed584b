"""SDCoNet reimplementation: model, training engine, evaluation and the ``python -m sdconet`` CLI.

Imports only :mod:`benchcore` below it (which applies the offline-safe library defaults on import).
"""
import benchcore as _benchcore  # noqa: F401  (applies offline-safe library defaults)

__version__ = _benchcore.__version__

"""SDCoNet reimplementation and the shared benchmark utilities (metrics, provenance, atomic I/O).

Importing this package is cheap (no torch import) and applies offline-safe defaults for the
libraries the suite drives (ultralytics, Hugging Face hub); see :mod:`sdconet.utils.offline`.
"""
from sdconet.utils.offline import apply_offline_defaults

apply_offline_defaults()

__version__ = "0.1.0"

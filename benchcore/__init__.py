"""The suite's shared bottom layer: atomic I/O, provenance, offline defaults, configuration, the experiments
sheet, run specifications and the metrics every method is scored with.

Every other package (``data_prep``, ``sdconet``, ``baselines``, ``compare``) imports this one; it imports none of
them. Importing it is cheap (no torch import) and applies offline-safe defaults for the libraries the suite
drives (ultralytics, Hugging Face hub); see :mod:`benchcore.offline`.
"""
from benchcore.offline import apply_offline_defaults

apply_offline_defaults()

__version__ = "0.1.0"

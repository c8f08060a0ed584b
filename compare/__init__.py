"""The cross-method top layer: efficiency of every method (:mod:`compare.efficiency_runner`) and the report
(:mod:`compare.report`). It imports :mod:`sdconet` and :mod:`baselines`; neither imports it.
"""
import benchcore as _benchcore  # noqa: F401  (applies offline-safe library defaults)

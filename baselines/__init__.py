"""Serial baselines: SR models (BasicSR archs, interpolation) feeding ultralytics YOLO and torchvision Faster R-CNN.

Imports only :mod:`benchcore` and :mod:`data_prep` below it, never the model package :mod:`sdconet`.
"""
import benchcore as _benchcore  # noqa: F401  (applies offline-safe library defaults)

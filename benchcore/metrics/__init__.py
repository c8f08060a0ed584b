"""Metrics shared by SDCoNet and every baseline: one implementation, one set of conventions.

Submodules (import them explicitly; this package imports nothing heavy, in particular no torch):

- :mod:`benchcore.metrics.detection`: COCO AP via pycocotools (``coco_evaluate``), VOC mAP50
  (``voc_map50``), ``scale_boxes_to_hr``. Every method is scored on the **HR pixel grid**.
- :mod:`benchcore.metrics.sr`: PSNR/SSIM as in BasicSR (uint8 RGB HWC, ``crop_border`` = scale,
  Y channel by default), ``tensor_to_uint8``, ``sr_metrics``.
- :mod:`benchcore.metrics.efficiency`: parameters, FLOPs (fvcore MACs or torch FLOPs, named),
  latency and peak memory.
- :mod:`benchcore.metrics.stats`: seed summaries and image-level bootstrap confidence intervals.
- :mod:`benchcore.metrics.results`: the ``metrics.json`` schema, writer and reader.
"""

__all__ = ["detection", "sr", "efficiency", "stats", "results"]

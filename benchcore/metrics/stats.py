"""Significance statistics: across-seed summaries and image-level bootstrap confidence intervals."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchcore.metrics.detection import COCO_KEYS, _check_detections, _evaluate, load_gt


def seed_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value) of one metric over seeds.

    Returns:
        ``{"mean", "std", "n", "values"}``; ``values`` as plain floats in the given order.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("seed_summary needs at least one value")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"seed_summary got NaN in {vals}")
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": float(np.mean(vals)), "std": std, "n": len(vals), "values": vals}


def _resample(gt: dict, anns_by_img: list[list[dict]], dets_by_img: list[list[dict]],
              idx: np.ndarray) -> tuple[dict, list[dict]]:
    """A GT dict and detections for the images ``idx`` (with repeats); every draw gets a fresh image id,
    so an image drawn twice counts twice."""
    images, anns, dets = [], [], []
    for new_id, i in enumerate(idx.tolist(), start=1):
        images.append(dict(gt["images"][i], id=new_id))
        for a in anns_by_img[i]:
            anns.append(dict(a, image_id=new_id, id=len(anns) + 1))
        dets.extend(dict(d, image_id=new_id) for d in dets_by_img[i])
    return {"images": images, "categories": gt["categories"], "annotations": anns}, dets


def bootstrap_ci(gt: dict | str | Path, detections: list[dict], metric: str = "AP", n_boot: int = 200,
                 alpha: float = 0.05, seed: int = 0, max_dets: int = 100, protocol: str = "coco") -> dict[str, Any]:
    """Percentile bootstrap confidence interval of a COCO metric, resampling **test images** with replacement.

    Each replicate draws ``num_images`` images with replacement, copies them (with their annotations and
    detections) under new image ids, and scores the set with :func:`~benchcore.metrics.detection.coco_evaluate`'s
    engine. Replicates where the metric is undefined (e.g. no small GT drawn for ``AP_s``) are dropped and
    counted in ``n_valid``. Deterministic for a given ``seed``.

    Args:
        gt, detections: as for ``coco_evaluate`` (HR pixel grid).
        metric: one of ``AP, AP50, AP75, AP_s, AP_m, AP_l, AR1, AR10, AR100, AR_s, AR_m, AR_l``.
        n_boot: number of replicates.
        alpha: 1 - confidence level (0.05 gives a 95 % interval).
        protocol: the AP protocol of the run (``coco`` / ``mmdet``, as :func:`coco_evaluate`), so that the
            interval is around the number the tables show.

    Returns:
        ``{"low", "high", "point", "n_boot", "n_valid", "metric", "alpha", "seed", "method": "percentile"}``;
        ``point`` is the metric on the original set.
    """
    if metric not in COCO_KEYS and protocol == "coco":
        raise ValueError(f"unknown metric {metric!r}; expected one of {COCO_KEYS}")
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    data = load_gt(gt)
    dets = _check_detections(data, detections)
    if not data["images"]:
        raise ValueError("ground truth has no images to resample")
    kw = dict(max_dets=max_dets, per_class=False, quiet=True, only=metric, protocol=protocol)
    point = _evaluate(data, dets, **kw)[metric]
    pos = {im["id"]: i for i, im in enumerate(data["images"])}
    anns_by_img: list[list[dict]] = [[] for _ in data["images"]]
    dets_by_img: list[list[dict]] = [[] for _ in data["images"]]
    for a in data["annotations"]:
        if a["image_id"] in pos:
            anns_by_img[pos[a["image_id"]]].append(a)
    for d in dets:
        dets_by_img[pos[d["image_id"]]].append(d)
    rng = np.random.default_rng(seed)
    n = len(data["images"])
    values = []
    for _ in range(n_boot):
        boot_gt, boot_dets = _resample(data, anns_by_img, dets_by_img, rng.integers(0, n, size=n))
        v = _evaluate(boot_gt, boot_dets, **kw)[metric]
        if v is not None:
            values.append(v)
    if values:
        low, high = (float(x) for x in np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    else:
        low = high = None
    return {"low": low, "high": high, "point": point, "n_boot": n_boot, "n_valid": len(values), "metric": metric,
            "alpha": alpha, "seed": seed, "method": "percentile", "protocol": protocol}

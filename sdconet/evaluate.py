"""Inference over a tile dataset -> COCO detection metrics (+ optional SR PSNR/SSIM) and ``metrics.json``.

Model contract (eval mode): ``model(images, None)`` returns one dict per image with ``boxes`` (K, 4) xyxy in
HR pixels, ``scores`` (K,) and ``labels`` (K,) in 0..C-1; ``model(images, None, return_sr=True)`` returns
``(detections, sr)`` with ``sr`` (B, 3, 2h, 2w) in the normalised colour space of the input.

Detections become COCO results: ``category_id = label + 1``, ``bbox = [x, y, w, h]``, the tile's COCO image
id. COCO AP keeps the ``max_dets`` highest-scoring boxes per image and class (the model may emit more, e.g. 300);
``protocol="mmdet"`` scores as the released code (mmdetection ``CocoMetric``: AP50 / AP75 / AP_s/m/l over all of
them, :func:`benchcore.metrics.detection.coco_evaluate`).

SR metrics: the SR output and the HR reference (``target["hr"]`` with an offline LR set, else the
normalised HR input) are de-normalised to uint8 RGB and scored with :mod:`benchcore.metrics.sr`. The default
follows the BasicSR convention (``crop_border = dataset.scale``, Y channel); spec section 10 row 12 recommends
RGB without a border crop for SDCoNet numbers: pass ``crop_border=0, test_y_channel=False`` for that.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from sdconet.checkpoint import unwrap
from sdconet.data import MEAN_255, STD_255, build_loader
from benchcore.metrics.detection import coco_evaluate
from benchcore.metrics.sr import psnr, ssim, tensor_to_uint8
from benchcore.atomic import atomic_write_json


def _to_uint8(x: Tensor) -> np.ndarray:
    """Normalised (B, 3, H, W) -> uint8 (B, H, W, 3) RGB."""
    return tensor_to_uint8(x, mean=MEAN_255, std=STD_255, range_=(0.0, 255.0))


def outputs_to_coco(outputs: list[Mapping[str, Tensor]], image_ids: list[int]) -> list[dict[str, Any]]:
    """Model detections (xyxy, 0-based labels) of a batch -> COCO results (xywh, ``category_id = label + 1``)."""
    if len(outputs) != len(image_ids):
        raise ValueError(f"model returned {len(outputs)} detection dicts for {len(image_ids)} images")
    dets: list[dict[str, Any]] = []
    for out, img_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().float().cpu().reshape(-1, 4)
        scores = out["scores"].detach().float().cpu().reshape(-1)
        labels = out["labels"].detach().cpu().reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"image {img_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for b, s, c in zip(xywh, scores.tolist(), labels.tolist()):
            dets.append({"image_id": int(img_id), "category_id": int(c) + 1, "bbox": b, "score": float(s)})
    return dets


def _sr_rows(sr: Tensor, ref: Tensor, crop_border: int, test_y_channel: bool) -> list[tuple[float, float]]:
    """Per-image (PSNR, SSIM) of a batch. The SR output must have the reference's size (the HR tile, mod-cropped
    to what the LR tile covers): a size mismatch is an error, never a silent crop or resize."""
    if sr.shape[-2:] != ref.shape[-2:]:
        raise ValueError(f"SR output {tuple(sr.shape[-2:])} differs from its HR reference {tuple(ref.shape[-2:])}")
    a, b = _to_uint8(sr), _to_uint8(ref)
    return [(psnr(x, y, crop_border, test_y_channel), ssim(x, y, crop_border, test_y_channel))
            for x, y in zip(a, b)]


PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
"""Inference precisions of ``python -m sdconet evaluate --precision``: the autocast dtype, None for float32 (the
evaluation protocol's; the others check AP under mixed precision against it)."""


def evaluate(model: nn.Module, dataset: Any, coco_gt: dict | str | Path, device: torch.device | str,
             batch_size: int = 2, sr: bool = False, max_dets: int = 100, *, crop_border: int | None = None,
             test_y_channel: bool = True, workers: int = 0, amp_dtype: torch.dtype | None = None,
             protocol: str = "coco") -> dict[str, Any]:
    """Run ``model`` over ``dataset`` (in order, no augmentation expected) and score it.

    Args:
        model: a model following the contract above (a DDP wrapper is unwrapped); its train/eval mode is
            restored afterwards.
        dataset: a :class:`sdconet.data.TileDataset` built with ``train=False``.
        coco_gt: the COCO ground truth (dict or path) of the same images.
        device: where to run the model.
        batch_size: images per forward pass.
        sr: also request the SR output and compute PSNR/SSIM.
        max_dets: detections per image kept by COCO AP (COCO default 100).
        crop_border: SR border crop in pixels (default: ``dataset.scale``, BasicSR convention).
        test_y_channel: score the Y channel (BasicSR convention) instead of RGB.
        workers: DataLoader workers.
        amp_dtype: autocast dtype (float16 / bfloat16) on ``device``'s type, None for float32 (the engine passes
            its training one, :func:`sdconet.engine.autocast_dtype`, None on the CPU; ``python -m sdconet evaluate
            --precision`` passes :data:`PRECISIONS`' entry).
        protocol: the AP protocol, ``"coco"`` or ``"mmdet"`` (:func:`benchcore.metrics.detection.coco_evaluate`).

    Returns:
        ``{"detection": coco_evaluate(...) dict, "sr": {"psnr", "ssim", "n", "crop_border", "test_y_channel"} |
        None, "detections": [COCO results]}``.
    """
    core = unwrap(model)
    device = torch.device(device)
    border = crop_border if crop_border is not None else getattr(dataset, "scale", None)
    if sr and border is None:
        raise ValueError("evaluate(sr=True) needs crop_border, or a dataset built with the run's scale")
    loader = build_loader(dataset, batch_size, shuffle=False, seed=0, workers=workers, distributed=False)
    was_training = core.training
    core.eval()
    dets: list[dict[str, Any]] = []
    rows: list[tuple[float, float]] = []
    sr_sizes: set[tuple[int, int]] = set()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    try:
        with torch.inference_mode(), autocast:
            for images, targets in loader:
                x = images.to(device, non_blocking=True)
                if sr:
                    outputs, sr_img = core(x, None, return_sr=True)
                    if sr_img is None:
                        raise RuntimeError("evaluate(sr=True): the model returned no SR image (SR branch disabled?)")
                    ref = torch.stack([t["hr"] for t in targets]) if "hr" in targets[0] else images
                    sr_sizes.add(tuple(int(v) for v in sr_img.shape[-2:]))
                    rows.extend(_sr_rows(sr_img.float().cpu(), ref, int(border), test_y_channel))
                else:
                    outputs = core(x, None)
                dets.extend(outputs_to_coco(outputs, [int(t["image_id"]) for t in targets]))
    finally:
        core.train(was_training)
    detection = coco_evaluate(coco_gt, dets, max_dets=max_dets, protocol=protocol)
    sr_res = None
    if sr:
        sr_res = {"psnr": float(np.mean([r[0] for r in rows])), "ssim": float(np.mean([r[1] for r in rows])),
                  "n": len(rows), "crop_border": int(border), "test_y_channel": test_y_channel,
                  "sr_sizes": sorted([list(v) for v in sr_sizes])}
    return {"detection": detection, "sr": sr_res, "detections": dets}


def write_run_metrics(out_path: str | Path, result: Mapping[str, Any], method: str, dataset: str,
                      degradation: str, seed: int, config: Mapping[str, Any] | None, device: Any,
                      efficiency: Mapping[str, Any] | None = None,
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``metrics.json`` (validated, with provenance) and ``detections.json`` beside it, atomically.

    ``result`` is what :func:`evaluate` returned. Returns the metrics document.
    """
    from benchcore.metrics.results import write_metrics  # noqa: PLC0415  (jsonschema only when writing)

    out_path = Path(out_path)
    doc = write_metrics(out_path, method=method, dataset=dataset, degradation=degradation, seed=seed,
                        detection=result["detection"], sr=result.get("sr"), efficiency=efficiency, extra=extra,
                        config=config, device=device)
    atomic_write_json(out_path.parent / "detections.json", list(result.get("detections", [])), indent=None)
    return doc

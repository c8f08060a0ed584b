"""Pure box geometry used by the detection half (DETR ``util/box_ops.py`` style).

Conventions: ``cxcywh`` boxes are normalised to [0, 1] by the (HR) image width/height, ``xyxy`` boxes are
either normalised or in pixels as each function states. All functions accept any leading batch shape
``(..., 4)`` unless they say "pairwise", and none of them has state. Format conversion and the pairwise
(G)IoU are torchvision's (``box_convert``, ``box_iou``, ``generalized_box_iou``); this module only adds
the DETR-specific helpers torchvision lacks (inverse sigmoid, pixel <-> normalised conversion).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_area as _tv_box_area
from torchvision.ops import box_convert
from torchvision.ops import box_iou as _tv_box_iou
from torchvision.ops import generalized_box_iou as _tv_generalized_box_iou

from sdconet.models.host import device_tensor

__all__ = [
    "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "box_area", "box_iou", "generalized_box_iou",
    "inverse_sigmoid", "normalize_xyxy_to_cxcywh", "denormalize_cxcywh_to_xyxy",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2).

    Args:
        boxes: (..., 4).

    Returns:
        (..., 4), same units as the input.
    """
    return box_convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h).

    Args:
        boxes: (..., 4).

    Returns:
        (..., 4), same units as the input.
    """
    return box_convert(boxes, "xyxy", "cxcywh")


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes.

    Args:
        boxes: (N, 4) xyxy.

    Returns:
        (N,).
    """
    return _tv_box_area(boxes)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes.

    Args:
        boxes1: (N, 4) xyxy.
        boxes2: (M, 4) xyxy.

    Returns:
        (N, M).
    """
    return _tv_box_iou(boxes1, boxes2)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) of xyxy boxes, in [-1, 1].

    Args:
        boxes1: (N, 4) xyxy with x2 >= x1, y2 >= y1.
        boxes2: (M, 4) xyxy.

    Returns:
        (N, M).
    """
    return _tv_generalized_box_iou(boxes1, boxes2)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit with clamping, mmdet's ``inverse_sigmoid`` (the DINO decoder refines with ``eps=1e-3``).

    Args:
        x: any shape, values expected in [0, 1] (clamped first).
        eps: lower clamp of ``x`` and ``1 - x``.

    Returns:
        ``log(x / (1 - x))``, same shape.
    """
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def _image_hw(image_hw: tuple[float, float] | Tensor, boxes: Tensor) -> Tensor:
    """``image_hw`` as a tensor on ``boxes``' device and dtype (host values copied without a sync: ``host``)."""
    if isinstance(image_hw, Tensor):
        return image_hw.to(boxes.device, boxes.dtype)
    return device_tensor(image_hw, boxes.dtype, boxes.device)


def normalize_xyxy_to_cxcywh(boxes: Tensor, image_hw: tuple[float, float] | Tensor) -> Tensor:
    """Pixel xyxy boxes -> cxcywh normalised by the image size (the DETR target format).

    Args:
        boxes: (..., 4) xyxy in pixels.
        image_hw: (h, w) of the image the pixels refer to (the HR tile), or a tensor broadcastable to
            (..., 2) holding (h, w).

    Returns:
        (..., 4) normalised cxcywh.
    """
    hw = _image_hw(image_hw, boxes)
    whwh = torch.stack([hw[..., 1], hw[..., 0], hw[..., 1], hw[..., 0]], dim=-1)
    return box_xyxy_to_cxcywh(boxes / whwh)


def denormalize_cxcywh_to_xyxy(boxes: Tensor, image_hw: tuple[float, float] | Tensor,
                               clamp: bool = True) -> Tensor:
    """Normalised cxcywh -> pixel xyxy, optionally clipped to the image (mmdet's ``_predict_by_feat_single``).

    Args:
        boxes: (..., 4) normalised cxcywh.
        image_hw: (h, w) in pixels, or a tensor broadcastable to (..., 2) holding (h, w).
        clamp: clip x to [0, w] and y to [0, h].

    Returns:
        (..., 4) xyxy in pixels.
    """
    hw = _image_hw(image_hw, boxes)
    whwh = torch.stack([hw[..., 1], hw[..., 0], hw[..., 1], hw[..., 0]], dim=-1)
    out = box_cxcywh_to_xyxy(boxes) * whwh
    if clamp:
        out = torch.minimum(out.clamp(min=0), whwh)
    return out

"""Input normalisation and the low-quality (LR) input (spec 1 and 2.1).

Official pipeline: RGB, ImageNet mean/std in 0..255 units, then ``interpolate(scale_factor=0.5,
mode="bicubic", align_corners=False)`` (``antialias=False``) on the *normalised* float tensor, on the fly,
without clipping or quantisation. An offline LR set (already degraded images) skips the downsampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sdconet.models.config import LRConfig
from sdconet.models.host import device_tensor

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    shape = (1, 3, 1, 1) if x.dim() == 4 else (3, 1, 1)
    mean = device_tensor(IMAGENET_MEAN_255, torch.float32, x.device).view(shape)
    std = device_tensor(IMAGENET_STD_255, torch.float32, x.device).view(shape)
    return mean, std


def normalise(img: Tensor) -> Tensor:
    """ImageNet-normalise an RGB image.

    Args:
        img: (B, 3, H, W) or (3, H, W) RGB; ``uint8`` in 0..255 or floating point in [0, 1].

    Returns:
        float32 tensor of the same shape, ``(img_255 - mean) / std``.
    """
    if img.shape[-3] != 3:
        raise ValueError(f"expected 3 (RGB) channels, got shape {tuple(img.shape)}")
    x = img.to(torch.float32) if img.dtype == torch.uint8 else img.to(torch.float32) * 255.0
    mean, std = _stats(x)
    return (x - mean) / std


def denormalise(x: Tensor) -> Tensor:
    """Inverse of :func:`normalise`: float RGB in 0..255 units (not clipped or rounded)."""
    mean, std = _stats(x)
    return x.to(torch.float32) * std + mean


def make_lr(hr_normalised: Tensor, scale: int, kernel: str = "bicubic") -> Tensor:
    """Downsample the normalised HR tensor exactly like the official model (no antialias, no clipping).

    Args:
        hr_normalised: (B, 3, H, W) normalised HR.
        scale: Downscaling factor (the run's ``lr.scale``; 2 in the released code).
        kernel: ``"bicubic"`` (official) or ``"bilinear"`` (the TS baseline's predict path).

    Returns:
        (B, 3, floor(H / scale), floor(W / scale)).
    """
    if kernel not in ("bicubic", "bilinear"):
        raise ValueError(f"kernel must be 'bicubic' or 'bilinear', got {kernel!r}")
    if scale == 1:
        return hr_normalised
    return F.interpolate(hr_normalised, scale_factor=1.0 / scale, mode=kernel, align_corners=False)


def prepare_lr(x: Tensor, cfg: LRConfig) -> Tensor:
    """The encoder input: ``make_lr(x)`` when ``cfg.on_the_fly``; otherwise ``x`` is already the LR image."""
    return make_lr(x, cfg.scale, cfg.kernel) if cfg.on_the_fly else x

"""Super-resolution metrics exactly as BasicSR computes them (``basicsr.metrics``).

Conventions (see ``shared/docs/datasets.md``, "Evaluation conventions"):

- Images are ``uint8`` arrays, **RGB**, ``(H, W, 3)`` (or ``(H, W)`` grey), range [0, 255].
- ``crop_border`` pixels are removed on each edge before scoring; the suite uses ``crop_border = scale``.
- ``test_y_channel=True`` scores the ITU-R BT.601 luma only: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
  (float, not rounded). BasicSR's ``calculate_psnr``/``calculate_ssim`` take **BGR** ``HWC`` images and
  apply that formula to channels in B, G, R order, so RGB inputs are flipped to BGR before the call
  (without the flip, R and B weights would be swapped). With ``test_y_channel=False`` the metric is the
  mean over the three channels and the order does not matter.
- PSNR uses peak 255 and returns ``inf`` for identical images. SSIM uses the Gaussian 11x11, sigma 1.5
  window of Wang et al. (2004) with 'valid' borders, averaged over channels.

``basicsr`` is imported lazily: it pulls in torch, cv2 and its model zoo (several seconds).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _check_pair(img: np.ndarray, ref: np.ndarray, crop_border: int) -> None:
    for name, a in (("img", img), ("ref", ref)):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 numpy array in [0, 255], got "
                            f"{type(a).__name__} {getattr(a, 'dtype', '')}")
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)):
            raise ValueError(f"{name} must be HxW or HxWx{{1,3}} (HWC), got shape {a.shape}")
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")
    if crop_border < 0 or 2 * crop_border >= min(img.shape[:2]):
        raise ValueError(f"crop_border={crop_border} invalid for an image of shape {img.shape}")


def _to_bgr(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[..., ::-1]) if img.ndim == 3 and img.shape[2] == 3 else img


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """PSNR in dB of ``img`` against ``ref`` (uint8 RGB HWC, peak 255, ``inf`` if identical).

    Args:
        img: restored image, uint8 RGB (H, W, 3).
        ref: ground-truth HR image, same shape.
        crop_border: pixels dropped on each edge (use the SR scale).
        test_y_channel: score the BT.601 Y channel (BasicSR convention) instead of RGB.
    """
    from basicsr.metrics.psnr_ssim import calculate_psnr  # noqa: PLC0415

    _check_pair(img, ref, crop_border)
    return float(calculate_psnr(_to_bgr(img), _to_bgr(ref), crop_border=crop_border, input_order="HWC",
                                test_y_channel=test_y_channel))


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """SSIM of ``img`` against ``ref`` (uint8 RGB HWC; Gaussian 11x11 sigma 1.5 window, channel mean).

    Arguments as in :func:`psnr`. Equals ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)`` on the cropped image to better than 1e-6
    (same window, same 5 px 'valid' border; measured ~1e-14 on RGB, ~1e-8 on Y, which BasicSR builds in float32).
    """
    from basicsr.metrics.psnr_ssim import calculate_ssim  # noqa: PLC0415

    _check_pair(img, ref, crop_border)
    return float(calculate_ssim(_to_bgr(img), _to_bgr(ref), crop_border=crop_border, input_order="HWC",
                                test_y_channel=test_y_channel))


def tensor_to_uint8(t: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    range_: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """De-normalise a model output to uint8 HWC (or BHWC) for :func:`psnr` / :func:`ssim`.

    Args:
        t: float tensor ``(C, H, W)`` or ``(B, C, H, W)``, channels in RGB order (kept as RGB).
        mean, std: per-channel normalisation to undo first (``x * std + mean``), if the output was normalised.
        range_: value range of the (de-normalised) tensor that maps to [0, 255], e.g. ``(0, 1)`` or ``(-1, 1)``.

    Returns:
        ``(H, W, C)`` or ``(B, H, W, C)`` uint8, clipped to the range and rounded to nearest (as BasicSR's
        ``tensor2img``).
    """
    import torch  # noqa: PLC0415

    if not isinstance(t, torch.Tensor) or t.ndim not in (3, 4):
        raise ValueError(f"expected a CHW or BCHW tensor, got {type(t).__name__} "
                         f"with shape {tuple(getattr(t, 'shape', ()))}")
    x = t.detach().to("cpu", torch.float64)
    c_dim = x.ndim - 3
    shape = [1] * x.ndim
    shape[c_dim] = x.shape[c_dim]
    if std is not None:
        x = x * torch.as_tensor(std, dtype=torch.float64).reshape(shape)
    if mean is not None:
        x = x + torch.as_tensor(mean, dtype=torch.float64).reshape(shape)
    lo, hi = float(range_[0]), float(range_[1])
    if hi <= lo:
        raise ValueError(f"range_ must be (low, high) with high > low, got {range_}")
    x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0
    x = x.round().to(torch.uint8).movedim(c_dim, -1)
    return np.ascontiguousarray(x.numpy())


def _load(item: Any) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from PIL import Image  # noqa: PLC0415

    with Image.open(item) as im:
        return np.asarray(im.convert("RGB"))


def sr_metrics(sr: Sequence[Any], hr: Sequence[Any], crop_border: int,
               test_y_channel: bool = True) -> dict[str, Any]:
    """Mean PSNR/SSIM over image pairs (paths read as RGB, or uint8 RGB HWC arrays).

    The means are over per-image values, as in BasicSR's validation (an identical pair gives PSNR
    ``inf`` and so a mean of ``inf``).

    Returns:
        ``{"psnr", "ssim", "n", "crop_border", "test_y_channel", "per_image": [{"index", "name", "psnr", "ssim"}]}``.
    """
    if len(sr) != len(hr):
        raise ValueError(f"{len(sr)} SR images but {len(hr)} HR images")
    if not sr:
        raise ValueError("no images to score")
    rows = []
    for i, (a, b) in enumerate(zip(sr, hr)):
        img, ref = _load(a), _load(b)
        name = Path(b).name if isinstance(b, (str, Path)) else None
        try:
            rows.append({"index": i, "name": name, "psnr": psnr(img, ref, crop_border, test_y_channel),
                         "ssim": ssim(img, ref, crop_border, test_y_channel)})
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"pair {i} ({name or 'array'}): {exc}") from exc
    return {"psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows])),
            "n": len(rows), "crop_border": crop_border, "test_y_channel": test_y_channel, "per_image": rows}

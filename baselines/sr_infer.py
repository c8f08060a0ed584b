"""Super-resolve a folder of LR tiles with a trained SR model; score against HR tiles when given.

Outputs: ``out_dir/<same name>.png`` for every LR image (uint8 RGB, rounded as BasicSR's
``tensor2img``) and ``out_dir/sr_metrics.json`` (per-tile + mean PSNR/SSIM from
:mod:`benchcore.metrics.sr`, BasicSR conventions: Y channel, ``crop_border = scale``). The metrics writer is
shared with the interpolation baselines (:mod:`baselines.interp`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from baselines._runtime import load_checkpoint, resolve_device
from baselines.sr_models import build_sr_model
from baselines.sr_train import IMAGE_EXTS, PairError, read_rgb, to_tensor
from benchcore.atomic import atomic_file, atomic_write_json


def save_png(path: Path, img: np.ndarray) -> None:
    """Write a uint8 RGB array as PNG, atomically."""
    with atomic_file(path, "wb") as fh:
        Image.fromarray(img).save(fh, format="PNG")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` (sorted); error naming the folder when absent or empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def process_folder(lr_dir: str | os.PathLike, out_dir: str | os.PathLike, upscale: Callable[[np.ndarray], np.ndarray],
                   scale: int, hr_dir: str | os.PathLike | None, crop_border: int | None, test_y_channel: bool,
                   method: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply ``upscale`` (uint8 RGB -> uint8 RGB) to every LR tile, save PNGs and ``sr_metrics.json``.

    The SR image must be ``scale`` x the LR size; the HR tile is cropped to the SR size when HR was not a
    multiple of ``scale`` (LR = HR // scale), otherwise any size difference is an error naming the file.
    """
    from benchcore.metrics.sr import psnr, ssim  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crop = int(scale if crop_border is None else crop_border)
    rows, t0 = [], time.time()
    for lr_path in tqdm(list_images(lr_dir), desc=method, unit="tile", disable=None):
        lr = read_rgb(lr_path)
        sr = upscale(lr)
        if sr.shape != (lr.shape[0] * scale, lr.shape[1] * scale, 3) or sr.dtype != np.uint8:
            raise RuntimeError(f"{method} returned {sr.shape} {sr.dtype} for {lr_path} {lr.shape}; "
                               f"expected uint8 {lr.shape[0] * scale}x{lr.shape[1] * scale}x3")
        name = lr_path.with_suffix(".png").name
        save_png(out / name, sr)
        row: dict[str, Any] = {"name": name}
        if hr_dir is not None:
            hr_path = Path(hr_dir) / lr_path.name
            if not hr_path.is_file():
                raise PairError(f"missing pair: {hr_path} does not exist (its LR tile is {lr_path})")
            hr = read_rgb(hr_path)
            if hr.shape[0] // scale != lr.shape[0] or hr.shape[1] // scale != lr.shape[1]:
                raise PairError(f"size mismatch: {lr_path} is {lr.shape[1]}x{lr.shape[0]} but {hr_path} is "
                                f"{hr.shape[1]}x{hr.shape[0]} (expected LR = HR // {scale})")
            hr = hr[: sr.shape[0], : sr.shape[1]]
            row.update(psnr=psnr(sr, hr, crop, test_y_channel), ssim=ssim(sr, hr, crop, test_y_channel))
        rows.append(row)
    doc: dict[str, Any] = {"method": method, "scale": scale, "crop_border": crop, "test_y_channel": test_y_channel,
                           "n": len(rows), "psnr": None, "ssim": None, "seconds": round(time.time() - t0, 3),
                           "lr_dir": str(lr_dir), "hr_dir": str(hr_dir) if hr_dir is not None else None,
                           **(extra or {}), "per_tile": rows}
    if hr_dir is not None:
        doc["psnr"] = float(np.mean([r["psnr"] for r in rows]))
        doc["ssim"] = float(np.mean([r["ssim"] for r in rows]))
    atomic_write_json(out / "sr_metrics.json", doc)
    return doc


def load_sr_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a :func:`baselines.sr_train.train_sr` checkpoint or ``model.pth``."""
    blob = load_checkpoint(path)
    cfg = blob.get("config")
    if not cfg:
        raise ValueError(f"{path}: no 'config' in the file; build the model with build_sr_model and pass it")
    model = build_sr_model(cfg["model"], cfg["scale"], cfg["preset"])
    model.load_state_dict(blob.get("model") or blob["params"])
    return model, cfg


@torch.no_grad()
def _run_tiled(model: nn.Module, x: torch.Tensor, scale: int, tile: int | None, pad: int) -> torch.Tensor:
    """Run ``model`` on ``x`` (1,3,h,w) whole, or in ``tile`` x ``tile`` LR windows with ``pad`` context."""
    if not tile or max(x.shape[-2:]) <= tile:
        return model(x)
    _, c, h, w = x.shape
    out = x.new_zeros((1, c, h * scale, w * scale))
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0, py1, px1 = max(y0 - pad, 0), max(x0 - pad, 0), min(y1 + pad, h), min(x1 + pad, w)
            o = model(x[..., py0:py1, px0:px1])
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                o[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


def infer_sr(model: nn.Module | str | os.PathLike, lr_dir: str | os.PathLike, out_dir: str | os.PathLike,
             hr_dir: str | os.PathLike | None = None, scale: int | None = None, crop_border: int | None = None,
             test_y_channel: bool = True, tile: int | None = None, tile_pad: int = 16,
             device: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Super-resolve ``lr_dir`` into ``out_dir`` and write ``sr_metrics.json``.

    Args:
        model: an SR module (inputs/outputs in [0, 1]) or a checkpoint path from :func:`train_sr`.
        scale: SR factor (taken from the checkpoint when ``model`` is a path; required otherwise).
        crop_border: pixels ignored on each edge for PSNR/SSIM (default: ``scale``).
        tile: optional LR window side for large images (``tile_pad`` LR pixels of context per side).
    """
    cfg: dict[str, Any] = {}
    if isinstance(model, (str, os.PathLike)):
        model, cfg = load_sr_checkpoint(model)
        if scale is not None and scale != cfg["scale"]:
            raise ValueError(f"scale {scale} differs from the checkpoint's {cfg['scale']}")
        scale = cfg["scale"]
    elif scale is None:
        scale = getattr(model, "sdconet_spec", {}).get("scale")
    if scale is None:
        raise ValueError("scale is required when the model is not a checkpoint built here")
    dev = resolve_device(device)
    model = model.to(dev).eval()

    def upscale(lr: np.ndarray) -> np.ndarray:
        y = _run_tiled(model, to_tensor(lr).unsqueeze(0).to(dev), int(scale), tile, tile_pad)
        return (y[0].clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()

    spec = getattr(model, "sdconet_spec", {})
    name = cfg.get("model") or spec.get("name") or type(model).__name__
    return process_folder(lr_dir, out_dir, upscale, int(scale), hr_dir, crop_border, test_y_channel,
                          method=str(name), extra={"model": cfg or spec, "tile": tile, "device": str(dev)})


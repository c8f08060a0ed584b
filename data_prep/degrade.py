"""Low-quality (LR) copies of HR tiles: blur -> downsample -> noise -> uint8 -> JPEG (docs/formats.md §4).

The default kernel ``"torch-bicubic"`` reproduces the official SDCoNet code, which builds its LR input
inside the model as ``F.interpolate(hr, scale_factor=0.5, mode="bicubic", align_corners=False)``
(x2, no antialias). The official code does that on the *normalised float* tensor; here the same
resampling runs on the 0..255 float image and is then rounded and clipped to uint8, because we store an
offline PNG copy (the difference is at most half a grey level plus the clipping of bicubic overshoot).
``"matlab-bicubic"`` is the antialiased MATLAB ``imresize`` used in the SR literature (BasicSR) and
``"bilinear"`` is SuperYOLO's x2 bilinear (no antialias).
"""
from __future__ import annotations

import io
import math
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_prep.errors import IMAGE_DECODE_ERRORS, CorruptImageError, DataError
from benchcore.atomic import atomic_dir, atomic_write_json
from benchcore.provenance import provenance

DEGRADATION_KERNELS: tuple[str, ...] = ("torch-bicubic", "matlab-bicubic", "bilinear")

KERNEL_DESCRIPTIONS: dict[str, str] = {
    "torch-bicubic": "torch.nn.functional.interpolate(mode='bicubic', align_corners=False, antialias=False) "
                     "on the 0..255 float image, size=(H//s, W//s); official SDCoNet LR (it resamples the "
                     "normalised tensor in-model, we round+clip to uint8 for an offline copy)",
    "matlab-bicubic": "basicsr.utils.matlab_functions.imresize(img/255, 1/s, antialiasing=True) "
                      "(MATLAB-style antialiased bicubic, SR literature / EESRGAN)",
    "bilinear": "torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False), "
                "size=(H//s, W//s) (SuperYOLO)",
}
PIPELINE_ORDER = ("mod-crop to a multiple of the scale -> gaussian blur (sigma in HR px) -> downsample -> "
                  "gaussian noise (sigma in 0..255) -> round+clip uint8 -> JPEG")


def _check_params(scale: int, kernel: str, blur: float, noise: float, jpeg: int | None) -> None:
    if kernel not in DEGRADATION_KERNELS:
        raise ValueError(f"unknown degradation kernel {kernel!r}; valid kernels: {', '.join(DEGRADATION_KERNELS)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if blur < 0 or noise < 0:
        raise ValueError(f"blur and noise sigmas must be >= 0, got blur={blur}, noise={noise}")
    if jpeg is not None and not 1 <= int(jpeg) <= 100:
        raise ValueError(f"jpeg quality must be in 1..100 or None, got {jpeg}")


def _resize(img: np.ndarray, scale: int, kernel: str) -> np.ndarray:
    """Downsample a float32 HxWx3 image in 0..255 by ``scale``; returns float32 (H//s)x(W//s)x3."""
    h, w = img.shape[:2]
    oh, ow = h // scale, w // scale
    if kernel == "matlab-bicubic":
        from basicsr.utils.matlab_functions import imresize  # noqa: PLC0415  (heavy import, only when used)

        out = np.asarray(imresize(img / 255.0, 1.0 / scale, antialiasing=True), dtype=np.float32) * 255.0
        # imresize takes ceil(H * (1/s)); a float 1/s slightly above the true value can add one row or
        # column at the end. The sample grid is the same, so cropping keeps the exact H//s x W//s result.
        return out[:oh, :ow]
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    mode = "bicubic" if kernel == "torch-bicubic" else "bilinear"
    out = F.interpolate(t, size=(oh, ow), mode=mode, align_corners=False, antialias=False)
    return out[0].numpy().transpose(1, 2, 0)


def degrade_array(img: np.ndarray, scale: int, kernel: str = "torch-bicubic", blur: float = 0.0,
                  noise: float = 0.0, jpeg: int | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Degrade one uint8 HxWx3 image to uint8 (H//scale)x(W//scale)x3.

    Order: Gaussian blur (``blur`` = sigma in HR pixels, kernel size ``2*ceil(3*sigma)+1``, reflect-101
    border) -> downsample with ``kernel`` -> additive Gaussian noise (``noise`` = sigma in 0..255 grey
    levels, drawn from ``rng``; ``default_rng(0)`` when None) -> round and clip to uint8 -> JPEG
    round-trip at quality ``jpeg`` (PIL, 4:2:0). Sides the scale does not divide are mod-cropped first (the
    last ``side % scale`` rows / columns are dropped), so the output covers the top-left ``scale * (side // scale)``.
    """
    _check_params(scale, kernel, blur, noise, jpeg)
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got dtype {img.dtype} and shape {img.shape}")
    h, w = img.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f"image size {w}x{h} (WxH) is smaller than the scale {scale}")
    # Mod-crop (BasicSR's ``mod_crop``, the SR literature's convention): an HR side the scale does not divide
    # (256 or 512 at x3) loses its last ``side % scale`` pixels first, so LR = HR // scale covers exactly the
    # HR tile's top-left ``scale * (side // scale)`` pixels. A no-op when the scale divides the tile.
    x = img[: h - h % scale, : w - w % scale].astype(np.float32)
    if blur > 0:
        import cv2  # noqa: PLC0415

        k = 2 * math.ceil(3 * blur) + 1
        x = cv2.GaussianBlur(x, (k, k), sigmaX=blur, sigmaY=blur, borderType=cv2.BORDER_REFLECT_101)
    if scale > 1:
        x = _resize(x, scale, kernel)
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if jpeg is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(jpeg))
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
    return out


def degradation_name(scale: int, kernel: str = "torch-bicubic", blur: float = 0.0, noise: float = 0.0,
                     jpeg: int | None = None) -> str:
    """A short, path-safe name of a degradation, e.g. ``x2_torch-bicubic`` or ``x4_matlab-bicubic_b1.2_n5_j75``."""
    _check_params(scale, kernel, blur, noise, jpeg)
    name = f"x{int(scale)}_{kernel}"
    if blur > 0:
        name += f"_b{blur:g}"
    if noise > 0:
        name += f"_n{noise:g}"
    if jpeg is not None:
        name += f"_j{int(jpeg)}"
    return name


def image_rng(seed: int, file_name: str) -> np.random.Generator:
    """The per-image generator: ``default_rng([seed, crc32(file name)])`` (order/worker independent)."""
    return np.random.default_rng([int(seed), zlib.crc32(file_name.encode("utf-8"))])


def _process(src: Path, dst_dir: Path, params: dict[str, Any], seed: int) -> tuple[str, Any]:
    """Degrade one file; returns ("ok", (hr_size, lr_size)) or ("skip", reason)."""
    try:
        with Image.open(src) as im:
            hr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except IMAGE_DECODE_ERRORS as exc:  # PIL raises these for truncated/garbage files
        return "skip", f"{type(exc).__name__}: {exc}"
    try:
        lr = degrade_array(hr, rng=image_rng(seed, src.name), **params)
    except ValueError as exc:
        raise DataError(f"{src}: {exc}") from None
    Image.fromarray(lr).save(dst_dir / src.name, format="PNG", compress_level=3)
    return "ok", (f"{hr.shape[1]}x{hr.shape[0]}", f"{lr.shape[1]}x{lr.shape[0]}")


def degrade_folder(images_dir: str | Path, out_dir: str | Path, scale: int, kernel: str = "torch-bicubic",
                   blur: float = 0.0, noise: float = 0.0, jpeg: int | None = None, seed: int = 0,
                   workers: int = 1, strict: bool = False) -> dict[str, Any]:
    """Write ``out_dir/<name>.png`` (degraded) for every ``images_dir/*.png`` plus ``out_dir/manifest.json``.

    Each image uses :func:`image_rng` so the output does not depend on file order or ``workers``
    (threads: torch, cv2 and PIL release the GIL). A file that cannot be decoded is skipped with a
    warning and listed in the manifest, or raises :class:`CorruptImageError` with ``strict``. The
    output directory is built in a temporary sibling and renamed into place (atomic). Returns the manifest.
    """
    from tqdm import tqdm  # noqa: PLC0415

    _check_params(scale, kernel, blur, noise, jpeg)
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"HR image folder not found: {images_dir}")
    files = sorted(images_dir.glob("*.png"))
    if not files:
        raise DataError(f"{images_dir}: no *.png images to degrade")
    params = {"scale": int(scale), "kernel": kernel, "blur": float(blur), "noise": float(noise),
              "jpeg": None if jpeg is None else int(jpeg)}
    skipped: list[dict[str, str]] = []
    sizes: dict[str, int] = {}
    with atomic_dir(out_dir) as tmp:
        def run(p: Path) -> tuple[str, Any]:
            return _process(p, tmp, params, seed)

        with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
            results = tqdm(pool.map(run, files), total=len(files), desc=f"degrade {degradation_name(**params)}",
                           unit="img", leave=False)
            for src, (status, info) in zip(files, results):
                if status == "skip":
                    if strict:
                        raise CorruptImageError(f"{src}: cannot decode image ({info})")
                    warnings.warn(f"skipping corrupt image {src}: {info}", stacklevel=2)
                    skipped.append({"file": src.name, "reason": info})
                else:
                    key = f"{info[0]}->{info[1]}"
                    sizes[key] = sizes.get(key, 0) + 1
        manifest = {
            "kind": "degradation",
            "name": degradation_name(**params),
            "source_dir": str(images_dir.resolve()),
            "out_dir": str(out_dir.resolve()),
            **params,
            "seed": int(seed),
            "kernel_description": KERNEL_DESCRIPTIONS[kernel],
            "order": PIPELINE_ORDER,
            "rng": "numpy default_rng([seed, zlib.crc32(file name utf-8)]) per image",
            "counts": {"found": len(files), "written": len(files) - len(skipped), "skipped": len(skipped)},
            "sizes": sizes,
            "skipped": skipped,
            "provenance": provenance(config={**params, "seed": int(seed)}),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest

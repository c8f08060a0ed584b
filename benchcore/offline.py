"""Offline-safe defaults for third-party libraries.

Nothing in the suite may reach the network unless the user asks for it. ultralytics checks for
fonts, pip packages and hub settings on import/dataset checks, and huggingface_hub retries for a
long time when offline. These defaults are applied with ``os.environ.setdefault`` so a user who
*wants* downloads (e.g. ``HF_HUB_OFFLINE=0`` for pretrained timm weights) can override them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

_APPLIED = False


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sdconet-bench"


def _install_fonts(config_dir: Path) -> None:
    """Give ultralytics a local Arial.ttf so its plotting/dataset checks never download one."""
    target_dir = config_dir / "Ultralytics"
    wanted = [target_dir / "Arial.ttf", target_dir / "Arial.Unicode.ttf"]
    if all(p.exists() for p in wanted):
        return
    try:
        import matplotlib  # noqa: PLC0415  (lazy: only when fonts are missing)

        src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except Exception:  # pragma: no cover - matplotlib is a hard dependency
        return
    if not src.exists():  # pragma: no cover
        return
    target_dir.mkdir(parents=True, exist_ok=True)
    for dst in wanted:
        if not dst.exists():
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)


def apply_offline_defaults() -> None:
    """Set offline defaults once per process (idempotent, never overrides the user's values)."""
    global _APPLIED
    if _APPLIED:
        return
    _APPLIED = True
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TORCH_HOME", str(_cache_root() / "torch"))
    os.environ.setdefault("MPLCONFIGDIR", str(_cache_root() / "matplotlib"))
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(_cache_root() / "ultralytics")))
    try:
        _install_fonts(config_dir)
    except OSError:  # read-only home: ultralytics then falls back to its own temp dir
        pass

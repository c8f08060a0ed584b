"""Atomic training checkpoints with everything an exact resume needs.

A checkpoint is a ``torch.save`` dict: ``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts,
``epoch`` (the last *completed* 0-based epoch), ``global_step`` (optimiser steps), ``rng_states`` (one entry
per rank: python, numpy, torch CPU and, when initialised, every CUDA device), ``config``, ``git_sha``,
``extra`` and ``format`` (:data:`FORMAT_VERSION`). Files are written through :func:`benchcore.atomic`
(a temporary sibling renamed into place), so a crash mid-save never leaves a truncated file.

The engine keeps ``out_dir/last.pt`` (a hard link to, or copy of, the newest ``epoch_XXX.pt``) and the newest
``keep_last`` epoch files. Checkpoints hold numpy / python objects and are loaded with
``weights_only=False``: only load files you wrote yourself.
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from benchcore.atomic import atomic_file
from benchcore.provenance import git_sha

FORMAT_VERSION = 1
LAST = "last.pt"
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")
log = logging.getLogger(__name__)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (when CUDA is initialised) per-device CUDA RNG states."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())  # RNG states must be CPU ByteTensors whatever map_location did
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            log.warning("checkpoint has %d CUDA RNG states but %d devices are visible; CUDA RNG not restored",
                        len(cuda), torch.cuda.device_count())


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    scheduler: Any, scaler: Any, epoch: int, config: Mapping[str, Any] | None,
                    extra: Mapping[str, Any] | None = None, *, global_step: int = 0,
                    rng_states: list[dict[str, Any]] | None = None, sha: str | None = None) -> Path:
    """Atomically write one checkpoint file at ``path`` and return it.

    Args:
        model: the model (a DDP wrapper is unwrapped).
        optimizer, scheduler, scaler: objects with ``state_dict()`` (or None).
        epoch: last completed 0-based epoch.
        config: the training config as a dict (stored for provenance and resume checks).
        extra: free-form JSON-like data (e.g. validation metrics).
        global_step: optimiser steps taken so far.
        rng_states: one :func:`capture_rng_state` per rank (default: this process's state only).
        sha: git SHA to record (default: :func:`benchcore.provenance.git_sha`).
    """
    state = {
        "format": FORMAT_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch), "global_step": int(global_step),
        "rng_states": rng_states if rng_states is not None else [capture_rng_state()],
        "config": dict(config) if config is not None else None,
        "git_sha": sha if sha is not None else git_sha(),
        "extra": dict(extra) if extra is not None else {},
    }
    path = Path(path)
    with atomic_file(path, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: Any = None, *, restore_rng: bool = True, rank: int = 0,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load ``path`` into the given objects (strict model keys) and return the checkpoint dict.

    With ``restore_rng`` the RNG states of ``rank`` (or rank 0's, with a warning, if the checkpoint has fewer
    ranks) are restored, so the next random draw equals that of the uninterrupted run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ValueError(f"{path}: not an sdconet training checkpoint")
    unwrap(model).load_state_dict(state["model"])
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if state.get(name) is None:
            raise ValueError(f"{path}: checkpoint has no {name} state")
        if name == "scaler" and not state[name]:
            continue  # a disabled GradScaler has an empty state
        obj.load_state_dict(state[name])
    if restore_rng:
        states = state.get("rng_states") or []
        if rank < len(states):
            restore_rng_state(states[rank])
        elif states:
            log.warning("%s: no RNG state for rank %d; using rank 0's", path, rank)
            restore_rng_state(states[0])
    return state


def epoch_path(out_dir: str | Path, epoch: int) -> Path:
    """``out_dir/epoch_XXX.pt`` (0-based epoch, zero padded to 3 digits)."""
    return Path(out_dir) / f"epoch_{epoch:03d}.pt"


def epoch_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``epoch_XXX.pt`` in ``out_dir``, oldest first."""
    d = Path(out_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _EPOCH_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """``out_dir/last.pt`` if present, else the newest ``epoch_XXX.pt``, else None."""
    last = Path(out_dir) / LAST
    if last.is_file():
        return last
    found = epoch_checkpoints(out_dir)
    return found[-1][1] if found else None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` the same content as ``src`` (hard link when possible)."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_epoch_checkpoint(out_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                          scheduler: Any, scaler: Any, epoch: int, config: Mapping[str, Any] | None,
                          extra: Mapping[str, Any] | None = None, *, keep_last: int = 3, **kwargs: Any) -> Path:
    """Write ``epoch_XXX.pt``, point ``last.pt`` at it and delete epoch files beyond the newest ``keep_last``.

    ``keep_last=0`` keeps every epoch file. Extra keyword arguments go to :func:`save_checkpoint`.
    Returns the path of ``last.pt``.
    """
    out_dir = Path(out_dir)
    path = save_checkpoint(epoch_path(out_dir, epoch), model, optimizer, scheduler, scaler, epoch, config,
                           extra, **kwargs)
    last = out_dir / LAST
    _link_or_copy(path, last)
    if keep_last > 0:
        for _, old in epoch_checkpoints(out_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return last

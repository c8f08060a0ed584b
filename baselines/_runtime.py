"""Training-loop plumbing shared by the SR and Faster R-CNN loops: seeding, RNG capture/restore,
atomic checkpoints, the ``log.jsonl`` writer and device resolution.

Exact resume rests on two rules: (1) every random draw of the data pipeline is a pure function of
``(seed, step or epoch, sample index)`` (see :func:`sample_rng`), so a resumed run sees the same
samples without replaying anything; (2) the global RNGs that models use (dropout / drop-path) are
saved in each checkpoint and restored on resume.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from benchcore.atomic import atomic_file, atomic_write_text


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN/inf; the message names the step and the run directory."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (e.g. step and index in the batch)."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def rng_state() -> dict[str, Any]:
    """Every global RNG state a training step may touch."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state` (the CUDA part is restored only when CUDA is present)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """``torch.save`` into a temporary sibling and rename into place (never a half-written file)."""
    path = Path(path)
    with atomic_file(path, "wb") as fh:
        torch.save(dict(payload), fh)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (CPU tensors; RNG states need pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_resume_checkpoint(path: str | os.PathLike, config: Mapping[str, Any],
                           keys: tuple[str, ...]) -> dict[str, Any]:
    """Load ``path`` for a resume, refusing it when any of ``keys`` differs between its config and ``config``."""
    ckpt = load_checkpoint(path)
    bad = {k: (ckpt["config"].get(k), config[k]) for k in keys if ckpt["config"].get(k) != config[k]}
    if bad:
        raise ValueError(f"cannot resume from {path}: config differs (checkpoint, now): {bad}")
    return ckpt


class JsonlLog:
    """Append-only ``log.jsonl``; on resume, lines past the resumed step are dropped first.

    A run killed between a log line and the next checkpoint would otherwise log those steps twice.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None, key: str = "iter"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get(key, 0) <= resume_step:
                        keep.append(line)
                except json.JSONDecodeError:  # a torn last line from a kill: drop it
                    continue
            atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line and flush it to disk."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def check_finite(loss: torch.Tensor, step: int, where: str | os.PathLike) -> float:
    """Return ``loss`` as a float, or raise :class:`NonFiniteLossError` naming the step and run."""
    value = float(loss.detach())
    if not np.isfinite(value):
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at step {step} in {where}; lower the learning rate or "
            f"check the inputs; the last good checkpoint is left untouched")
    return value

"""Training-loop plumbing shared by the SR and Faster R-CNN loops: seeding, RNG capture/restore,
atomic checkpoints, the ``log.jsonl`` writer, the deferred loss read and device resolution.

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


class PendingLosses:
    """Loss terms of the steps since the last read, kept on the device and read in one host copy.

    Converting a CUDA loss to a float is a host synchronisation: read every step, the host waits for each
    forward pass and cannot queue the next step's work, so the GPU idles between steps. The loops
    :meth:`add` each step's detached terms and :meth:`flush` them when they need the numbers (a log line, a
    checkpoint, the end of the run), which checks them for NaN/inf in step order. A non-finite loss is thus
    reported at the next flush (at most ``log_every`` steps late, always before the next checkpoint is
    written) with the step it occurred at; the last good checkpoint on disk is never overwritten by it.
    """

    def __init__(self, where: str | os.PathLike) -> None:
        self.where = where
        self._steps: list[int] = []
        self._terms: list[dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, step: int, terms: Mapping[str, torch.Tensor]) -> None:
        """Keep step ``step``'s scalar loss terms (detached; nothing is read)."""
        self._steps.append(int(step))
        self._terms.append({k: v.detach().reshape(()) for k, v in terms.items()})

    def flush(self) -> list[tuple[int, dict[str, float]]]:
        """``(step, {term: value})`` of every pending step, in order, after one host copy; then empty.

        Raises:
            NonFiniteLossError: naming the first step with a NaN/inf term, the term and the run.
        """
        if not self._steps:
            return []
        keys = [list(t) for t in self._terms]
        flat = torch.stack([v for t in self._terms for v in t.values()]).float().tolist()
        rows, i = [], 0
        for step, names in zip(self._steps, keys):
            vals = dict(zip(names, flat[i:i + len(names)]))
            i += len(names)
            bad = {k: v for k, v in vals.items() if not np.isfinite(v)}
            if bad:
                self._steps, self._terms = [], []
                name, value = next(iter(bad.items()))
                raise NonFiniteLossError(
                    f"non-finite training loss ({name}={value}) at step {step} in {self.where}; lower the learning "
                    f"rate or check the inputs; the last good checkpoint is left untouched")
            rows.append((step, vals))
        self._steps, self._terms = [], []
        return rows


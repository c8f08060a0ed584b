"""Typed training configuration (spec section 5 and section 10 rows 2, 7, 8, 13).

Defaults follow the official ``dino_sr_gr.py`` schedule: AdamW lr 1e-4, weight decay 1e-4, backbone lr x0.1,
global grad-norm clip 0.1, MultiStep x0.1 at epoch 27, the SR decoder unfrozen at (0-based) epoch 16. The
full model (row 13) runs 52 epochs; ``epochs`` and ``batch_size`` (per process; the official run used 2 images
on one GPU, row 7) have no default so every run states them.

Example:
    >>> cfg = TrainConfig.from_dict({"epochs": 52, "batch_size": 2})
    >>> TrainConfig.from_dict({"epochs": 1, "batch_size": 2, "lr_rate": 1})   # ConfigError naming 'lr_rate'
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping

ROUTING_MODES = ("schedule", "none", "projection")


class TrainConfigError(ValueError):
    """An unknown key or an invalid value in a training configuration (the message names the key)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of :func:`sdconet.engine.train`.

    Attributes:
        epochs: total number of epochs (52 for the full model, 36 for the no-routing variant).
        batch_size: images per process (per GPU).
        lr: AdamW base learning rate ("sr" and "other" groups).
        weight_decay: AdamW weight decay, applied to every parameter (as the official config).
        backbone_lr_mult: multiplier of the "backbone" group's learning rate.
        clip_grad: max global L2 norm over all parameters together; None or 0 disables clipping.
        milestones: 0-based epochs at which the learning rate is multiplied by ``gamma``.
        gamma: MultiStep decay factor.
        warmup_iters: optimiser steps of linear warm-up (factor 0.001 -> 1, mmengine ``LinearLR`` style).
        accumulate: micro-batches per optimiser step (gradient accumulation).
        amp: float16 autocast + GradScaler; only takes effect on CUDA (ignored on CPU).
        routing: "schedule" (SR frozen and L_SR off before ``unfreeze_epoch``, then joint; the official code),
            "none" (joint from epoch 0), "projection" (schedule + PCGrad-style projection in phase 2).
        unfreeze_epoch: first 0-based epoch of phase 2 (SR on).
        seed: seed of every RNG (rank r uses ``seed + r``), the shuffling and the flips.
        workers: DataLoader worker processes.
        log_every: iterations between progress-bar / logger updates.
        eval_every: evaluate the validation set every N epochs (and always after the last one); 0 disables.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        keep_last: number of ``epoch_XXX.pt`` files kept beside ``last.pt``; 0 keeps all of them.
        eval_sr: also compute PSNR/SSIM of the SR output during validation (the SR decoder is a training-only
            branch in the official code, so this is off by default).
        progress: show a tqdm progress bar (rank 0 only).
    """

    epochs: int
    batch_size: int
    lr: float = 1e-4
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 0.1
    clip_grad: float | None = 0.1
    milestones: tuple[int, ...] = (27,)
    gamma: float = 0.1
    warmup_iters: int = 0
    accumulate: int = 1
    amp: bool = True
    routing: str = "schedule"
    unfreeze_epoch: int = 16
    seed: int = 0
    workers: int = 0
    log_every: int = 10
    eval_every: int = 1
    device: str = "auto"
    keep_last: int = 3
    eval_sr: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0, "backbone_lr_mult": self.backbone_lr_mult >= 0,
            "clip_grad": self.clip_grad is None or self.clip_grad >= 0,
            "milestones": list(self.milestones) == sorted(self.milestones) and all(m >= 0 for m in self.milestones),
            "gamma": self.gamma > 0, "warmup_iters": self.warmup_iters >= 0, "accumulate": self.accumulate >= 1,
            "routing": self.routing in ROUTING_MODES, "unfreeze_epoch": self.unfreeze_epoch >= 0,
            "seed": self.seed >= 0, "workers": self.workers >= 0, "log_every": self.log_every >= 1,
            "eval_every": self.eval_every >= 0, "keep_last": self.keep_last >= 0,
            "device": self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            hint = f" (routing must be one of {ROUTING_MODES})" if "routing" in bad else ""
            raise TrainConfigError(f"invalid training config value(s): {shown}{hint}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build a config from a plain mapping; unknown keys raise :class:`TrainConfigError` naming them."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), names, n=1)
                hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise TrainConfigError(f"unknown training config key(s): {', '.join(hints)}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise TrainConfigError(f"training config lacks required key(s): {missing}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``milestones`` as a list) that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

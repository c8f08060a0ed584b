"""Gradient routing (spec 5.3 and 10 row 2): the official two-phase schedule and an optional projection.

Phases (0-based epochs):

- phase 1, ``epoch < unfreeze_epoch``: the SR decoder is frozen (``requires_grad=False``), the SR branch is
  not run and ``loss_sr`` is absent; only the detection losses train the shared encoder.
- phase 2: joint training, ``L = L_det + loss_sr`` (the model returns the weighted terms).

Modes: ``"schedule"`` (the released code), ``"none"`` (joint from epoch 0, ``sa_dino_sr_swin.py``) and
``"projection"`` (the schedule plus, in phase 2, a PCGrad-style projection of the SR gradient on the shared
encoder parameters: if <g_sr, g_det> < 0 then g_sr <- g_sr - (<g_sr, g_det> / ||g_det||^2) g_det). The
projection is an experiment suggested by the abstract's wording; it does not exist in the released code.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sdconet.train_config import ROUTING_MODES

SR_LOSS_KEY = "loss_sr"


class RoutingSchedule:
    """Which phase an epoch is in, and switching the model's SR branch accordingly."""

    def __init__(self, mode: str = "schedule", unfreeze_epoch: int = 16) -> None:
        if mode not in ROUTING_MODES:
            raise ValueError(f"routing mode must be one of {ROUTING_MODES}, got {mode!r}")
        if unfreeze_epoch < 0:
            raise ValueError(f"unfreeze_epoch must be >= 0, got {unfreeze_epoch}")
        self.mode, self.unfreeze_epoch = mode, int(unfreeze_epoch)

    def phase(self, epoch: int) -> int:
        """1 (detection only, SR frozen) or 2 (joint). Mode "none" is always phase 2."""
        if self.mode == "none":
            return 2
        return 1 if epoch < self.unfreeze_epoch else 2

    def projects(self, epoch: int) -> bool:
        """Whether :func:`routed_backward` (projection) is used in ``epoch``."""
        return self.mode == "projection" and self.phase(epoch) == 2

    def apply(self, model: nn.Module, epoch: int) -> int:
        """Freeze (phase 1) or unfreeze (phase 2) the SR branch of ``model`` (or its DDP ``module``).

        Calls ``model.set_sr_trainable(flag)`` and checks that ``model.sr_enabled`` follows (setting it when the
        model's method did not). Returns the phase.
        """
        core = getattr(model, "module", model)
        phase = self.phase(epoch)
        flag = phase == 2
        core.set_sr_trainable(flag)
        if getattr(core, "sr_enabled", flag) != flag:
            core.sr_enabled = flag
        return phase

    def __repr__(self) -> str:
        return f"RoutingSchedule(mode={self.mode!r}, unfreeze_epoch={self.unfreeze_epoch})"


def is_loss_term(name: str) -> bool:
    """Whether a loss-dict entry is optimised: its name contains "loss" (mmdet ``parse_losses`` rule); other
    entries (e.g. matching statistics) are only logged."""
    return "loss" in name


def split_losses(loss_dict: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None]:
    """``(sum of every loss term except loss_sr, loss_sr or None)``."""
    det_terms = [v for k, v in loss_dict.items() if k != SR_LOSS_KEY and is_loss_term(k)]
    if not det_terms:
        raise ValueError(f"loss dict has no detection term (keys: {sorted(loss_dict)})")
    return torch.stack([t.float() for t in det_terms]).sum(), loss_dict.get(SR_LOSS_KEY)


def _dot(a: Sequence[Tensor | None], b: Sequence[Tensor | None]) -> Tensor:
    terms = [(x.double() * y.double()).sum() for x, y in zip(a, b) if x is not None and y is not None]
    return torch.stack(terms).sum() if terms else torch.zeros((), dtype=torch.float64)


def project_conflicting(g_sr: Sequence[Tensor | None], g_det: Sequence[Tensor | None]) -> list[Tensor | None]:
    """PCGrad-style projection of the SR gradient off the detection gradient (flattened over all entries).

    ``None`` entries count as zero gradients. When ``<g_sr, g_det> < 0`` (and ``g_det != 0``) returns
    ``g_sr - (<g_sr, g_det> / ||g_det||^2) g_det``, whose inner product with ``g_det`` is 0; otherwise returns
    ``g_sr`` unchanged. Sums are in float64. The result is invariant to a common scale of both inputs, so it
    can be applied to GradScaler-scaled gradients.
    """
    if len(g_sr) != len(g_det):
        raise ValueError(f"gradient lists differ in length: {len(g_sr)} vs {len(g_det)}")
    dot, norm2 = _dot(g_sr, g_det), _dot(g_det, g_det)
    if not bool(dot < 0) or not bool(norm2 > 0):
        return list(g_sr)
    coef = dot / norm2
    out: list[Tensor | None] = []
    for s, d in zip(g_sr, g_det):
        if d is None:
            out.append(s)
        else:
            step = (coef * d.double()).to(d.dtype)
            out.append(s - step if s is not None else -step)
    return out


def graph_leaves(roots: Iterable[Tensor]) -> list[Tensor]:
    """Leaf tensors requiring grad (parameters) reachable from the autograd graphs of ``roots``."""
    seen, leaves, stack = set(), {}, [r.grad_fn for r in roots if r is not None and r.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)
        if var is not None:
            leaves[id(var)] = var
        stack.extend(n for n, _ in node.next_functions)
    return list(leaves.values())


def _all_reduce_mean(grads: list[Tensor | None], params: Sequence[Tensor]) -> list[Tensor | None]:
    """Average ``grads`` over ranks; entries no rank produced stay None (as DDP leaves unused grads)."""
    world = dist.get_world_size()
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(grads, params)])
    used = torch.tensor([g is not None for g in grads], dtype=torch.float32, device=flat.device)
    dist.all_reduce(flat)
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    out, i = [], 0
    for k, p in enumerate(params):
        n = p.numel()
        out.append((flat[i:i + n] / world).view_as(p).to(p.dtype) if used[k] > 0 else None)
        i += n
    return out


def routed_backward(loss_dict: Mapping[str, Tensor], shared_params: Iterable[Tensor], scaler: Any = None,
                    params: Iterable[Tensor] | None = None, sync: bool = False) -> dict[str, float | bool]:
    """Backward pass with the SR gradient projected off the detection gradient on the shared parameters.

    ``det = sum(loss terms except loss_sr)`` (see :func:`is_loss_term`); ``sr = loss_sr``. Two ``torch.autograd.grad`` calls give each loss's
    gradient for every trainable parameter (``params``; default: the leaves of the loss graph). Then
    ``.grad += g_det + project(g_sr)`` on the shared parameters and ``.grad += g_det + g_sr`` elsewhere
    (accumulating, so gradient accumulation works; divide the losses by the number of micro-batches first).

    Cost: the parts of the graph used by both losses (the shared encoder and the neck) are back-propagated
    twice (one extra backward over the shared encoder compared with ``(det + sr).backward()``), and the two
    gradient lists are held at once (about two extra copies of the gradients).

    AMP: with an enabled ``GradScaler`` both losses are multiplied by the same scale before differentiation,
    so ``.grad`` holds *scaled* gradients exactly as after ``scaler.scale(loss).backward()``; the projection is
    invariant to that common factor, and ``scaler.unscale_``/``step`` then work as usual (an inf/NaN in the
    scaled gradients makes the dot product NaN, no projection happens, and the scaler skips the step).

    DDP: run the forward under ``ddp.no_sync()`` and pass ``sync=True``; both gradient lists are then averaged
    over ranks *before* the projection (the projection of the global gradients, as one large batch would give).
    ``params`` is then required so every rank reduces the same list.

    Returns:
        ``{"dot": <g_sr, g_det> before projection, "cos": cosine, "projected": bool}`` (shared params only).
    """
    det, sr = split_losses(loss_dict)
    use_scaler = scaler is not None and scaler.is_enabled()
    if use_scaler:
        det = scaler.scale(det)
        sr = scaler.scale(sr) if sr is not None else None
    if params is None:
        if sync:
            raise ValueError("routed_backward(sync=True) needs the explicit params list")
        params = graph_leaves([det] + ([sr] if sr is not None else []))
    leaves = [p for p in params if p.requires_grad]
    shared_ids = {id(p) for p in shared_params}
    g_det = list(torch.autograd.grad(det, leaves, retain_graph=sr is not None, allow_unused=True))
    g_sr = (list(torch.autograd.grad(sr, leaves, allow_unused=True)) if sr is not None and sr.requires_grad
            else [None] * len(leaves))
    if sync and dist.is_available() and dist.is_initialized():
        g_det, g_sr = _all_reduce_mean(g_det, leaves), _all_reduce_mean(g_sr, leaves)
    idx = [i for i, p in enumerate(leaves) if id(p) in shared_ids]
    sh_sr, sh_det = [g_sr[i] for i in idx], [g_det[i] for i in idx]
    dot, n_sr, n_det = _dot(sh_sr, sh_det), _dot(sh_sr, sh_sr), _dot(sh_det, sh_det)
    projected = project_conflicting(sh_sr, sh_det)
    for i, g in zip(idx, projected):
        g_sr[i] = g
    for p, gd, gs in zip(leaves, g_det, g_sr):
        parts = [g for g in (gd, gs) if g is not None]
        if not parts:
            continue
        total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        p.grad = total.detach().clone() if p.grad is None else p.grad + total.detach()
    denom = float((n_sr * n_det).sqrt())
    return {"dot": float(dot), "cos": float(dot) / denom if denom > 0 else 0.0,
            "projected": bool(dot < 0) and bool(n_det > 0)}

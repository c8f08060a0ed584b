"""Saliency supervision (spec 3.4 "SalienceCriterion"): soft targets from HR boxes and the focal BCE loss."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.config import SaliencyConfig

DEFAULT_LEVEL_RANGES: tuple[tuple[float, float], ...] = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0),
                                                         (256.0, float("inf")))


def saliency_targets(boxes: Sequence[Tensor], feature_sizes: Sequence[tuple[int, int]], hr_size: tuple[int, int],
                     level_ranges: Sequence[tuple[float, float]] = DEFAULT_LEVEL_RANGES,
                     device: torch.device | str | None = None) -> list[Tensor]:
    """Soft saliency targets per level (vectorised over images, tokens and boxes).

    Level stride = HR size / feature size per axis; token (i, j) sits at ((j+0.5)*s_x, (i+0.5)*s_y) in HR
    pixels. With l, t, r, b its distances to a box's sides, the token is inside the box if
    min(l, t, r, b) > 0 and matches level k if lo_k < max(l, t, r, b) <= hi_k. Confidence
    c = 1 - 0.5 * sqrt(((l-r)/(l+r))^2 + ((t-b)/(t+b))^2) (1 at the centre, ~0.29 at a corner). Target = max
    of c over the boxes containing the token, zeroed when none of those boxes matches the level.

    Args:
        boxes: B tensors (M_i, 4), xyxy in HR pixels (M_i may be 0).
        feature_sizes: L sizes (H_l, W_l), finest first.
        hr_size: (H, W) of the HR image the boxes refer to.
        level_ranges: L (low, high] ranges on max(l, t, r, b), HR pixels.
        device: Output device (default: the boxes' device).

    Returns:
        L tensors (B, H_l, W_l) float32 in [0, 1].
    """
    if len(level_ranges) != len(feature_sizes):
        raise ValueError(f"{len(feature_sizes)} feature levels but {len(level_ranges)} level ranges")
    if device is None:
        device = boxes[0].device if len(boxes) else torch.device("cpu")
    b = len(boxes)
    m = max([int(x.shape[0]) for x in boxes] + [0])
    gt = torch.zeros(b, m, 4, dtype=torch.float32, device=device)
    valid = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, x in enumerate(boxes):
        gt[i, : x.shape[0]] = x.to(device=device, dtype=torch.float32).reshape(-1, 4)
        valid[i, : x.shape[0]] = True
    img_h, img_w = float(hr_size[0]), float(hr_size[1])
    out: list[Tensor] = []
    for (h, w), (lo, hi) in zip(feature_sizes, level_ranges):
        if m == 0:
            out.append(torch.zeros(b, h, w, dtype=torch.float32, device=device))
            continue
        sy, sx = img_h / h, img_w / w
        cy, cx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, device=device) * sy,
                                torch.linspace(0.5, w - 0.5, w, device=device) * sx, indexing="ij")
        cx, cy = cx.reshape(1, -1, 1), cy.reshape(1, -1, 1)  # (1, HW, 1)
        left, top = cx - gt[:, None, :, 0], cy - gt[:, None, :, 1]  # (B, HW, M)
        right, bottom = gt[:, None, :, 2] - cx, gt[:, None, :, 3] - cy
        dist = torch.stack([left, top, right, bottom], -1)
        inside = (dist.min(-1)[0] > 0) & valid[:, None, :]
        mx = dist.max(-1)[0]
        pos = (inside & (mx > lo) & (mx <= hi)).any(-1)  # (B, HW)
        dx = (left - right) / (left + right)
        dy = (top - bottom) / (top + bottom)
        conf = torch.where(inside, 1 - torch.sqrt(dx ** 2 + dy ** 2) / 2, torch.zeros_like(dx))
        target = conf.max(-1)[0].masked_fill(~pos, 0.0)
        out.append(target.view(b, h, w))
    return out


def _flatten(x: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(x, Tensor):
        return x.flatten(1)
    return torch.cat([t.flatten(1) for t in x], 1)


def saliency_focal_loss(logits: Tensor | Sequence[Tensor], targets: Tensor | Sequence[Tensor],
                        alpha: float = 0.25, gamma: float = 2.0, weight: float = 2.0) -> Tensor:
    """Focal BCE with soft targets, summed over tokens, levels and images, / max(1, #targets > 0), x weight.

    Per token: BCE-with-logits(x, t) * ((1-alpha) p^gamma (1-t) + alpha t (1-p)^gamma), p = sigmoid(x);
    the focal weight keeps its gradient (as in the official / Salience-DETR code).

    Args:
        logits: (B, N) or L maps (B, 1, H_l, W_l) / (B, H_l, W_l).
        targets: Same layout as ``logits`` (e.g. :func:`saliency_targets`), values in [0, 1].
        alpha: Focal alpha.
        gamma: Focal gamma.
        weight: Loss weight (2.0).

    Returns:
        Scalar tensor.
    """
    x, t = _flatten(logits), _flatten(targets).to(dtype=torch.float32)
    x = x.float()
    if x.shape != t.shape:
        raise ValueError(f"logits {tuple(x.shape)} and targets {tuple(t.shape)} differ")
    p = x.sigmoid()
    w = (1 - alpha) * p ** gamma * (1 - t) + t * alpha * (1 - p) ** gamma
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none") * w
    num_pos = (t > 0).sum().clamp(min=1)
    return loss.sum() / num_pos * weight


class SaliencyLoss(nn.Module):
    """``SalienceCriterion``: targets from HR boxes + focal loss, weighted by ``cfg.loss_weight``.

    Args:
        cfg: Focal alpha/gamma, loss weight and level ranges.
    """

    def __init__(self, cfg: SaliencyConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, level_logits: Sequence[Tensor], boxes: Sequence[Tensor],
                hr_size: tuple[int, int]) -> dict[str, Tensor]:
        """Compute the weighted saliency loss.

        Args:
            level_logits: L maps (B, 1, H_l, W_l) (``SaliencyOutput.level_logits``).
            boxes: B tensors (M_i, 4), xyxy HR pixels.
            hr_size: (H, W) of the HR input.

        Returns:
            ``{"loss_salience": scalar}`` (already multiplied by ``cfg.loss_weight``).
        """
        sizes = [tuple(x.shape[-2:]) for x in level_logits]
        targets = saliency_targets(boxes, sizes, hr_size, self.cfg.level_ranges, device=level_logits[0].device)
        loss = saliency_focal_loss(level_logits, targets, self.cfg.focal_alpha, self.cfg.focal_gamma,
                                   self.cfg.loss_weight)
        return {"loss_salience": loss}

"""Hungarian matcher with DINO's costs (spec 3.6): ``2 * FocalCost + 5 * L1(cxcywh) + 2 * (-GIoU)``.

The cost matrix and the assignment are ultralytics' ``HungarianMatcher`` (RT-DETR), whose focal cost is
mmdet's ``FocalLossCost`` form ``alpha (1-p)^g (-log p) - (1-alpha) p^g (-log(1-p))`` at the gt class
(eps 1e-8 instead of 1e-12), whose L1 cost is on normalised cxcywh like mmdet's ``BBoxL1Cost(xywh)``, and whose
GIoU cost is ``1 - GIoU`` (a constant shift of mmdet's ``-GIoU``: same assignment). GIoU is invariant to the
per-axis pixel scaling mmdet applies first. Non-finite costs are set to 0 before the solver
(``scipy.optimize.linear_sum_assignment``). This wrapper adds the DETR-style interface (list of target dicts,
per-image local indices) and the weights as constructor arguments.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from ultralytics.models.utils.ops import HungarianMatcher as _UltralyticsMatcher

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to gt boxes per image.

    Args:
        cost_class: Weight of the focal classification cost (2.0).
        cost_bbox: Weight of the L1 cost on normalised cxcywh (5.0).
        cost_giou: Weight of the GIoU cost (2.0).
        focal_alpha: Focal alpha of the class cost.
        focal_gamma: Focal gamma of the class cost.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self._impl = _UltralyticsMatcher(cost_gain={"class": cost_class, "bbox": cost_bbox, "giou": cost_giou},
                                         use_fl=True, alpha=focal_alpha, gamma=focal_gamma)

    @torch.no_grad()
    def forward(self, pred_logits: Tensor, pred_boxes: Tensor,
                targets: Sequence[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Match.

        Args:
            pred_logits: (B, Q, C) class logits.
            pred_boxes: (B, Q, 4) normalised cxcywh.
            targets: Per image ``{"labels": (n,) long, "boxes": (n, 4) normalised cxcywh}``; n may be 0.

        Returns:
            Per image ``(pred_idx, gt_idx)``: two (min(Q, n),) long CPU tensors; ``gt_idx`` indexes the image's
            own targets. Empty for an image without boxes.
        """
        gt_groups = [int(t["labels"].numel()) for t in targets]
        empty = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
        if sum(gt_groups) == 0:
            return [empty for _ in targets]
        gt_boxes = torch.cat([t["boxes"] for t in targets]).to(pred_boxes.device, torch.float32)
        gt_cls = torch.cat([t["labels"] for t in targets]).to(pred_boxes.device, torch.long)
        out = self._impl(pred_boxes, pred_logits, gt_boxes, gt_cls, gt_groups)
        offsets = torch.tensor([0, *gt_groups[:-1]]).cumsum(0)
        return [(i.long(), (j - offsets[k]).long()) for k, (i, j) in enumerate(out)]

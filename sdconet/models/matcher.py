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
        return self.match_many([(pred_logits, pred_boxes)], targets)[0]

    @torch.no_grad()
    def match_many(self, predictions: Sequence[tuple[Tensor, Tensor]],
                   targets: Sequence[dict[str, Tensor]]) -> list[list[tuple[Tensor, Tensor]]]:
        """Match several prediction sets (e.g. every decoder layer and the encoder proposals) to the same targets.

        Sets of one shape are stacked along the batch axis and matched in one call: the cost matrices are
        computed per (set, image) exactly as one call per set would (element-wise costs, so the same values and
        the same assignment), but copied to the host once, i.e. one device synchronisation instead of one per set
        (7 per training step for DINO's 6 decoder layers + encoder).

        Args:
            predictions: Per set ``(pred_logits (B, Q, C), pred_boxes (B, Q, 4))``.
            targets: As in :meth:`forward`.

        Returns:
            Per set, what :meth:`forward` returns for it.
        """
        gt_groups = [int(t["labels"].numel()) for t in targets]
        empty = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
        if sum(gt_groups) == 0:
            return [[empty for _ in targets] for _ in predictions]
        out: list[list[tuple[Tensor, Tensor]] | None] = [None] * len(predictions)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, (logits, _) in enumerate(predictions):
            by_shape.setdefault(tuple(logits.shape), []).append(k)
        for members in by_shape.values():
            logits = torch.cat([predictions[k][0] for k in members])
            boxes = torch.cat([predictions[k][1] for k in members])
            groups = gt_groups * len(members)
            gt_boxes = torch.cat([t["boxes"] for t in targets] * len(members)).to(boxes.device, torch.float32)
            gt_cls = torch.cat([t["labels"] for t in targets] * len(members)).to(boxes.device, torch.long)
            matched = self._impl(boxes, logits, gt_boxes, gt_cls, groups)
            offsets = torch.tensor([0, *groups[:-1]]).cumsum(0)
            local = [(i.long(), (j - offsets[n]).long()) for n, (i, j) in enumerate(matched)]
            for m, k in enumerate(members):
                out[k] = local[m * len(targets):(m + 1) * len(targets)]
        return [o for o in out if o is not None]

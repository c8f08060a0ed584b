"""DINO detection loss (spec 4, ``L_DINO``) and the inference post-processor.

For every decoder layer, for the encoder two-stage top-Q output, and for the CDN queries of every layer:
sigmoid focal loss (alpha 0.25, gamma 2; weight 1), L1 on normalised cxcywh (weight 5) and GIoU loss
(weight 2); each is a sum divided by the number of gt boxes in the batch (dn: the number of positive dn
queries), averaged over processes when torch.distributed is initialised (mmdet's ``sync_cls_avg_factor``)
and clamped to >= 1. Matching queries and encoder outputs are matched by the Hungarian matcher; dn queries
are matched by construction (positives regress to their gt, negatives and padding are background).

Names (mmdet name in brackets): ``loss_cls``/``loss_bbox``/``loss_iou`` (last decoder layer),
``d{i}.loss_*`` (layers i = 0 .. L-2), ``enc.loss_*`` [``enc_loss_*``], ``dn.loss_*`` [``dn_loss_*``],
``d{i}.dn.loss_*`` [``d{i}.dn_loss_*``]. Values are unweighted; ``weight_dict`` holds the weights and the
caller computes ``sum(losses[k] * weight_dict[k])``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from sdconet.models.box_ops import box_cxcywh_to_xyxy, denormalize_cxcywh_to_xyxy
from sdconet.models.config import SDCoNetConfig
from sdconet.models.denoising import dn_positive_indices
from sdconet.models.host import to_device
from sdconet.models.matcher import HungarianMatcher

__all__ = ["SetCriterion", "PostProcess", "build_criterion", "build_postprocess"]

Targets = Sequence[dict[str, Tensor]]


def _avg_factor(n: float, device: torch.device) -> float:
    """Number of positives averaged over processes, clamped to >= 1.

    Only a distributed run puts the count on the device (for the all-reduce) and reads it back; a single
    process already has it on the host, so no device round trip (a synchronisation on CUDA) is made.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return max(float(n), 1.0)
    t = torch.as_tensor([float(n)], device=device)
    dist.all_reduce(t)
    return max(float((t / dist.get_world_size()).item()), 1.0)


class SetCriterion(nn.Module):
    """Focal + L1 + GIoU for all decoder layers, the encoder output and the dn queries.

    Args:
        num_classes: C.
        matcher: Hungarian matcher (default: costs 2 / 5 / 2).
        loss_cls_weight: Weight of the focal loss (1.0).
        loss_bbox_weight: Weight of the L1 loss (5.0).
        loss_giou_weight: Weight of the GIoU loss (2.0).
        focal_alpha: Focal alpha (0.25).
        focal_gamma: Focal gamma (2.0).
        num_dec_layers: Decoder layers (6); fixes the weight-dict keys.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None, loss_cls_weight: float = 1.0,
                 loss_bbox_weight: float = 5.0, loss_giou_weight: float = 2.0, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, num_dec_layers: int = 6) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher(focal_alpha=focal_alpha,
                                                                            focal_gamma=focal_gamma)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.num_dec_layers = num_dec_layers
        base = {"loss_cls": loss_cls_weight, "loss_bbox": loss_bbox_weight, "loss_iou": loss_giou_weight}
        prefixes = ["", "enc.", "dn."] + [f"d{i}." for i in range(num_dec_layers - 1)] \
            + [f"d{i}.dn." for i in range(num_dec_layers - 1)]
        self.weight_dict: dict[str, float] = {p + k: w for p in prefixes for k, w in base.items()}

    def _losses(self, logits: Tensor, boxes: Tensor, targets: Targets, indices: list[tuple[Tensor, Tensor]],
                num_pos: float) -> dict[str, Tensor]:
        """Focal / L1 / GIoU for one set of predictions given the assignment.

        Args:
            logits: (B, Q, C).
            boxes: (B, Q, 4) normalised cxcywh.
            targets: Per image ``labels`` (n,) and ``boxes`` (n, 4).
            indices: Per image ``(query_idx, gt_idx)``.
            num_pos: Normaliser (>= 1).

        Returns:
            ``{"loss_cls", "loss_bbox", "loss_iou"}`` scalars.
        """
        dev = logits.device
        logits, boxes = logits.float(), boxes.float()  # losses in float32 under AMP
        # the matcher's host indices go over non-blocking (host.to_device): no stream sync per loss term
        bidx = to_device(torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]), dev)
        qidx = to_device(torch.cat([q for q, _ in indices]), dev)
        gidx = [to_device(g, dev) for _, g in indices]
        tgt_labels = torch.cat([t["labels"].to(dev)[g] for t, g in zip(targets, gidx)]).long()
        tgt_boxes = torch.cat([t["boxes"].to(dev)[g] for t, g in zip(targets, gidx)]).float()
        onehot = torch.zeros_like(logits)
        onehot[bidx, qidx, tgt_labels] = 1.0
        loss_cls = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma, reduction="sum") / num_pos
        src = boxes[bidx, qidx]
        loss_bbox = F.l1_loss(src, tgt_boxes, reduction="sum") / num_pos
        loss_iou = generalized_box_iou_loss(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt_boxes),
                                            reduction="sum") / num_pos
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_iou": loss_iou}

    def forward(self, outputs: dict[str, Any], targets: Targets) -> dict[str, Tensor]:
        """Compute every loss term.

        Args:
            outputs: :class:`~sdconet.models.two_stage.DINOHead` output (``pred_logits``, ``pred_boxes``,
                ``aux_outputs``, optional ``enc_outputs``, ``dn_outputs``, ``dn_meta``).
            targets: Per image ``{"labels": (n,) long, "boxes": (n, 4) normalised cxcywh}``; n may be 0.

        Returns:
            Unweighted scalar losses keyed as in the module docstring (dn terms are zeros when the batch
            has no dn queries, so the keys do not depend on the batch).
        """
        dev = outputs["pred_logits"].device
        num_gts = [int(t["labels"].numel()) for t in targets]
        num_pos = _avg_factor(sum(num_gts), dev)
        losses: dict[str, Tensor] = {}
        layers = list(outputs.get("aux_outputs") or []) + [outputs]
        prefixes = [f"d{i}." for i in range(len(layers) - 1)] + [""]
        enc = outputs.get("enc_outputs")
        sets, set_prefixes = (layers + [enc], prefixes + ["enc."]) if enc is not None else (layers, prefixes)
        # every set matched at once: one host transfer of the cost matrices (see HungarianMatcher.match_many)
        matched = self.matcher.match_many([(out["pred_logits"], out["pred_boxes"]) for out in sets], targets)
        for prefix, out, idx in zip(set_prefixes, sets, matched):
            for k, v in self._losses(out["pred_logits"], out["pred_boxes"], targets, idx, num_pos).items():
                losses[prefix + k] = v
        dn_outputs, dn_meta = outputs.get("dn_outputs"), outputs.get("dn_meta")
        dn_prefixes = [f"d{i}.dn." for i in range(len(layers) - 1)] + ["dn."]
        if dn_outputs is None or dn_meta is None:
            zero = outputs["pred_logits"].sum() * 0.0
            for prefix in dn_prefixes:
                losses.update({prefix + k: zero for k in ("loss_cls", "loss_bbox", "loss_iou")})
            return losses
        idx = dn_positive_indices(num_gts, dn_meta)
        num_dn_pos = _avg_factor(sum(num_gts) * dn_meta["num_groups"], dev)
        for prefix, out in zip(dn_prefixes, dn_outputs):
            for k, v in self._losses(out["pred_logits"], out["pred_boxes"], targets, idx, num_dn_pos).items():
                losses[prefix + k] = v
        return losses


class PostProcess(nn.Module):
    """Top-K (query, class) pairs by sigmoid score over all classes, no NMS (mmdet ``DINOHead.predict``).

    Args:
        num_select: K (300, ``max_per_img``).
    """

    def __init__(self, num_select: int = 300) -> None:
        super().__init__()
        self.num_select = num_select

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Turn the last-layer predictions into detections in pixels.

        Args:
            outputs: ``pred_logits`` (B, Q, C) and ``pred_boxes`` (B, Q, 4) normalised cxcywh.
            target_sizes: (B, 2) (h, w) of the original HR images in pixels.

        Returns:
            Per image ``{"scores": (K,), "labels": (K,) long, "boxes": (K, 4) xyxy pixels clipped to the
            image}``, K = min(num_select, Q * C), sorted by score.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        b, q, c = logits.shape
        k = min(self.num_select, q * c)
        scores, flat = logits.sigmoid().view(b, -1).topk(k, dim=1)
        labels, qidx = flat % c, flat // c
        sel = torch.gather(boxes, 1, qidx.unsqueeze(-1).expand(-1, -1, 4))
        sizes = target_sizes.to(sel.device, sel.dtype)[:, None, :]  # (B, 1, 2)
        xyxy = denormalize_cxcywh_to_xyxy(sel, sizes)
        return [{"scores": s, "labels": lb, "boxes": bx} for s, lb, bx in zip(scores, labels, xyxy)]


def build_criterion(cfg: SDCoNetConfig) -> SetCriterion:
    """Criterion (and its matcher) from the typed config: costs 2/5/2, weights 1/5/2 by default."""
    matcher = HungarianMatcher(cfg.cost_class, cfg.cost_bbox, cfg.cost_giou)
    return SetCriterion(cfg.num_classes, matcher, cfg.loss_cls_weight, cfg.loss_bbox_weight, cfg.loss_giou_weight,
                        num_dec_layers=cfg.dec_layers)


def build_postprocess(cfg: SDCoNetConfig) -> PostProcess:
    """Top-300 (query, class) detections per image (``max_per_img``; fewer when Q * C < 300)."""
    return PostProcess(300)

"""Contrastive denoising (CDN) queries of DINO (spec 3.6; mmdet 3.x ``CdnQueryGenerator``).

Written here rather than reusing ``ultralytics.models.utils.ops.get_cdn_group`` because its semantics differ
from DINO/mmdet in ways that change training: it caps every image at ``num_dn`` boxes by random subsetting
(DINO keeps every box and uses a single group when ``max_gt >= 100``), uses ``logit(eps=1e-6)`` instead of
mmdet's ``inverse_sigmoid(eps=1e-3)``, and draws its label-noise mask on the CPU.

Layout (per image, ``M = max_gt`` of the batch, ``G = max(1, num_dn_queries // M)`` groups): group g owns
queries ``[2 M g, 2 M (g+1))``; gt j of the image is the positive query ``2 M g + j`` and the negative query
``2 M g + M + j``; slots ``j >= n_gt(image)`` are zero padding. The dn queries come first in the decoder, then
the ``num_queries`` matching queries.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from sdconet.models.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid

__all__ = ["CdnQueryGenerator", "build_dn_attn_mask", "dn_positive_indices"]


def build_dn_attn_mask(num_dn: int, num_groups: int, num_queries: int, device: torch.device | None = None) -> Tensor:
    """Self-attention mask of the decoder (True = may not attend), mmdet semantics.

    Matching queries cannot see any dn query; each dn group cannot see the other groups (it can see
    itself and the matching queries).

    Args:
        num_dn: dn queries (``2 * max_gt * num_groups``).
        num_groups: dn groups.
        num_queries: matching queries.
        device: Output device.

    Returns:
        (num_dn + num_queries, num_dn + num_queries) bool.
    """
    total = num_dn + num_queries
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    mask[num_dn:, :num_dn] = True
    size = num_dn // num_groups
    for g in range(num_groups):
        rows = slice(size * g, size * (g + 1))
        mask[rows, : size * g] = True
        mask[rows, size * (g + 1): num_dn] = True
    return mask


def dn_positive_indices(num_gts: Sequence[int], dn_meta: dict[str, Any]) -> list[tuple[Tensor, Tensor]]:
    """Positive dn query index and its gt index, per image (the "matching by construction").

    Args:
        num_gts: Boxes per image.
        dn_meta: ``{"num_groups", "max_gt", ...}`` from :class:`CdnQueryGenerator`.

    Returns:
        Per image ``(query_idx, gt_idx)``, both (num_groups * n_gt,) long, group-major.
    """
    g, m = dn_meta["num_groups"], dn_meta["max_gt"]
    out = []
    for n in num_gts:
        t = torch.arange(n, dtype=torch.long)
        q = (torch.arange(g, dtype=torch.long)[:, None] * 2 * m + t[None]).flatten()
        out.append((q, t.repeat(g)))
    return out


class CdnQueryGenerator(nn.Module):
    """Noised gt labels/boxes as extra decoder queries (positives within ``box_noise_scale/2`` relative
    corner noise, negatives between 1x and 2x that), with a learned label embedding.

    Args:
        num_classes: C (size of the label embedding; 0.003 M for C = 10, d = 256).
        hidden_dim: d.
        num_queries: Matching queries that follow the dn queries (for the attention mask).
        num_dn_queries: Budget for dynamic groups (100): ``groups = max(1, 100 // max_gt)``.
        label_noise_scale: A fraction ``label_noise_scale / 2`` of labels is replaced by a random class.
        box_noise_scale: Corner noise scale (1.0); 0 disables box noise.
    """

    def __init__(self, num_classes: int, hidden_dim: int = 256, num_queries: int = 300,
                 num_dn_queries: int = 100, label_noise_scale: float = 0.5, box_noise_scale: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.num_queries, self.num_dn_queries = num_classes, num_queries, num_dn_queries
        self.label_noise_scale, self.box_noise_scale = label_noise_scale, box_noise_scale
        self.label_embedding = nn.Embedding(num_classes, hidden_dim)

    def num_groups(self, max_gt: int) -> int:
        """Dynamic group count ``max(1, num_dn_queries // max_gt)``."""
        return max(1, self.num_dn_queries // max_gt)

    def forward(self, targets: Sequence[dict[str, Tensor]]
                ) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]] | tuple[None, None, None, None]:
        """Build the dn queries of a batch.

        Args:
            targets: Per image ``{"labels": (n,) long, "boxes": (n, 4) normalised cxcywh}``; n may be 0.

        Returns:
            ``(label_query, box_query, attn_mask, dn_meta)``: (B, N_dn, d) content queries,
            (B, N_dn, 4) boxes in logit space (inverse sigmoid of cxcywh), the (N_dn + Q, N_dn + Q) bool mask
            of :func:`build_dn_attn_mask`, and ``{"num_dn": N_dn, "num_groups": G, "max_gt": M,
            "num_gts": [n per image]}``. All four are None when the batch holds no box (no dn then).
        """
        num_gts = [int(t["labels"].numel()) for t in targets]
        max_gt = max(num_gts, default=0)
        if max_gt == 0 or self.num_dn_queries <= 0:
            return None, None, None, None
        device = self.label_embedding.weight.device
        groups = self.num_groups(max_gt)
        labels = torch.cat([t["labels"] for t in targets]).to(device=device, dtype=torch.long)
        boxes = torch.cat([t["boxes"] for t in targets]).to(device=device, dtype=torch.float32)
        batch_idx = torch.cat([torch.full((n,), i, dtype=torch.long, device=device) for i, n in enumerate(num_gts)])
        total = labels.numel()

        labels_e = labels.repeat(2 * groups)
        if self.label_noise_scale > 0:
            chosen = torch.nonzero(torch.rand(labels_e.shape, device=device) < self.label_noise_scale * 0.5).view(-1)
            labels_e = labels_e.scatter(0, chosen, torch.randint_like(chosen, 0, self.num_classes))
        xyxy = box_cxcywh_to_xyxy(boxes).repeat(2 * groups, 1)
        if self.box_noise_scale > 0:
            pos = (torch.arange(total, device=device)[None] + 2 * total * torch.arange(groups, device=device)[:, None])
            neg = (pos + total).flatten()
            sign = torch.randint_like(xyxy, 0, 2) * 2.0 - 1.0
            part = torch.rand_like(xyxy)
            part[neg] += 1.0
            whwh = box_xyxy_to_cxcywh(xyxy)[:, 2:].repeat(1, 2)
            xyxy = (xyxy + part * sign * whwh * self.box_noise_scale / 2).clamp(0.0, 1.0)
        box_q = inverse_sigmoid(box_xyxy_to_cxcywh(xyxy), eps=1e-3)

        num_dn = 2 * max_gt * groups
        slot = torch.cat([torch.arange(n, device=device) for n in num_gts])
        slot = torch.cat([slot + max_gt * i for i in range(2 * groups)])
        bidx = batch_idx.repeat(2 * groups)
        label_query = self.label_embedding.weight.new_zeros(len(targets), num_dn, self.label_embedding.embedding_dim)
        box_query = box_q.new_zeros(len(targets), num_dn, 4)
        label_query[bidx, slot] = self.label_embedding(labels_e)
        box_query[bidx, slot] = box_q
        mask = build_dn_attn_mask(num_dn, groups, self.num_queries, device)
        meta = {"num_dn": num_dn, "num_groups": groups, "max_gt": max_gt, "num_gts": num_gts}
        return label_query, box_query, mask, meta

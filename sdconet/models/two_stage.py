"""DINO two-stage head: proposals from the encoder memory, mixed query selection, CDN, decoder, per-layer heads.

Proposal generation (base box per token, centre of the cell, size ``0.05 * 2**lvl``; tokens valid only when
all four coordinates lie in (0.01, 0.99); memory zeroed at invalid tokens, then ``LN(Linear(.))``) is the
shared :class:`~sdconet.models.memory_transform.MemoryTransform` (also used on ``feat + pos`` by the saliency
module, spec 3.4). The 7th (encoder) head pair scores every token; the top ``num_queries`` by max class logit
give the reference boxes (detached) while the content queries are a learned ``Embedding(num_queries, d)``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig
from sdconet.models.denoising import CdnQueryGenerator
from sdconet.models.dino_decoder import DetectionHeads, DINODecoder
from sdconet.models.memory_transform import MemoryTransform

__all__ = ["select_topk_proposals", "DINOHead", "build_dino_head"]


def select_topk_proposals(enc_logits: Tensor, enc_coords_unact: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k tokens by max class logit (DINO; Deformable-DETR uses the first class only).

    Args:
        enc_logits: (B, N, C) encoder-head class logits.
        enc_coords_unact: (B, N, 4) proposal boxes in logit space.
        k: Queries to keep (<= N).

    Returns:
        ``(indices, logits, coords_unact)``: (B, k) long, (B, k, C), (B, k, 4) (not detached).
    """
    idx = torch.topk(enc_logits.max(-1)[0], k, dim=1)[1]
    logits = torch.gather(enc_logits, 1, idx.unsqueeze(-1).expand(-1, -1, enc_logits.shape[-1]))
    coords = torch.gather(enc_coords_unact, 1, idx.unsqueeze(-1).expand(-1, -1, 4))
    return idx, logits, coords


class DINOHead(nn.Module):
    """Everything after the encoder: two-stage selection, CDN, decoder and heads.

    Submodules (paper preset, 10 classes): ``decoder`` 9.473 M, ``heads`` 0.946 M (7 pairs),
    ``query_embedding`` 0.077 M, ``dn_generator.label_embedding`` 0.003 M, ``memory_transform`` 0.066 M
    (shared with the saliency module when passed in; ``parameters()`` counts it once).

    Args:
        hidden_dim: d.
        nheads: Attention heads.
        ffn_dim: FFN width.
        num_layers: Decoder layers (6).
        num_queries: Matching queries (300).
        num_classes: C.
        n_levels: Feature levels.
        n_points: Deformable points.
        dropout: Dropout (0).
        num_dn_queries: CDN budget (100); 0 disables denoising.
        label_noise_scale: CDN label noise (0.5).
        box_noise_scale: CDN box noise (1.0).
        memory_transform: The shared memory transform; None builds a private one.
        head_init: ``"independent"`` or ``"copies"`` (:class:`~sdconet.models.dino_decoder.DetectionHeads`).
    """

    def __init__(self, hidden_dim: int = 256, nheads: int = 8, ffn_dim: int = 2048, num_layers: int = 6,
                 num_queries: int = 300, num_classes: int = 10, n_levels: int = 4, n_points: int = 4,
                 dropout: float = 0.0, num_dn_queries: int = 100, label_noise_scale: float = 0.5,
                 box_noise_scale: float = 1.0, memory_transform: MemoryTransform | None = None,
                 head_init: str = "independent") -> None:
        super().__init__()
        self.num_queries, self.num_layers, self.num_classes = num_queries, num_layers, num_classes
        self.decoder = DINODecoder(hidden_dim, nheads, ffn_dim, num_layers, n_levels, n_points, dropout)
        self.heads = DetectionHeads(hidden_dim, num_classes, num_layers + 1, init=head_init)
        self.query_embedding = nn.Embedding(num_queries, hidden_dim)
        nn.init.xavier_uniform_(self.query_embedding.weight)
        self.dn_generator = CdnQueryGenerator(num_classes, hidden_dim, num_queries, num_dn_queries,
                                              label_noise_scale, box_noise_scale)
        self.memory_transform = memory_transform if memory_transform is not None else MemoryTransform(hidden_dim)

    @property
    def enc_cls_head(self) -> nn.Linear:
        """The encoder (two-stage) class head, e.g. to tie the encoder's ``enhance_mcsp`` to it."""
        return self.heads.cls_branches[self.num_layers]

    def forward(self, memory: Tensor, spatial_shapes: Tensor, valid_ratios: Tensor,
                memory_mask: Tensor | None = None,
                targets: Sequence[dict[str, Tensor]] | None = None) -> dict[str, Any]:
        """Predict boxes from the encoder memory.

        Args:
            memory: (B, N, d) encoder output.
            spatial_shapes: (L, 2) long (H, W).
            valid_ratios: (B, L, 2).
            memory_mask: (B, N) bool, True at padding; None = no padding.
            targets: Per image ``{"labels": (n,) long, "boxes": (n, 4) normalised cxcywh}``. Used only in
                training mode, for CDN.

        Returns:
            dict with
            - ``pred_logits`` (B, Q, C), ``pred_boxes`` (B, Q, 4): last decoder layer (normalised cxcywh);
            - ``aux_outputs``: L_dec - 1 dicts with the same two keys, layers 0 .. L_dec - 2;
            - ``enc_outputs``: ``{"pred_logits": (B, Q, C), "pred_boxes": (B, Q, 4)}`` for the top-Q encoder
              proposals (boxes keep their gradient);
            - ``dn_outputs``: L_dec dicts ``{"pred_logits": (B, N_dn, C), "pred_boxes": (B, N_dn, 4)}`` (last
              entry = last layer), or None when no dn queries were made (eval, or a batch without boxes);
            - ``dn_meta``: the :class:`~sdconet.models.denoising.CdnQueryGenerator` meta dict, or None.
        """
        b = memory.shape[0]
        out_mem, proposals = self.memory_transform(memory, memory_mask, spatial_shapes)
        enc_logits = self.heads.cls_branches[self.num_layers](out_mem)
        enc_coords = self.heads.reg_branches[self.num_layers](out_mem) + proposals
        _, topk_logits, topk_coords_unact = select_topk_proposals(enc_logits, enc_coords, self.num_queries)
        # a copy, not a view: a no-grad view of a parameter breaks torch's module tracker (FlopCounterMode)
        query = self.query_embedding.weight[None].repeat(b, 1, 1)
        reference = topk_coords_unact.detach()
        attn_mask, dn_meta = None, None
        if self.training and targets is not None:
            dn_label, dn_box, attn_mask, dn_meta = self.dn_generator(targets)
            if dn_meta is not None:
                query = torch.cat([dn_label.to(query.dtype), query], 1)
                reference = torch.cat([dn_box.to(reference.dtype), reference], 1)
        hidden, refs = self.decoder(query, reference.sigmoid(), memory, spatial_shapes, valid_ratios,
                                    self.heads.reg_branches, memory_mask, attn_mask)
        if dn_meta is None:
            # mmdet: keep the label embedding in the graph without dn queries (unused-parameter errors in DDP)
            hidden = hidden + self.dn_generator.label_embedding.weight[0, 0] * 0.0
        logits, boxes = self.heads(hidden, refs)
        n_dn = 0 if dn_meta is None else dn_meta["num_dn"]
        layers = [{"pred_logits": lg[:, n_dn:], "pred_boxes": bx[:, n_dn:]} for lg, bx in zip(logits, boxes)]
        out: dict[str, Any] = {**layers[-1], "aux_outputs": layers[:-1],
                               "enc_outputs": {"pred_logits": topk_logits, "pred_boxes": topk_coords_unact.sigmoid()},
                               "dn_outputs": None, "dn_meta": dn_meta}
        if dn_meta is not None:
            out["dn_outputs"] = [{"pred_logits": lg[:, :n_dn], "pred_boxes": bx[:, :n_dn]}
                                 for lg, bx in zip(logits, boxes)]
        return out


def build_dino_head(cfg: SDCoNetConfig, memory_transform: MemoryTransform | None = None) -> DINOHead:
    """DINO head from the typed config; pass the saliency module's memory transform to share it (spec 3.4)."""
    return DINOHead(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dec_layers, cfg.num_queries,
                    cfg.num_classes, cfg.num_feature_levels, cfg.dec_n_points, cfg.dropout, cfg.num_dn_queries,
                    cfg.label_noise_scale, cfg.box_noise_scale, memory_transform, head_init=cfg.head_init)

"""Multi-scale saliency prediction module (spec 3.4, Salience-DETR-style top-down pass) and key-token selection.

Typical use (the detector owns the shared :class:`~sdconet.models.memory_transform.MemoryTransform`)::

    ml = flatten_levels(det_feats, pos_enc, level_embed)
    sal = saliency(ml.feat + ml.pos, ml.mask, ml.spatial_shapes, memory_transform)
    sel = key_token_selection(sal.level_scores, cfg.level_filter_ratio, cfg.layer_filter_ratio,
                              ml.level_masks, ml.level_start_index)
    loss = saliency_loss(sal.level_logits, boxes_hr, hr_size)          # see saliency_loss.py

The supervision lives in :mod:`sdconet.models.saliency_loss` and is re-exported here.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.config import SaliencyConfig, SDCoNetConfig
from sdconet.models.memory_transform import MemoryTransform
from sdconet.models.saliency_loss import SaliencyLoss, saliency_focal_loss, saliency_targets

__all__ = ["MaskPredictor", "SaliencyPredictor", "SaliencyOutput", "KeyTokenSelection", "key_token_selection",
           "saliency_targets", "saliency_focal_loss", "SaliencyLoss", "build_saliency"]


class MaskPredictor(nn.Module):
    """Per-token saliency logit with a level-global context half (shared across levels).

    ``z = GELU(Linear(LN(x)))``; the second half of z is replaced by its mean over the tokens of the level
    (padding included); then Linear D->D/2 -> GELU -> Linear D/2->D/4 -> GELU -> Linear D/4->1.
    Xavier-uniform weights, zero biases.

    Args:
        in_dim: Token width D.
        hidden_dim: Width of z (D in SDCoNet).
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.layer1 = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU())
        self.layer2 = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim // 2), nn.GELU(),
            nn.Linear(hidden_dim // 2, hidden_dim // 4), nn.GELU(),
            nn.Linear(hidden_dim // 4, 1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N_l, D) tokens of one level -> (B, N_l, 1) logits."""
        z = self.layer1(x)
        z_local, z_global = torch.split(z, self.hidden_dim // 2, dim=-1)
        z_global = z_global.mean(dim=1, keepdim=True).expand(-1, z_local.shape[1], -1)
        return self.layer2(torch.cat([z_local, z_global], dim=-1))


class SaliencyOutput(NamedTuple):
    """Fields:
        level_logits: L maps (B, 1, H_l, W_l), finest first (the loss input).
        level_scores: L tensors (B, N_l): logits with padded positions set to that level's minimum logit
            (the key-token ranking input).
        scores: (B, N) flattened logits with padded positions set to the global minimum
            (``foreground_score`` of the saliency-aware encoder).
    """

    level_logits: list[Tensor]
    level_scores: list[Tensor]
    scores: Tensor


class SaliencyPredictor(nn.Module):
    """Top-down multi-scale saliency (coarsest level first).

    ``S_3 = P(m_3)``; for l < 3: ``m_l <- m_l + alpha_l * m_l * up(S_{l+1})`` (bilinear,
    align_corners=True), ``S_l = P(m_l)``, with ``m = MemoryTransform(feat + pos)``.

    Args:
        dim: Token width D.
        cfg: ``alpha_mode`` "fixed" (alpha = ``alpha_init``, frozen; SA_DINO_SR_GR) or "learnable"
            (U(-alpha_range, alpha_range); SA_DINO_SR).
        num_levels: L (alpha has L - 1 entries).
    """

    def __init__(self, dim: int, cfg: SaliencyConfig, num_levels: int = 4) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.mask_predictor = MaskPredictor(dim, dim)
        self.alpha = nn.Parameter(torch.empty(num_levels - 1))
        if cfg.alpha_mode == "fixed":
            nn.init.constant_(self.alpha, cfg.alpha_init)
            self.alpha.requires_grad_(False)
        elif cfg.alpha_mode == "learnable":
            nn.init.uniform_(self.alpha, -cfg.alpha_range, cfg.alpha_range)
        else:
            raise ValueError(f"alpha_mode must be 'fixed' or 'learnable', got {cfg.alpha_mode!r}")

    def forward(self, feat_pos: Tensor, mask: Tensor | None, spatial_shapes: Tensor,
                memory_transform: MemoryTransform) -> SaliencyOutput:
        """Predict per-token saliency logits.

        Args:
            feat_pos: (B, N, D) flattened neck features plus positional (+level) embedding.
            mask: (B, N) bool padding mask, or None.
            spatial_shapes: (L, 2) long (H_l, W_l), finest first.
            memory_transform: The memory transform shared with the two-stage proposal generator.

        Returns:
            :class:`SaliencyOutput`.
        """
        memory, _ = memory_transform(feat_pos, mask, spatial_shapes)
        b = memory.shape[0]
        shapes = [tuple(s) for s in spatial_shapes.tolist()]
        sizes = [h * w for h, w in shapes]
        mem_levels = memory.split(sizes, dim=1)
        mask_levels = mask.split(sizes, dim=1) if mask is not None else [None] * len(sizes)
        logits: list[Tensor] = [memory.new_empty(0)] * len(shapes)
        level_scores: list[Tensor] = [memory.new_empty(0)] * len(shapes)
        score_map: Tensor | None = None
        for lvl in range(len(shapes) - 1, -1, -1):
            m = mem_levels[lvl]
            if score_map is not None:
                up = F.interpolate(score_map, size=shapes[lvl], mode="bilinear", align_corners=True)
                up = up.flatten(2).transpose(1, 2)  # (B, N_l, 1)
                m = m + m * up * self.alpha[lvl].to(m.dtype)
            s = self.mask_predictor(m)  # (B, N_l, 1)
            flat = s.squeeze(-1)
            if mask_levels[lvl] is not None:
                flat = flat.masked_fill(mask_levels[lvl], s.min())
            level_scores[lvl] = flat
            score_map = s.transpose(1, 2).reshape(b, 1, *shapes[lvl])
            logits[lvl] = score_map
        scores = torch.cat([x.flatten(1) for x in logits], 1)
        if mask is not None:
            scores = scores.masked_fill(mask, scores.min())
        return SaliencyOutput(logits, level_scores, scores)


class KeyTokenSelection(NamedTuple):
    """Fields:
        indices: (B, K) long global token indices, sorted by saliency (descending).
        layer_counts: Tokens used by each encoder layer (``indices[:, :layer_counts[k]]``).
        level_counts: Tokens kept per level (same for the whole batch: the batch maximum).
        focus_token_nums: (B,) long, per-image sum over levels of floor(ratio_l * valid_l).
    """

    indices: Tensor
    layer_counts: list[int]
    level_counts: list[int]
    focus_token_nums: Tensor

    def for_layer(self, k: int) -> Tensor:
        """(B, layer_counts[k]) indices used by encoder layer ``k``."""
        return self.indices[:, : self.layer_counts[k]]


def key_token_selection(level_scores: Sequence[Tensor], level_filter_ratio: Sequence[float],
                        layer_filter_ratio: Sequence[float], level_masks: Sequence[Tensor] | None = None,
                        level_start_index: Tensor | None = None) -> KeyTokenSelection:
    """Level and layer filtering of tokens (official ``forward_sa``).

    Per level keep the top ``floor(ratio_l * valid_l)`` tokens (the batch maximum of that count, padded
    positions ranked at the level minimum), concatenate the levels, sort by score (descending), and let
    encoder layer k use the first ``floor(layer_ratio_k * K)``. Counts use float32 arithmetic and truncation
    exactly like the official code. With all ratios 1 every token is kept.

    Args:
        level_scores: L tensors (B, N_l) (``SaliencyOutput.level_scores``).
        level_filter_ratio: L ratios in (0, 1].
        layer_filter_ratio: One ratio per encoder layer.
        level_masks: L padding masks (B, H_l, W_l) or (B, N_l) bool; None = no padding.
        level_start_index: (L,) offsets of the levels in the flattened sequence (default: cumulative N_l).

    Returns:
        :class:`KeyTokenSelection`.
    """
    device = level_scores[0].device
    sizes = [s.shape[1] for s in level_scores]
    if level_start_index is None:
        level_start_index = torch.tensor([0] + sizes[:-1], device=device).cumsum(0)
    if level_masks is None:
        valid = torch.tensor([sizes], dtype=torch.long, device=device).expand(level_scores[0].shape[0], -1)
    else:
        valid = torch.stack([(~m.bool()).flatten(1).sum(1) for m in level_masks], -1)
    ratio = torch.tensor(list(level_filter_ratio), dtype=torch.float32, device=device)
    focus = (valid * ratio).int()  # (B, L)
    level_counts = [int(c) for c in focus.max(0)[0].tolist()]
    sel_scores, sel_inds = [], []
    for lvl, s in enumerate(level_scores):
        sc, ind = s.topk(level_counts[lvl], dim=1)
        sel_scores.append(sc)
        sel_inds.append(ind + level_start_index[lvl])
    order = torch.cat(sel_scores, 1).sort(dim=1, descending=True)[1]
    indices = torch.cat(sel_inds, 1).gather(1, order)
    k = indices.shape[1]
    layer_ratio = torch.tensor(list(layer_filter_ratio), dtype=torch.float32)
    layer_counts = [int(c) for c in (k * layer_ratio).to(torch.int64).tolist()]
    return KeyTokenSelection(indices, layer_counts, level_counts, focus.sum(-1).long())


def build_saliency(cfg: SDCoNetConfig) -> SaliencyPredictor:
    """Saliency predictor of width ``cfg.hidden_dim`` (its loss: ``SaliencyLoss(cfg.saliency)``)."""
    return SaliencyPredictor(cfg.hidden_dim, cfg.saliency, cfg.num_feature_levels)

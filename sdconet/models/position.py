"""Feature position encoding (spec 3.5): 2-D sine (num_feats 128, normalize, offset 0, temperature 20) plus a
learned level embedding (4 x 256, normal init), and the multi-level flattening shared by the saliency
module and the deformable encoder (mmdet ``pre_transformer`` semantics).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig


class SinePositionalEncoding(nn.Module):
    """DETR sine encoding (mmdet ``SinePositionalEncoding``).

    Args:
        num_feats: Channels per axis; the output has ``2 * num_feats`` channels (y first, then x).
        temperature: Frequency base (20 in DINO/SDCoNet, 10000 in DETR).
        normalize: Scale cumulative coordinates to (0, ``scale``] over the valid area.
        scale: 2*pi.
        eps: Added to the normaliser.
        offset: Added to the coordinates before normalising (0 here, -0.5 in Deformable-DETR).
    """

    def __init__(self, num_feats: int = 128, temperature: float = 20.0, normalize: bool = True,
                 scale: float = 2 * math.pi, eps: float = 1e-6, offset: float = 0.0) -> None:
        super().__init__()
        self.num_feats, self.temperature, self.normalize = num_feats, temperature, normalize
        self.scale, self.eps, self.offset = scale, eps, offset

    def forward(self, mask: Tensor) -> Tensor:
        """Encode positions of the valid (unmasked) area.

        Args:
            mask: (B, H, W) bool, True at padded positions.

        Returns:
            (B, 2 * num_feats, H, W) float32.
        """
        b, h, w = mask.shape
        not_mask = (~mask.bool()).to(torch.float32)
        y = not_mask.cumsum(1)
        x = not_mask.cumsum(2)
        if self.normalize:
            y = (y + self.offset) / (y[:, -1:, :] + self.eps) * self.scale
            x = (x + self.offset) / (x[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_feats)
        px, py = x[..., None] / dim_t, y[..., None] / dim_t
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).view(b, h, w, -1)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).view(b, h, w, -1)
        return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class LevelEmbedding(nn.Module):
    """Learned per-level embedding added to the positional encoding (normal init).

    Args:
        num_levels: Feature levels (4).
        dim: Embedding width (256).
    """

    def __init__(self, num_levels: int = 4, dim: int = 256) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_levels, dim))
        nn.init.normal_(self.weight)

    def forward(self, level: int) -> Tensor:
        """(dim,) embedding of ``level``."""
        return self.weight[level]


class MultiLevelInputs(NamedTuple):
    """Flattened multi-level features (token order: level 0 (finest) first, row-major inside a level).

    Fields:
        feat: (B, N, C) features.
        pos: (B, N, C) sine encoding + level embedding.
        mask: (B, N) bool, True at padded positions.
        spatial_shapes: (L, 2) long, (H_l, W_l), on the CPU (metadata; see :func:`flatten_levels`).
        level_start_index: (L,) long, on the CPU.
        valid_ratios: (B, L, 2) float, (valid_W / W, valid_H / H).
        level_masks: L masks (B, H_l, W_l) bool.
    """

    feat: Tensor
    pos: Tensor
    mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    level_masks: list[Tensor]


def level_masks(feats: Sequence[Tensor], image_mask: Tensor | None = None) -> list[Tensor]:
    """Padding masks per level: all-valid, or ``image_mask`` (B, H, W) bool nearest-resized to each level."""
    if image_mask is None:
        return [torch.zeros(f.shape[0], *f.shape[-2:], dtype=torch.bool, device=f.device) for f in feats]
    m = image_mask[None].float()
    return [F.interpolate(m, size=f.shape[-2:]).to(torch.bool)[0] for f in feats]


def valid_ratio(mask: Tensor) -> Tensor:
    """(B, H, W) bool padding mask -> (B, 2) (valid_W / W, valid_H / H)."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float() / h
    valid_w = (~mask[:, 0, :]).sum(1).float() / w
    return torch.stack([valid_w, valid_h], -1)


def flatten_levels(feats: Sequence[Tensor], pos_encoding: SinePositionalEncoding, level_embed: LevelEmbedding,
                   masks: Sequence[Tensor] | None = None) -> MultiLevelInputs:
    """Flatten neck levels into tokens with their positional embeddings.

    Args:
        feats: L maps (B, C, H_l, W_l), finest first.
        pos_encoding: The sine encoding (``2 * num_feats == C``).
        level_embed: The level embedding (``dim == C``).
        masks: L padding masks (B, H_l, W_l) bool; None = no padding.

    Returns:
        :class:`MultiLevelInputs` with N = sum_l H_l * W_l tokens.
    """
    masks = list(masks) if masks is not None else level_masks(feats)
    feat_f, pos_f, mask_f, shapes = [], [], [], []
    for lvl, (f, m) in enumerate(zip(feats, masks)):
        b, c, h, w = f.shape
        feat_f.append(f.flatten(2).transpose(1, 2))
        pos = pos_encoding(m).to(f.dtype).flatten(2).transpose(1, 2)
        pos_f.append(pos + level_embed(lvl).to(f.dtype).view(1, 1, -1))
        mask_f.append(m.flatten(1))
        shapes.append((h, w))
    # Metadata, kept on the CPU whatever the features' device: every consumer reads the sizes back as Python ints
    # (``shapes_as_list``: each deformable attention, the proposal grid, the saliency levels), which on CUDA would
    # be a host synchronisation per read (~20 per forward), and none does arithmetic with them on the device.
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long)
    starts = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    return MultiLevelInputs(torch.cat(feat_f, 1), torch.cat(pos_f, 1), torch.cat(mask_f, 1), spatial_shapes,
                            starts, torch.stack([valid_ratio(m) for m in masks], 1), masks)


def build_position_encoding(cfg: SDCoNetConfig) -> tuple[SinePositionalEncoding, LevelEmbedding]:
    """Sine encoding (num_feats = hidden_dim / 2, temperature ``cfg.pos_temperature``) + level embedding."""
    return (SinePositionalEncoding(cfg.hidden_dim // 2, cfg.pos_temperature),
            LevelEmbedding(cfg.num_feature_levels, cfg.hidden_dim))

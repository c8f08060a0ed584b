"""Plain deformable (DINO / Deformable-DETR) encoder: the "w/o saliency" ablation's detection encoder.

Layer: ``x <- LN(x + MSDA(x + pos, value = x))`` then ``x <- LN(x + FFN(x))``. Unlike the saliency-aware encoder
(:mod:`sdconet.models.sa_encoder`) there is no pre-attention on key tokens, no token filtering, no background
embedding, no ``enhance_mcsp`` scorer, and the deformable value is the *current* layer input (mmdet
``DeformableDetrTransformerEncoder``, which DINO uses; mmcv's identity is ``query`` without ``pos``, so the
residual is the standard one). Parameter count for the paper preset: 6 x 1.282688 M = 7.696 M, i.e. DINO-4scale
Swin-T = 47.895 M in spec Appendix A.
"""
from __future__ import annotations

from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig
from sdconet.models.deform_attn import MSDeformAttn, init_deformable_stack
from sdconet.models.ffn import transformer_ffn
from sdconet.models.sa_encoder import get_encoder_reference_points

__all__ = ["DeformableEncoderLayer", "DeformableEncoder", "build_deformable_encoder"]


class DeformableEncoderLayer(nn.Module):
    """One post-norm deformable encoder layer (MSDA self-attention + FFN).

    Args:
        hidden_dim: d.
        nheads: Deformable attention heads.
        ffn_dim: FFN width.
        n_levels: Feature levels.
        n_points: Sampling points per head and level.
        dropout: Dropout of both branches (0 in DINO/SDCoNet).
    """

    def __init__(self, hidden_dim: int = 256, nheads: int = 8, ffn_dim: int = 2048, n_levels: int = 4,
                 n_points: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(hidden_dim, n_levels, nheads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.ffn = transformer_ffn(hidden_dim, ffn_dim, dropout)
        self.norm2 = nn.LayerNorm(hidden_dim)

    def forward(self, x: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                key_padding_mask: Tensor | None) -> Tensor:
        """(B, N, d) tokens, (B, N, d) position, (B, N, L, 2) references -> (B, N, d)."""
        attn = self.self_attn(x + pos, reference_points, x, spatial_shapes, key_padding_mask)
        x = self.norm1(x + self.dropout1(attn))
        return self.norm2(x + self.ffn(x))


class DeformableEncoder(nn.Module):
    """Stack of :class:`DeformableEncoderLayer` (Xavier on >1-D parameters, then the MSDA init).

    Args:
        hidden_dim, nheads, ffn_dim, n_levels, n_points, dropout: see :class:`DeformableEncoderLayer`.
        num_layers: Encoder layers (6).
    """

    def __init__(self, hidden_dim: int = 256, nheads: int = 8, ffn_dim: int = 2048, num_layers: int = 6,
                 n_levels: int = 4, n_points: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DeformableEncoderLayer(hidden_dim, nheads, ffn_dim, n_levels, n_points, dropout)
                                     for _ in range(num_layers)])
        init_deformable_stack(self)

    def forward(self, src: Tensor, pos: Tensor, spatial_shapes: Tensor, valid_ratios: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """Encode flattened multi-level tokens.

        Args:
            src: (B, N, d) flattened neck features.
            pos: (B, N, d) sine position + level embedding.
            spatial_shapes: (L, 2) long (H, W), finest first.
            valid_ratios: (B, L, 2).
            key_padding_mask: (B, N) bool, True at padding; None = no padding.

        Returns:
            (B, N, d) memory.
        """
        ref = get_encoder_reference_points(spatial_shapes, valid_ratios).to(src.dtype)
        x = src
        for layer in self.layers:
            x = layer(x, pos, ref, spatial_shapes, key_padding_mask)
        return x


def build_deformable_encoder(cfg: SDCoNetConfig) -> DeformableEncoder:
    """Plain encoder from the typed config (hidden_dim, nheads, dim_feedforward, enc_layers, levels, points)."""
    return DeformableEncoder(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.enc_layers, cfg.num_feature_levels,
                             cfg.enc_n_points, cfg.dropout)

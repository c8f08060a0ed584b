"""DINO-4scale decoder and prediction heads (spec 3.6; mmdet 3.x ``DinoTransformerDecoder`` / ``DINOHead``).

The decoder refines 4-D reference boxes layer by layer (``with_box_refine``); the query position is an MLP of
the sine encoding of the reference box. Heads are separate per layer (6 decoder + 1 encoder pair).
"Look forward twice": the boxes reported for layer l are ``sigmoid(reg_l(norm(h_l)) + logit(ref_l))`` where
``ref_l`` is the *undetached* refined box of layer l-1, while the next layer's input reference is detached.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.box_ops import inverse_sigmoid
from sdconet.models.deform_attn import MSDeformAttn, init_deformable_stack
from sdconet.models.ffn import transformer_ffn

__all__ = ["MLP", "coordinate_to_encoding", "DINODecoderLayer", "DINODecoder", "DetectionHeads"]


class MLP(nn.Module):
    """Linear layers with ReLU in between (DETR/mmdet ``MLP``).

    Args:
        in_dim: Input width.
        hidden_dim: Hidden width.
        out_dim: Output width.
        num_layers: Number of Linear layers.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def coordinate_to_encoding(coords: Tensor, num_feats: int = 128, temperature: float = 10000.0,
                           scale: float = 2 * math.pi) -> Tensor:
    """Sine encoding of normalised points/boxes (mmdet ``coordinate_to_encoding``).

    Args:
        coords: (B, Q, 2) (x, y) or (B, Q, 4) (cx, cy, w, h) in [0, 1].
        num_feats: Channels per coordinate.
        temperature: Frequency base.
        scale: Multiplier applied to the coordinates.

    Returns:
        (B, Q, 2 * num_feats) ordered (y, x) or (B, Q, 4 * num_feats) ordered (y, x, w, h).
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)

    def enc(v: Tensor) -> Tensor:
        p = (v * scale)[..., None] / dim_t
        return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)

    parts = [enc(coords[..., 1]), enc(coords[..., 0])]
    if coords.shape[-1] == 4:
        parts += [enc(coords[..., 2]), enc(coords[..., 3])]
    elif coords.shape[-1] != 2:
        raise ValueError(f"coords must end in 2 or 4, got {coords.shape[-1]}")
    return torch.cat(parts, dim=-1).to(coords.dtype)


class DINODecoderLayer(nn.Module):
    """Self-attention -> LN -> deformable cross-attention -> LN -> FFN -> LN (post-norm, standard residuals).

    Args:
        hidden_dim: d.
        nheads: Heads of both attentions.
        ffn_dim: FFN width.
        n_levels: Feature levels.
        n_points: Deformable points per head and level.
        dropout: Dropout of every branch (0 in SDCoNet).
    """

    def __init__(self, hidden_dim: int = 256, nheads: int = 8, ffn_dim: int = 2048, n_levels: int = 4,
                 n_points: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden_dim, nheads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.cross_attn = MSDeformAttn(hidden_dim, n_levels, nheads, n_points)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.ffn = transformer_ffn(hidden_dim, ffn_dim, dropout)
        self.norm3 = nn.LayerNorm(hidden_dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, query: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Tensor,
                spatial_shapes: Tensor, memory_mask: Tensor | None = None,
                self_attn_mask: Tensor | None = None) -> Tensor:
        """Update the queries.

        Args:
            query: (B, Q, d) content queries.
            query_pos: (B, Q, d) positional queries.
            reference_points: (B, Q, L, 4) normalised cxcywh (valid-ratio scaled).
            memory: (B, N, d) encoder output.
            spatial_shapes: (L, 2) long.
            memory_mask: (B, N) bool, True at padding.
            self_attn_mask: (Q, Q) bool, True = may not attend (the CDN mask).

        Returns:
            (B, Q, d).
        """
        qk = query + query_pos
        sa = self.self_attn(qk, qk, query, attn_mask=self_attn_mask, need_weights=False)[0]
        query = self.norm1(query + self.dropout1(sa))
        ca = self.cross_attn(query + query_pos, reference_points, memory, spatial_shapes, memory_mask)
        query = self.norm2(query + self.dropout2(ca))
        return self.norm3(query + self.ffn(query))


class DINODecoder(nn.Module):
    """Layers + ``ref_point_head`` (MLP 2d -> d -> d) + final LN; iterative box refinement.

    Parameter count for the paper preset: 6 x 1.545856 M + 0.197120 M + 512 = 9.473 M (spec Appendix A).
    Init (mmdet ``DINO.init_weights``): Xavier-uniform on >1-D parameters, then the deformable-attention init.

    Args:
        hidden_dim, nheads, ffn_dim, n_levels, n_points, dropout: see :class:`DINODecoderLayer`.
        num_layers: Decoder layers (6).
    """

    def __init__(self, hidden_dim: int = 256, nheads: int = 8, ffn_dim: int = 2048, num_layers: int = 6,
                 n_levels: int = 4, n_points: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.layers = nn.ModuleList([DINODecoderLayer(hidden_dim, nheads, ffn_dim, n_levels, n_points, dropout)
                                     for _ in range(num_layers)])
        self.ref_point_head = MLP(2 * hidden_dim, hidden_dim, hidden_dim, 2)
        self.norm = nn.LayerNorm(hidden_dim)
        init_deformable_stack(self)

    def forward(self, query: Tensor, reference_points: Tensor, memory: Tensor, spatial_shapes: Tensor,
                valid_ratios: Tensor, reg_branches: nn.ModuleList, memory_mask: Tensor | None = None,
                self_attn_mask: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run all layers.

        Args:
            query: (B, Q, d) content queries (dn queries first when training).
            reference_points: (B, Q, 4) initial boxes, normalised cxcywh (sigmoid space).
            memory: (B, N, d).
            spatial_shapes: (L, 2) long.
            valid_ratios: (B, L, 2).
            reg_branches: At least ``num_layers`` box MLPs (d -> 4 deltas in logit space).
            memory_mask: (B, N) bool, True at padding.
            self_attn_mask: (Q, Q) bool CDN mask, True = blocked.

        Returns:
            ``(hidden_states, references)``: (num_layers, B, Q, d) normed layer outputs, and num_layers + 1
            reference boxes (B, Q, 4): the initial one, then each layer's refined box (not detached).
        """
        ratios4 = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # (B, 1, L, 4)
        intermediate, references = [], [reference_points]
        for lid, layer in enumerate(self.layers):
            ref_input = reference_points[:, :, None] * ratios4
            query_pos = self.ref_point_head(coordinate_to_encoding(ref_input[:, :, 0], self.hidden_dim // 2))
            query = layer(query, query_pos, ref_input, memory, spatial_shapes, memory_mask, self_attn_mask)
            new_ref = (reg_branches[lid](query) + inverse_sigmoid(reference_points, eps=1e-3)).sigmoid()
            reference_points = new_ref.detach()
            intermediate.append(self.norm(query))
            references.append(new_ref)
        return torch.stack(intermediate), references


class DetectionHeads(nn.Module):
    """``num_layers + 1`` unshared (class, box) head pairs; the last pair scores the encoder proposals.

    class: ``Linear(d, C)`` with bias ``-log((1 - 0.01) / 0.01)`` (focal prior 0.01);
    box: ``MLP(d, d, 4, 3)`` with a zero-initialised last layer (mmdet ``DeformableDETRHead.init_weights``
    with ``as_two_stage``). 7 pairs for the paper preset: 0.946 M with 10 classes.

    Args:
        hidden_dim: d.
        num_classes: C.
        num_pairs: Head pairs (decoder layers + 1).
        prior_prob: Focal prior of the class bias.
        init: ``"independent"`` (each pair drawn on its own) or ``"copies"`` (the released mmdet
            ``DeformableDETRHead._init_layers``: ``copy.deepcopy`` of one ``fc_cls`` / ``reg_branch``, so every pair
            starts identical; spec Appendix B). The bias prior and the zeroed last box layer follow either way; the
            pairs are separate parameters in training.
    """

    def __init__(self, hidden_dim: int = 256, num_classes: int = 10, num_pairs: int = 7,
                 prior_prob: float = 0.01, init: str = "independent") -> None:
        super().__init__()
        if init == "independent":
            self.cls_branches = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_pairs))
            self.reg_branches = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(num_pairs))
        elif init == "copies":
            cls, reg = nn.Linear(hidden_dim, num_classes), MLP(hidden_dim, hidden_dim, 4, 3)
            self.cls_branches = nn.ModuleList(copy.deepcopy(cls) for _ in range(num_pairs))
            self.reg_branches = nn.ModuleList(copy.deepcopy(reg) for _ in range(num_pairs))
        else:
            raise ValueError(f"head init must be 'independent' or 'copies', got {init!r}")
        bias = -math.log((1 - prior_prob) / prior_prob)
        for c in self.cls_branches:
            nn.init.constant_(c.bias, bias)
        for r in self.reg_branches:
            nn.init.zeros_(r.layers[-1].weight)
            nn.init.zeros_(r.layers[-1].bias)

    def forward(self, hidden_states: Tensor, references: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Per-layer predictions ("look forward twice").

        Args:
            hidden_states: (L_dec, B, Q, d) normed decoder outputs.
            references: L_dec + 1 boxes (B, Q, 4); ``references[l]`` is the input box of layer l.

        Returns:
            ``(logits, boxes)``: (L_dec, B, Q, C) and (L_dec, B, Q, 4) normalised cxcywh.
        """
        logits, boxes = [], []
        for lid in range(hidden_states.shape[0]):
            h = hidden_states[lid]
            logits.append(self.cls_branches[lid](h))
            boxes.append((self.reg_branches[lid](h) + inverse_sigmoid(references[lid])).sigmoid())
        return torch.stack(logits), torch.stack(boxes)

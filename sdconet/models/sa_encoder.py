"""Saliency-aware deformable encoder (spec 3.5; official ``SADetrTransformerEncoder_BG`` + its layer).

Per layer k: gather the selected tokens (``foreground_inds[k]``, all tokens by default) from the running
output, run the layer on them (top-k pre-attention -> deformable attention over the *layer-0 input* ->
FFN), scatter them back, then add the learned background embedding to valid tokens that were not selected
(after every layer, as in the official code; Salience-DETR adds it once at the end; spec 9 item 12).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig
from sdconet.models.deform_attn import MSDeformAttn, init_deformable_stack, shapes_as_list
from sdconet.models.ffn import transformer_ffn

__all__ = ["BackgroundEmbedding", "SaliencyEncoderLayer", "SaliencyAwareEncoder", "get_encoder_reference_points",
           "build_sa_encoder"]


def get_encoder_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor) -> Tensor:
    """Deformable-DETR encoder reference points: token centres scaled by the valid ratios.

    Args:
        spatial_shapes: (L, 2) long (H, W).
        valid_ratios: (B, L, 2) as (valid_W / W, valid_H / H).

    Returns:
        (B, N, L, 2) normalised (x, y).
    """
    refs = []
    for lvl, (h, w) in enumerate(shapes_as_list(spatial_shapes)):
        ry, rx = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=valid_ratios.device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=valid_ratios.device), indexing="ij")
        ry = ry.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        rx = rx.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        refs.append(torch.stack((rx, ry), -1))
    return torch.cat(refs, 1)[:, :, None] * valid_ratios[:, None]


class BackgroundEmbedding(nn.Module):
    """Learned 2-D row/column embedding (official ``PositionEmbeddingLearned(200, d/2)``).

    A token at (row i, col j) of any level gets ``cat(col_embed[j], row_embed[i])``.

    Args:
        num_embeddings: Rows/columns supported per level (200).
        dim: Output width d (each table has d/2 columns).
    """

    def __init__(self, num_embeddings: int = 200, dim: int = 256) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(num_embeddings, dim // 2)
        self.col_embed = nn.Embedding(num_embeddings, dim // 2)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, spatial_shapes: Tensor | Sequence[Sequence[int]]) -> Tensor:
        """Embeddings of all tokens of all levels.

        Args:
            spatial_shapes: (L, 2) (H, W), each side <= ``num_embeddings``.

        Returns:
            (N, d), levels concatenated row-major.
        """
        out = []
        for h, w in shapes_as_list(spatial_shapes):
            if max(h, w) > self.row_embed.num_embeddings:
                raise ValueError(f"level {h}x{w} exceeds the {self.row_embed.num_embeddings} background rows/cols")
            x = self.col_embed.weight[:w]
            y = self.row_embed.weight[:h]
            out.append(torch.cat([x[None].expand(h, -1, -1), y[:, None].expand(-1, w, -1)], -1).flatten(0, 1))
        return torch.cat(out, 0)


class SaliencyEncoderLayer(nn.Module):
    """One saliency-aware encoder layer.

    1. Pre-attention: score ``s`` per token, top-``topk_sa`` tokens attend to each other with
       ``nn.MultiheadAttention`` (q = k = x + pos, v = x), residual + LN (``pre_norm``), scattered back.
       ``topk_score_mode="official"``: ``s = max_c(score_tgt) * fg`` (product of two raw logits, as in the
       released code; misorders tokens when both are negative, spec 9 item 9). ``"fixed"``:
       ``s = sigmoid(max_c score_tgt) * sigmoid(fg)`` (a product of probabilities).
    2. Deformable attention, query x + pos, over ``value`` (the encoder input, never updated). The official
       code calls mmcv's ``MultiScaleDeformableAttention`` with ``query = x + pos`` and no ``identity``;
       mmcv then adds its own residual ``identity = x + pos`` and the layer adds x again, i.e.
       ``x <- LN(2x + pos + MSDA(x + pos))`` (``deform_residual="official"``). ``"standard"`` gives
       Salience-DETR's ``x <- LN(x + MSDA(x + pos))``.
    3. FFN d -> ffn_dim -> d (ReLU) with residual, LN.

    Args:
        hidden_dim: d.
        nheads: Heads of the pre-attention and the deformable attention.
        ffn_dim: FFN width.
        n_levels: Feature levels.
        n_points: Deformable points per head and level.
        topk_sa: Tokens in the pre-attention (100 in SDCoNet, 300 in Salience-DETR).
        dropout: Dropout of every branch (0 in SDCoNet).
        topk_score_mode: "official" or "fixed" (above).
        deform_residual: "official" or "standard" (above).
    """

    def __init__(self, hidden_dim: int = 256, nheads: int = 8, ffn_dim: int = 2048, n_levels: int = 4,
                 n_points: int = 4, topk_sa: int = 100, dropout: float = 0.0, topk_score_mode: str = "official",
                 deform_residual: str = "official") -> None:
        super().__init__()
        if topk_score_mode not in ("official", "fixed"):
            raise ValueError(f"topk_score_mode must be 'official' or 'fixed', got {topk_score_mode!r}")
        if deform_residual not in ("official", "standard"):
            raise ValueError(f"deform_residual must be 'official' or 'standard', got {deform_residual!r}")
        self.hidden_dim, self.topk_sa = hidden_dim, topk_sa
        self.topk_score_mode, self.deform_residual = topk_score_mode, deform_residual
        self.pre_attention = nn.MultiheadAttention(hidden_dim, nheads, dropout=dropout, batch_first=True)
        self.pre_dropout = nn.Dropout(dropout)
        self.pre_norm = nn.LayerNorm(hidden_dim)
        self.self_attn = MSDeformAttn(hidden_dim, n_levels, nheads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.ffn = transformer_ffn(hidden_dim, ffn_dim, dropout)
        self.norm2 = nn.LayerNorm(hidden_dim)

    def topk_scores(self, score_tgt: Tensor, foreground: Tensor) -> Tensor:
        """(B, Q, C) class logits and (B, Q) saliency logits -> (B, Q) ranking score (see class doc)."""
        cls = score_tgt.max(-1)[0]
        if self.topk_score_mode == "official":
            return cls * foreground
        return cls.sigmoid() * foreground.sigmoid()

    def forward(self, query: Tensor, query_pos: Tensor, value: Tensor, reference_points: Tensor,
                spatial_shapes: Tensor, key_padding_mask: Tensor | None, score_tgt: Tensor,
                foreground: Tensor) -> Tensor:
        """Update the selected tokens.

        Args:
            query: (B, Q, d) selected tokens.
            query_pos: (B, Q, d) their position (+ level) embedding.
            value: (B, N, d) all tokens of the encoder input.
            reference_points: (B, Q, L, 2).
            spatial_shapes: (L, 2) long.
            key_padding_mask: (B, N) bool, True at padding, or None.
            score_tgt: (B, Q, C) ``enhance_mcsp(query)``.
            foreground: (B, Q) saliency logits of the selected tokens.

        Returns:
            (B, Q, d).
        """
        k = min(self.topk_sa, query.shape[1])
        idx = torch.topk(self.topk_scores(score_tgt, foreground), k, dim=1)[1]
        idx = idx.unsqueeze(-1).expand(-1, -1, self.hidden_dim)
        sel, sel_pos = torch.gather(query, 1, idx), torch.gather(query_pos, 1, idx)
        qk = sel + sel_pos
        sel = self.pre_norm(sel + self.pre_dropout(self.pre_attention(qk, qk, sel, need_weights=False)[0]))
        query = query.scatter(1, idx, sel)
        q_pos = query + query_pos
        attn = self.self_attn(q_pos, reference_points, value, spatial_shapes, key_padding_mask)
        if self.deform_residual == "official":
            attn = attn + q_pos
        query = self.norm1(query + self.dropout1(attn))
        return self.norm2(query + self.ffn(query))


class SaliencyAwareEncoder(nn.Module):
    """Stack of :class:`SaliencyEncoderLayer` with token subsets, ``enhance_mcsp`` and the background embedding.

    Parameter count for the paper preset (d 256, 8 heads, ffn 2048, 4 levels x 4 points, 6 layers,
    10 classes, 200 background rows/cols): 6 x 1.545856 M + enhance_mcsp 2,570 + background 51,200
    = 9.329 M (spec Appendix A).

    Init (mmdet ``DINO.init_weights``): Xavier-uniform on every >1-D parameter (including the MHA input
    projection, ``enhance_mcsp`` and the background tables), then the Deformable-DETR init of each
    deformable attention.

    Args:
        hidden_dim, nheads, ffn_dim, n_levels, n_points, topk_sa, dropout, topk_score_mode,
            deform_residual: see :class:`SaliencyEncoderLayer`.
        num_layers: Encoder layers (6).
        num_classes: Output width of ``enhance_mcsp``.
        bg_embed_size: Rows/columns of the background embedding (200).
        enhance_mcsp: Class scorer for the pre-attention ranking. None builds the official, untrained
            ``Linear(d, num_classes)``; pass the two-stage encoder class head to tie them ("tied" /
            Salience-DETR mode; spec 10 row 10). A passed module is not re-initialised here.
    """

    def __init__(self, hidden_dim: int = 256, nheads: int = 8, ffn_dim: int = 2048, num_layers: int = 6,
                 num_classes: int = 10, n_levels: int = 4, n_points: int = 4, topk_sa: int = 100,
                 dropout: float = 0.0, bg_embed_size: int = 200, topk_score_mode: str = "official",
                 deform_residual: str = "official", enhance_mcsp: nn.Module | None = None) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.layers = nn.ModuleList([
            SaliencyEncoderLayer(hidden_dim, nheads, ffn_dim, n_levels, n_points, topk_sa, dropout,
                                 topk_score_mode, deform_residual) for _ in range(num_layers)])
        self.background_embedding = BackgroundEmbedding(bg_embed_size, hidden_dim)
        self._own_mcsp = enhance_mcsp is None
        self.enhance_mcsp = nn.Linear(hidden_dim, num_classes) if enhance_mcsp is None else enhance_mcsp
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform on >1-D parameters, then the deformable-attention init (mmdet order)."""
        mods: list[nn.Module] = [self.layers, self.background_embedding]
        if self._own_mcsp:
            mods.append(self.enhance_mcsp)  # weight Xavier, bias keeps nn.Linear's default (official)
        init_deformable_stack(self, xavier_from=mods)

    def forward(self, src: Tensor, pos: Tensor, spatial_shapes: Tensor, valid_ratios: Tensor,
                foreground_score: Tensor, key_padding_mask: Tensor | None = None,
                foreground_inds: Sequence[Tensor] | None = None,
                focus_token_nums: Tensor | None = None) -> Tensor:
        """Encode the flattened multi-level tokens.

        Args:
            src: (B, N, d) flattened neck features (layer-0 input, also the deformable value of every layer).
            pos: (B, N, d) sine position + level embedding.
            spatial_shapes: (L, 2) long (H, W), finest first.
            valid_ratios: (B, L, 2).
            foreground_score: (B, N) saliency logits (padding = the minimum), ``SaliencyOutput.scores``.
            key_padding_mask: (B, N) bool, True at padding; None = no padding.
            foreground_inds: One (B, n_k) long index tensor per layer, tokens sorted by saliency
                (``[sel.for_layer(k) for k in range(num_layers)]`` of ``key_token_selection``); None = all
                tokens in every layer (the released configuration, gathers skipped).
            focus_token_nums: (B,) tokens of each image that are real (not padding) selections; only the
                first ``min(n_k, focus_token_nums[i])`` updated tokens are scattered back. None = all n_k.

        Returns:
            (B, N, d) memory.
        """
        b, n, d = src.shape
        ref_all = get_encoder_reference_points(spatial_shapes, valid_ratios).to(src.dtype)  # (B, N, L, 2)
        bg = self.background_embedding(spatial_shapes).to(src.dtype)  # (N, d)
        output = src
        for k, layer in enumerate(self.layers):
            inds = None if foreground_inds is None else foreground_inds[k]
            if inds is None:
                query, query_pos, ref, fg = output, pos, ref_all, foreground_score
            else:
                gi = inds.unsqueeze(-1).expand(-1, -1, d)
                query, query_pos = torch.gather(output, 1, gi), torch.gather(pos, 1, gi)
                fg = torch.gather(foreground_score, 1, inds)
                lvl2 = ref_all.shape[2] * 2
                ref = torch.gather(ref_all.reshape(b, n, lvl2), 1, inds.unsqueeze(-1).expand(-1, -1, lvl2))
                ref = ref.view(b, -1, ref_all.shape[2], 2)
            query = layer(query, query_pos, src, ref, spatial_shapes, key_padding_mask,
                          self.enhance_mcsp(query), fg)
            if inds is None:
                output = query
                continue
            output = self._scatter(output, query, inds, focus_token_nums)
            bg_k = bg[None].expand(b, -1, -1).scatter(1, inds.unsqueeze(-1).expand(-1, -1, d), 0.0)
            if key_padding_mask is not None:
                bg_k = bg_k * (~key_padding_mask).unsqueeze(-1).to(bg_k.dtype)
            output = output + bg_k
        return output

    @staticmethod
    def _scatter(output: Tensor, query: Tensor, inds: Tensor, focus_token_nums: Tensor | None) -> Tensor:
        """Write the updated tokens back (per image, only the first ``focus_token_nums[i]``)."""
        d = output.shape[-1]
        if focus_token_nums is None:
            return output.scatter(1, inds.unsqueeze(-1).expand(-1, -1, d), query)
        outs = []
        for i in range(output.shape[0]):
            m = min(int(focus_token_nums[i]), inds.shape[1])
            outs.append(output[i].scatter(0, inds[i, :m].unsqueeze(-1).expand(-1, d), query[i, :m]))
        return torch.stack(outs)


def build_sa_encoder(cfg: SDCoNetConfig, enhance_mcsp: nn.Module | None = None) -> SaliencyAwareEncoder:
    """Encoder from the typed config.

    ``topk_score_mode`` / ``deform_residual`` are read from ``cfg`` when it defines them (default "official").

    Args:
        cfg: Model configuration (hidden_dim, nheads, dim_feedforward, enc_layers, num_classes, enc_n_points,
            topk_sa, dropout, bg_embed_size, num_feature_levels).
        enhance_mcsp: The two-stage encoder class head when ``cfg.enhance_mcsp == "tied"`` (required then).
    """
    if cfg.enhance_mcsp == "tied" and enhance_mcsp is None:
        raise ValueError("enhance_mcsp='tied' needs the encoder class head (DINOHead.enc_cls_head)")
    return SaliencyAwareEncoder(
        cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.enc_layers, cfg.num_classes, cfg.num_feature_levels,
        cfg.enc_n_points, cfg.topk_sa, cfg.dropout, cfg.bg_embed_size,
        getattr(cfg, "topk_score_mode", "official"), getattr(cfg, "deform_residual", "official"),
        enhance_mcsp if cfg.enhance_mcsp == "tied" else None)

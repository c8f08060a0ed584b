"""Swin blocks with mmdet/SwinIR padding semantics, built on timm's ``SwinTransformerBlock``.

timm 1.0.x's block rolls the *unpadded* map and pads afterwards, and it shrinks the window (and drops the
shift) when a map is smaller than the window unless ``always_partition`` is set. The official SDCoNet
encoder (mmdet ``ShiftWindowMSA``) and SR decoder (SwinIR-style ``SwinTransformerBlock``) instead
**pad to a multiple of the window first, then roll**, build the shift mask on the padded size, and always
keep the configured window and shift. Padding therefore changes which tokens share a window, so
:class:`PaddedSwinBlock` overrides only ``_attn`` to follow the official order; parameters, their names
(``norm1``, ``attn.qkv``, ``attn.proj``, ``attn.relative_position_bias_table``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``), the relative-position index and the attention maths are timm's, so timm/official Swin
checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.swin_transformer import (PatchMerging, SwinTransformerBlock, window_partition,
                                          window_reverse)
from torch import Tensor, nn


class PaddedSwinBlock(SwinTransformerBlock):
    """Pre-LN Swin block: x + DropPath(W-MSA/SW-MSA(LN(x))), then x + DropPath(MLP(LN(x))).

    The map is zero-padded at the bottom/right to a multiple of the window, cyclically shifted by
    ``-shift`` (odd blocks), partitioned, attended with relative position bias (and the -100 shift mask
    on the padded grid), merged, shifted back and cropped. Works for any input size.

    Args:
        dim: Channels C.
        num_heads: Attention heads.
        window_size: Window side (fixed, never shrunk).
        shift: Whether this block uses shifted windows (shift = window // 2).
        mlp_ratio: MLP hidden width / C.
        drop_path: Stochastic-depth rate of both residual branches.
        fused_attn: Use ``F.scaled_dot_product_attention`` (same maths as the explicit softmax).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: bool, mlp_ratio: float,
                 drop_path: float = 0.0, fused_attn: bool = True) -> None:
        super().__init__(dim=dim, input_resolution=(window_size, window_size), num_heads=num_heads,
                         window_size=window_size, shift_size=window_size // 2 if shift else 0,
                         always_partition=True, dynamic_mask=True, mlp_ratio=mlp_ratio, qkv_bias=True,
                         drop_path=drop_path)
        self.attn.fused_attn = fused_attn
        self._mask_cache: dict[tuple[int, int, str, torch.dtype], Tensor] = {}

    def _shift_mask(self, x_padded: Tensor) -> Tensor:
        """(nW, ws*ws, ws*ws) additive mask (0 / -100) for the padded, shifted map, cached per size."""
        key = (x_padded.shape[1], x_padded.shape[2], str(x_padded.device), x_padded.dtype)
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = self.get_attn_mask(x_padded)
            if len(self._mask_cache) > 16:
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    def _attn(self, x: Tensor) -> Tensor:
        """Window attention on an already normalised map.

        The official order (pad, roll, partition, W-MSA with q/k/v and output projections, merge, roll back,
        crop) without the work it discards: the zero-padded tokens' q/k/v is just the qkv bias, and their
        outputs are cropped away, so the q/k/v projection runs on the real tokens only (the padded rows get the
        bias) and the output projection after the crop (both are per-token linear maps, so this is the same
        result). At 512 HR (LR 256) stage 3 pads 16x16 -> 21x21 and stage 4 8x8 -> 14x14: 1.3 of the encoder's
        7.3 GMAC per image were spent on discarded rows.

        Args:
            x: (B, H, W, C).

        Returns:
            (B, H, W, C).
        """
        B, H, W, C = x.shape
        wh, ww = self.window_size
        pad_h, pad_w = (wh - H % wh) % wh, (ww - W % ww) % ww
        qkv = self.attn.qkv(x)  # (B, H, W, 3C)
        if pad_h or pad_w:
            bias = self.attn.qkv.bias
            fill = bias if bias is not None else qkv.new_zeros(qkv.shape[-1])
            if pad_w:
                qkv = torch.cat([qkv, fill.expand(B, H, pad_w, -1)], 2)
            if pad_h:
                qkv = torch.cat([qkv, fill.expand(B, pad_h, W + pad_w, -1)], 1)
        Hp, Wp = H + pad_h, W + pad_w
        has_shift = any(self.shift_size)
        mask = None
        if has_shift:
            qkv = torch.roll(qkv, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
            mask = self._shift_mask(qkv)
        windows = self._window_attention(window_partition(qkv, self.window_size).view(-1, self.window_area, 3 * C),
                                         mask)
        x = window_reverse(windows.view(-1, wh, ww, C), self.window_size, Hp, Wp)
        if has_shift:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        if pad_h or pad_w:
            x = x[:, :H, :W, :]
        return self.attn.proj_drop(self.attn.proj(x))

    def _window_attention(self, qkv: Tensor, mask: Tensor | None) -> Tensor:
        """timm ``WindowAttention.forward`` between its two projections (same maths, fused or explicit).

        Args:
            qkv: (num_windows*B, N, 3C) projected windows.
            mask: (num_windows, N, N) additive shift mask or None.

        Returns:
            (num_windows*B, N, C), before the output projection.
        """
        a = self.attn
        b_, n, _ = qkv.shape
        q, k, v = qkv.reshape(b_, n, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        # On the CPU under autograd SDPA takes its math path anyway (the mask carries the learned relative-position
        # bias); the explicit form below was ~2 % faster per paper-preset training step there, the same at inference.
        if a.fused_attn and not (qkv.device.type == "cpu" and torch.is_grad_enabled() and qkv.requires_grad):
            attn_mask = a._get_rel_pos_bias()
            if mask is not None:
                num_win = mask.shape[0]
                mask = mask.view(1, num_win, 1, n, n).expand(b_ // num_win, -1, a.num_heads, -1, -1)
                attn_mask = attn_mask + mask.reshape(-1, a.num_heads, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                 dropout_p=a.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * a.scale) @ k.transpose(-2, -1) + a._get_rel_pos_bias()
            if mask is not None:
                num_win = mask.shape[0]
                attn = attn.view(-1, num_win, a.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, a.num_heads, n, n)
            out = a.attn_drop(a.softmax(attn)) @ v
        return out.transpose(1, 2).reshape(b_, n, -1)


class SwinStage(nn.Module):
    """Optional PatchMerging (LN + Linear 4C->2C, at the start, timm layout) then ``depth`` blocks.

    Block ``i`` uses shifted windows when ``i`` is odd. Module names match timm (``downsample``,
    ``blocks.{i}``) so timm checkpoints map one to one.

    Args:
        dim: Input channels.
        out_dim: Output channels (``2*dim`` when ``downsample``; ``dim`` otherwise).
        depth: Number of blocks.
        num_heads: Attention heads.
        window_size: Window side.
        mlp_ratio: MLP ratio.
        drop_path: One rate per block.
        downsample: Merge 2x2 patches first (halves H and W, padding odd sizes).
        fused_attn: See :class:`PaddedSwinBlock`.
    """

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, drop_path: Sequence[float], downsample: bool, fused_attn: bool = True) -> None:
        super().__init__()
        if len(drop_path) != depth:
            raise ValueError(f"need {depth} drop-path rates, got {len(drop_path)}")
        self.downsample: nn.Module = PatchMerging(dim=dim, out_dim=out_dim) if downsample else nn.Identity()
        if not downsample and dim != out_dim:
            raise ValueError("dim must equal out_dim without downsampling")
        self.blocks = nn.Sequential(*[
            PaddedSwinBlock(out_dim, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio,
                            drop_path=float(drop_path[i]), fused_attn=fused_attn)
            for i in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, dim) -> (B, ceil(H/2), ceil(W/2), out_dim) with downsampling, else (B, H, W, dim)."""
        return self.blocks(self.downsample(x))


def drop_path_rates(max_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Per-stage drop-path rates increasing linearly from 0 to ``max_rate`` over all blocks."""
    total = sum(depths)
    rates = torch.linspace(0, max_rate, total).tolist() if total else []
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def set_fused_attn(module: nn.Module, enabled: bool) -> None:
    """Switch fused (SDPA) window attention on/off for every Swin block under ``module``."""
    for m in module.modules():
        if isinstance(m, PaddedSwinBlock):
            m.attn.fused_attn = enabled


def init_swin_weights(m: nn.Module) -> None:
    """Swin's init (``module.apply``): trunc-normal(0.02) Linear weights, zero biases, LayerNorm 1 / 0."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

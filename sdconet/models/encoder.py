"""Shared Swin-T encoder (spec 3.1) built from timm's Swin blocks, with mmdet output semantics.

Module names follow timm (``patch_embed``, ``layers.{i}.downsample``, ``layers.{i}.blocks.{j}``) plus the
three output LayerNorms ``norm1``..``norm3`` of mmdet (``out_indices=(1, 2, 3)``). timm's stages merge
patches at their *start*, so timm stage ``i``'s output is exactly mmdet's "stage ``i`` output before its
PatchMerging".
"""
from __future__ import annotations

from typing import TypedDict

from timm.layers import PatchEmbed
from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig, SwinConfig
from sdconet.models.swin_blocks import SwinStage, drop_path_rates, init_swin_weights


class EncoderOutput(TypedDict):
    """What :meth:`SwinEncoder.forward` returns (a plain dict at run time).

    Keys:
        res_x: 5 maps (B, C, H, W): [0] patch embedding (C0, /4); [1] raw stage-1 output (C0, /4, not
            normalised); [2] norm1(stage-2) (2*C0, /8); [3] norm2(stage-3) (4*C0, /16);
            [4] norm3(stage-4) (8*C0, /32). Used by the SR decoder as skips.
        maps: ``res_x[2:]``, the normalised stage 2-4 maps used for detection (the neck input).
        hw_shapes: [(H, W) at /4, /8, /16, /32].
    """

    res_x: list[Tensor]
    maps: list[Tensor]
    hw_shapes: list[tuple[int, int]]


class SwinEncoder(nn.Module):
    """Swin Transformer (patch 4, patch_norm, no absolute position embedding, relative position bias).

    Inputs of any size work: the patch embedding and patch merging pad bottom/right, every attention
    block pads to a multiple of the window (mmdet semantics, see :mod:`sdconet.models.swin_blocks`).

    Args:
        cfg: Widths, depths, window, MLP ratio and the maximum drop-path rate (linear over all blocks).
        in_chans: Input channels.

    Attributes:
        feature_info: One dict per ``res_x`` entry: ``num_chs``, ``reduction`` (w.r.t. the input),
            ``module`` (the producing module) and ``normalized``.
        map_indices: Indices of ``res_x`` returned as ``maps`` (2, 3, 4).
    """

    map_indices: tuple[int, ...] = (2, 3, 4)

    def __init__(self, cfg: SwinConfig, in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        c0, p = cfg.embed_dim, cfg.patch_size
        self.num_features = [c0 * 2 ** i for i in range(len(cfg.depths))]
        self.patch_embed = PatchEmbed(img_size=None, patch_size=p, in_chans=in_chans, embed_dim=c0,
                                      norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False,
                                      dynamic_img_pad=True)
        dpr = drop_path_rates(cfg.drop_path_rate, cfg.depths)
        self.layers = nn.Sequential(*[
            SwinStage(dim=self.num_features[max(i - 1, 0)], out_dim=self.num_features[i], depth=cfg.depths[i],
                      num_heads=cfg.num_heads[i], window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio,
                      drop_path=dpr[i], downsample=i > 0, fused_attn=cfg.fused_attn)
            for i in range(len(cfg.depths))])
        for i in range(1, len(cfg.depths)):
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.feature_info: list[dict[str, object]] = [
            dict(num_chs=c0, reduction=p, module="patch_embed", normalized=True),
            dict(num_chs=c0, reduction=p, module="layers.0", normalized=False),
        ] + [dict(num_chs=self.num_features[i], reduction=p * 2 ** i, module=f"norm{i}", normalized=True)
             for i in range(1, len(cfg.depths))]
        self.apply(init_swin_weights)

    @property
    def map_channels(self) -> list[int]:
        """Channels of ``maps`` (192, 384, 768 for Swin-T)."""
        return [int(self.feature_info[i]["num_chs"]) for i in self.map_indices]

    @property
    def map_reductions(self) -> list[int]:
        """Strides of ``maps`` w.r.t. the encoder input (8, 16, 32)."""
        return [int(self.feature_info[i]["reduction"]) for i in self.map_indices]

    def forward(self, x: Tensor) -> EncoderOutput:
        """Encode an (LR) image.

        Args:
            x: (B, 3, H, W) normalised image, any H and W.

        Returns:
            :class:`EncoderOutput` dict; ``res_x[i]`` has shape
            (B, feature_info[i]["num_chs"], ceil(H / reduction), ceil(W / reduction)).
        """
        t = self.patch_embed(x)  # (B, H/4, W/4, C0), NHWC
        res: list[Tensor] = [t]
        hw: list[tuple[int, int]] = [(t.shape[1], t.shape[2])]
        for i, stage in enumerate(self.layers):
            t = stage(t)
            if i == 0:
                res.append(t)
            else:
                res.append(getattr(self, f"norm{i}")(t))
                hw.append((t.shape[1], t.shape[2]))
        res_x = [r.permute(0, 3, 1, 2).contiguous() for r in res]
        return {"res_x": res_x, "maps": [res_x[i] for i in self.map_indices], "hw_shapes": hw}

    def load_pretrained(self, source: str) -> dict[str, list[str]]:
        """Load ImageNet Swin weights; see :func:`sdconet.models.swin_weights.load_swin_weights`."""
        from sdconet.models.swin_weights import load_swin_weights  # noqa: PLC0415

        return load_swin_weights(self, source)


def build_encoder(cfg: SDCoNetConfig) -> SwinEncoder:
    """Build the shared encoder and load ``cfg.swin.pretrained`` when set."""
    enc = SwinEncoder(cfg.swin)
    if cfg.swin.pretrained:
        enc.load_pretrained(cfg.swin.pretrained)
    return enc

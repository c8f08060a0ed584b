"""``ChannelMapperSR`` neck (spec 3.2), shared by detection and SR.

Which stage-4 map feeds the extra convs: the spec calls it the "raw stage-4 map". In the official code the
neck receives the backbone's ``outs`` (``SwinTransformerSR.forward`` returns ``norm3(stage-4)`` there) and
both extra convs read ``inputs[-1]``, i.e. the **normalised** stage-4 map, "raw" meaning "the backbone map,
not a 256-channel neck level". We follow the code: the extra detection conv and the SR conv both take
``maps[-1]`` (= ``res_x[4]``).

Module names mirror mmcv's ``ConvModule`` (``convs.{i}.conv/gn``, ``extra_convs.0``, ``extra_sr``) so an
official SDCoNet checkpoint's ``neck.*`` keys load without renaming.

Initialisation: every conv is Xavier-uniform (mmdet ``ChannelMapper``'s ``init_cfg``). In the released code the SR
conv then ends Kaiming-normal (fan_out, ReLU gain): mmengine's ``BaseModule.init_weights`` re-initialises the
direct ``ConvModule`` child ``extra_sr`` after the neck's Xavier pass, while the convs inside ``nn.ModuleList``s keep
Xavier (spec Appendix B). ``neck.sr_conv_init`` picks one (:func:`init_sr_conv`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.config import NeckConfig, SDCoNetConfig


class ConvGN(nn.Module):
    """Conv2d (no bias) + GroupNorm, no activation (mmcv ``ConvModule`` with ``act_cfg=None``).

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        kernel_size: 1 or 3.
        stride: Conv stride (padding is ``kernel_size // 2``).
        num_groups: GroupNorm groups.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, num_groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.gn = nn.GroupNorm(num_groups, out_ch)
        nn.init.xavier_uniform_(self.conv.weight)

    #: Input positions (H*W) up to which a CPU 3x3 conv runs as im2col + one GEMM (see ``_conv``).
    GEMM_MAX_POSITIONS = 256

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, ceil(H/stride), ceil(W/stride))."""
        return self.gn(self._conv(x))

    def _conv(self, x: Tensor) -> Tensor:
        """``self.conv(x)``; on the CPU, for a 3x3 conv on a small map, as ``unfold`` + matmul (same maths).

        oneDNN's convolution is slow for a few positions and many channels (the /32 map of the LR input: 8x8
        at 512 HR): the SR conv (768 -> 1536, 10.6 M weights) took 97 ms forward + backward at batch 2 on
        2 CPU threads, the same product as one GEMM 42 ms.
        """
        c = self.conv
        if x.device.type != "cpu" or c.kernel_size == (1, 1) or x.shape[-2] * x.shape[-1] > self.GEMM_MAX_POSITIONS:
            return c(x)
        b, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = c.kernel_size, c.stride, c.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (B, in_ch*kh*kw, oh*ow)
        return (c.weight.flatten(1) @ cols).view(b, -1, oh, ow)


def init_sr_conv(module: ConvGN, mode: str) -> None:
    """Initialise an SR conv's weight: ``"xavier"`` (Xavier-uniform, what :class:`ConvGN` starts with) or
    ``"kaiming_fan_out"`` (mmcv ``kaiming_init``: normal, ``mode="fan_out"``, ReLU gain, the released code).
    The GroupNorm keeps weight 1, bias 0 (as mmcv's ``ConvModule.init_weights``)."""
    if mode == "xavier":
        nn.init.xavier_uniform_(module.conv.weight)
    elif mode == "kaiming_fan_out":
        nn.init.kaiming_normal_(module.conv.weight, a=0, mode="fan_out", nonlinearity="relu")
    else:
        raise ValueError(f"sr_conv_init must be 'xavier' or 'kaiming_fan_out', got {mode!r}")


class ChannelMapperSR(nn.Module):
    """Three 1x1 ConvGN (C_i -> D), an extra 3x3 s2 ConvGN on stage-4 (-> D, /64 of the LR input) and the SR
    feature ``res_4`` = a separate 3x3 s2 ConvGN on stage-4 (-> ``sr_channels``).

    Args:
        in_channels: Channels of the encoder maps (192, 384, 768 for Swin-T).
        cfg: Output width D, GN groups, SR width, whether to build the SR conv and its init (``sr_conv_init``).
        in_reductions: Strides of the encoder maps w.r.t. the encoder input (8, 16, 32), for ``feature_info``.

    Attributes:
        feature_info: 4 dicts (``num_chs``, ``reduction``, ``module``) for the detection levels.
    """

    def __init__(self, in_channels: Sequence[int], cfg: NeckConfig,
                 in_reductions: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        d, g = cfg.out_channels, cfg.num_groups
        self.convs = nn.ModuleList([ConvGN(c, d, 1, 1, g) for c in in_channels])
        self.extra_convs = nn.ModuleList([ConvGN(in_channels[-1], d, 3, 2, g)])
        self.extra_sr: ConvGN | None = (ConvGN(in_channels[-1], cfg.sr_channels, 3, 2, g)
                                        if cfg.build_sr_feature else None)
        if self.extra_sr is not None and cfg.sr_conv_init != "xavier":
            init_sr_conv(self.extra_sr, cfg.sr_conv_init)
        reds = list(in_reductions) + [in_reductions[-1] * 2]
        self.feature_info: list[dict[str, object]] = [
            dict(num_chs=d, reduction=r, module=f"convs.{i}" if i < len(in_channels) else "extra_convs.0")
            for i, r in enumerate(reds)]
        self.sr_feature_info: dict[str, object] | None = (
            dict(num_chs=cfg.sr_channels, reduction=reds[-1], module="extra_sr") if self.extra_sr else None)

    def forward(self, maps: Sequence[Tensor], need_sr: bool = True) -> tuple[list[Tensor], Tensor | None]:
        """Map encoder features to detection levels (and the SR feature).

        Args:
            maps: Encoder maps [(B, C_1, H/8, W/8), (B, C_2, H/16, W/16), (B, C_3, H/32, W/32)]
                (normalised stage 2-4, ``EncoderOutput["maps"]``).
            need_sr: Compute ``res_4``. The official code computes and discards it at inference; pass False
                there to skip its 0.17 GMAC.

        Returns:
            ``(det_feats, res_4)``: det_feats = 4 maps (B, D, h_l, w_l) at /8, /16, /32, /64;
            res_4 = (B, sr_channels, ceil(H/64), ceil(W/64)) or None (need_sr False or no SR conv).
        """
        if len(maps) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} encoder maps, got {len(maps)}")
        outs = [conv(m) for conv, m in zip(self.convs, maps)]
        outs.append(self.extra_convs[0](maps[-1]))
        res_4 = self.extra_sr(maps[-1]) if (need_sr and self.extra_sr is not None) else None
        return outs, res_4


def build_neck(cfg: SDCoNetConfig, in_channels: Sequence[int] | None = None,
               in_reductions: Sequence[int] | None = None) -> ChannelMapperSR:
    """Build the neck; channels/strides default to the Swin config's stage 2-4 widths and strides."""
    s = cfg.swin
    in_channels = in_channels or [s.embed_dim * 2 ** i for i in (1, 2, 3)]
    in_reductions = in_reductions or [s.patch_size * 2 ** i for i in (1, 2, 3)]
    neck_cfg = cfg.neck
    if not cfg.use_sr and neck_cfg.build_sr_feature:
        neck_cfg = replace(neck_cfg, build_sr_feature=False)
    return ChannelMapperSR(in_channels, neck_cfg, in_reductions)

"""SR decoder "SRNet" (spec 3.3): a Swin-Unet/SwinIR-style decoder over the shared encoder's features.

Training-only branch: ``res_4`` (neck SR feature) -> Up -> [fuse skip, Swin stage, Up] x 3 -> fuse skip ->
Swin stage -> long skip -> LN -> PatchUnEmbed -> pixel-shuffle head -> (+ RGB mean) -> 2x image.

The Swin stages reuse :class:`~sdconet.models.swin_blocks.PaddedSwinBlock` (timm's block with the official
pad-then-shift order): the official SR block also pads to a multiple of the window, keeps the window and
shift for maps smaller than the window, uses one DropPath rate for both branches and a 2x MLP, which is
exactly that block with ``window_size=8, mlp_ratio=2``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig, SRDecoderConfig
from sdconet.models.swin_blocks import SwinStage, drop_path_rates, init_swin_weights

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class TransposedConvUp(nn.Module):
    """``Up``: LayerNorm(C_in) on tokens, then ConvTranspose2d(C_in, C_out, k=s=factor, no bias).

    Args:
        in_dim: C_in.
        out_dim: C_out.
        factor: Upsampling factor (kernel = stride).
    """

    def __init__(self, in_dim: int, out_dim: int, factor: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.upconv = nn.ConvTranspose2d(in_dim, out_dim, kernel_size=factor, stride=factor, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C_in) -> (B, factor*H, factor*W, C_out), channels last."""
        return conv_transpose_tokens(self.norm(x), self.upconv)


def conv_transpose_tokens(x: Tensor, conv: nn.ConvTranspose2d) -> Tensor:
    """``conv`` on channels-last tokens: (B, H, W, C_in) -> (B, k*H, k*W, C_out), channels last.

    A transposed convolution whose kernel equals its stride (no padding, dilation or groups) writes each input
    token into its own k x k output block, so on the CPU it runs as one matmul with the weight viewed as
    (C_in, C_out*k*k) and a reshuffle (same maths; no NCHW round trip). oneDNN's transposed convolution was slow
    there: the SR decoder's first up-projection (1536 -> 768 on the 4x4 map, 4.7 M weights) took ~60 ms forward
    + backward at batch 2 on 2 CPU threads, the matmul a few ms. Elsewhere (CUDA), or for any other geometry,
    ``conv`` itself runs.
    """
    k = conv.kernel_size
    plain = (tuple(conv.stride) == tuple(k) and tuple(conv.padding) == (0, 0) and tuple(conv.output_padding) == (0, 0)
             and tuple(conv.dilation) == (1, 1) and conv.groups == 1)
    if x.device.type != "cpu" or not plain:
        return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    b, h, w, c_in = x.shape
    (kh, kw), c_out = k, conv.out_channels
    y = x.reshape(-1, c_in) @ conv.weight.reshape(c_in, c_out * kh * kw)  # weight (C_in, C_out, kh, kw)
    y = y.view(b, h, w, c_out, kh, kw).permute(0, 1, 4, 2, 5, 3).reshape(b, h * kh, w * kw, c_out)
    return y if conv.bias is None else y + conv.bias


def fuse(x: Tensor, skip: Tensor, align: str = "resize") -> Tensor:
    """Add an encoder skip to the decoder tokens when their sizes differ (LR sides not multiples of 64).

    Args:
        x: (B, H, W, C) decoder tokens, channels last (a x2 upsampling, so H >= h and W >= w).
        skip: (B, C, h, w) encoder map.
        align: "resize": bilinearly resize the skip to x's size (align_corners=False; the released code);
            "crop": crop x bottom/right to the skip's size (the encoder padded there, so the grids stay aligned).

    Returns:
        (B, H, W, C) ("resize") or (B, h, w, C) ("crop"); identical when the sizes agree.
    """
    if skip.shape[-2:] != x.shape[1:3]:
        if align == "crop":
            h, w = skip.shape[-2:]
            if x.shape[1] < h or x.shape[2] < w:
                raise ValueError(f"decoder map {tuple(x.shape[1:3])} is smaller than its skip {(h, w)}")
            x = x[:, :h, :w]
        else:
            skip = F.interpolate(skip, size=x.shape[1:3], mode="bilinear", align_corners=False)
    return x + skip.permute(0, 2, 3, 1)


def _upsampler(scale: int, num_feat: int) -> nn.Sequential:
    """SwinIR ``Upsample``: (conv num_feat -> 4*num_feat + PixelShuffle(2)) x log2(scale), or x3 once."""
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(scale.bit_length() - 1):
            layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"upscale {scale} not supported (2^n or 3)")
    return nn.Sequential(*layers)


class SRDecoder(nn.Module):
    """SR decoder with stage widths [E, E/2, E/4, E/8] (E = ``cfg.embed_dim`` = encoder stage-4 width).

    Args:
        cfg: Decoder hyper-parameters (window 8, MLP ratio 2, depths (2, 6, 2, 2) for the paper).
        upscale: SR factor of the pixel-shuffle head (the model's ``lr.scale``).
        out_chans: Output image channels.

    Attributes:
        feature_info: Widths/strides (w.r.t. the LR input) of the four decoder stages.
    """

    def __init__(self, cfg: SRDecoderConfig, upscale: int, out_chans: int = 3) -> None:
        super().__init__()
        self.cfg, self.upscale = cfg, int(upscale)
        e = cfg.embed_dim
        widths = [e // 2 ** i for i in range(4)]
        self.widths = widths
        self.up_layer_pre = TransposedConvUp(2 * e, widths[0])
        self.up_layer0 = TransposedConvUp(widths[0], widths[1])
        self.up_layer1 = TransposedConvUp(widths[1], widths[2])
        self.up_layer2 = TransposedConvUp(widths[2], widths[3])
        dpr = drop_path_rates(cfg.drop_path_rate, cfg.depths)
        self.layers = nn.ModuleList([
            SwinStage(w, w, cfg.depths[i], cfg.num_heads[i], cfg.window_size, cfg.mlp_ratio, dpr[i],
                      downsample=False, fused_attn=cfg.fused_attn)
            for i, w in enumerate(widths)])
        self.norm = nn.LayerNorm(widths[3])
        p, u, nf = cfg.patch_size, cfg.unembed_channels, cfg.num_feat
        self.patch_unembed = nn.ConvTranspose2d(widths[3], u, kernel_size=p, stride=p)
        self.head = nn.Sequential(OrderedDict(
            conv_after_body=nn.Conv2d(u, u, 3, 1, 1),
            conv_before_upsample=nn.Conv2d(u, nf, 3, 1, 1),
            act=nn.LeakyReLU(0.01, inplace=True),
            upsample=_upsampler(upscale, nf),
            conv_last=nn.Conv2d(nf, out_chans, 3, 1, 1)))
        mean = torch.tensor(RGB_MEAN if out_chans == 3 else (0.0,) * out_chans).view(1, out_chans, 1, 1)
        self.register_buffer("rgb_mean", mean, persistent=False)
        self.feature_info = [dict(num_chs=w, reduction=p * 2 ** (3 - i), module=f"layers.{i}")
                             for i, w in enumerate(widths)]
        if cfg.keep_unused:  # official parity only: built, counted, never called
            self.input_proj_sr = nn.ModuleList([
                nn.Sequential(nn.Conv2d(c, 256, kernel_size=1), nn.GroupNorm(32, 256)) for c in widths])
            for i in range(3):
                self.add_module(f"norm{i}", nn.LayerNorm(widths[i]))
        self.apply(init_swin_weights)
        if cfg.keep_unused:
            for proj in self.input_proj_sr:
                nn.init.xavier_uniform_(proj[0].weight)
                nn.init.zeros_(proj[0].bias)

    def tokens_from_res4(self, res_4: Tensor) -> Tensor:
        """(B, 2E, h, w) -> (B, h, w, 2E) tokens; the official ``view(B, -1, C)`` scramble if configured."""
        b, c, h, w = res_4.shape
        if self.cfg.official_view_quirk:
            return res_4.contiguous().view(b, -1, c).view(b, h, w, c)
        return res_4.permute(0, 2, 3, 1)

    def forward(self, res_x: Sequence[Tensor], res_4: Tensor,
                out_size: tuple[int, int] | None = None) -> Tensor:
        """Reconstruct the 2x image.

        Args:
            res_x: Encoder skips, 5 maps (B, C, H, W): patch-embed (E/8, /4), raw stage-1 (E/8, /4),
                stage-2 (E/4, /8), stage-3 (E/2, /16), stage-4 (E, /32) (``EncoderOutput["res_x"]``).
            res_4: Neck SR feature (B, 2E, h/64, w/64).
            out_size: (H, W) of the reconstruction, LR x upscale; when the decoder's output (a multiple of
                64 x upscale) differs, it is cropped to it ("crop") or bilinearly resized ("resize", released).

        Returns:
            (B, 3, 64 * upscale * h4, 64 * upscale * w4) with (h4, w4) the ``res_4`` size, i.e. (B, 3, 2h, 2w)
            for an h x w LR whose sides are multiples of 64; (B, 3, *out_size) when ``out_size`` is given.
            Same normalised colour space as the input (plus the RGB mean when ``add_rgb_mean``).
        """
        if len(res_x) != 5:
            raise ValueError(f"res_x must hold 5 maps, got {len(res_x)}")
        a = self.cfg.size_align
        t = self.up_layer_pre(self.tokens_from_res4(res_4))
        t = self.layers[0](fuse(t, res_x[4], a))
        t = self.layers[1](fuse(self.up_layer0(t), res_x[3], a))
        t = self.layers[2](fuse(self.up_layer1(t), res_x[2], a))
        t = self.layers[3](fuse(self.up_layer2(t), res_x[1], a))
        t = self.norm(fuse(t, res_x[0], a))
        # Channels-last into the head (no NCHW copy): oneDNN's few-channel 3x3 convs at 256^2 / 512^2 and the pixel
        # shuffle are much faster there on the CPU (head forward + backward at batch 2, 2 threads: 370 -> 225 ms);
        # on CUDA the tokens come back from an NCHW conv, so this is the NCHW tensor as before.
        x = self.head(conv_transpose_tokens(t, self.patch_unembed).permute(0, 3, 1, 2))
        if self.cfg.add_rgb_mean:
            x = x + self.rgb_mean.to(x.dtype)
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            if a == "crop":
                if x.shape[-2] < out_size[0] or x.shape[-1] < out_size[1]:
                    raise ValueError(f"SR output {tuple(x.shape[-2:])} is smaller than the requested {tuple(out_size)}")
                x = x[..., :out_size[0], :out_size[1]]
            else:
                x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)
        return x

    def used_parameters(self) -> int:
        """Number of parameters on the forward path (excludes the ``keep_unused`` parity modules)."""
        unused = {id(p) for name, p in self.named_parameters()
                  if name.startswith(("input_proj_sr.", "norm0.", "norm1.", "norm2."))}
        return sum(p.numel() for p in self.parameters() if id(p) not in unused)


def build_sr_decoder(cfg: SDCoNetConfig) -> SRDecoder:
    """Build the SR decoder from the top-level config."""
    return SRDecoder(cfg.sr_decoder, cfg.lr.scale)

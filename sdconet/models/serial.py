"""Serial two-stage variant (spec 6 ``DINO_SR_TS`` / ``SA_DINO_SR_TS``; the "separate encoders" ablation).

``LR -> Swin SR encoder -> SR conv (res_4) -> SR decoder -> SR image (HR size)``, then
``SR image -> separate Swin detector -> neck -> the same detection path as SDCoNet`` (saliency or plain encoder
per the config). The detector therefore sees HR-resolution tokens (4x as many as SDCoNet's).

* ``cfg.serial_detach`` (default True, ``DINO_SR_TS``): the SR image is detached before the detector, so the two
  stages train independently at the same time. False (``SA_DINO_SR_TS``): detection gradients reach the SR network.
* Routing: ``set_sr_trainable(False)`` freezes the whole SR network (encoder, SR conv, decoder) and drops
  ``loss_sr``; the SR network still runs (without gradient) because its output is the detector's input. With the
  ``schedule`` routing the detector therefore trains on the untrained SR network's output until the unfreeze epoch.
* Differences from the official modules (parameter counts, spec Appendix A): the official serial model builds a
  full ``ChannelMapperSR`` in both stages (the SR stage's 4 detection convs and the detector's SR conv are never
  used, 2.115 M + 10.620 M); here the SR stage has only its SR conv and the detector neck has none.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig
from sdconet.models.encoder import build_encoder
from sdconet.models.lr_input import prepare_lr
from sdconet.models.neck import ChannelMapperSR, ConvGN, init_sr_conv
from sdconet.models.sdconet import DetectionBranch, Targets, hr_size_of, split_param_groups, sr_target
from sdconet.models.sr_decoder import build_sr_decoder

__all__ = ["SerialSDCoNet"]


class SerialSDCoNet(nn.Module):
    """Separate SR network and detector with the :class:`~sdconet.models.sdconet.SDCoNet` interface.

    Submodules: ``sr_backbone`` (Swin of the SR stage), ``sr_neck`` (3x3 s2 ConvGN stage-4 -> ``neck.sr_channels``),
    ``sr_decoder``; ``backbone`` (Swin of the detector), ``neck`` (detection levels only), ``detector``.

    Args:
        cfg: Model configuration with ``shared_encoder=False`` and ``use_sr=True``.
    """

    def __init__(self, cfg: SDCoNetConfig) -> None:
        super().__init__()
        if cfg.shared_encoder or not cfg.use_sr:
            raise ValueError("SerialSDCoNet needs shared_encoder=False and use_sr=True")
        self.cfg = cfg
        s, n = cfg.swin, cfg.neck
        stage_ch = [s.embed_dim * 2 ** i for i in (1, 2, 3)]
        self.sr_backbone = build_encoder(cfg)
        self.sr_neck = ConvGN(stage_ch[-1], n.sr_channels, 3, 2, n.num_groups)
        if n.sr_conv_init != "xavier":
            init_sr_conv(self.sr_neck, n.sr_conv_init)
        self.sr_decoder = build_sr_decoder(cfg)
        self.backbone = build_encoder(cfg)
        det_neck = replace(n, build_sr_feature=False)
        self.neck = ChannelMapperSR(stage_ch, det_neck, [s.patch_size * 2 ** i for i in (1, 2, 3)])
        self.detector = DetectionBranch(cfg)
        self._sr_on = True

    def sr_modules(self) -> list[nn.Module]:
        """The SR network: its Swin encoder, SR conv and SR decoder."""
        return [self.sr_backbone, self.sr_neck, self.sr_decoder]

    @property
    def sr_enabled(self) -> bool:
        """Whether the SR network trains and ``loss_sr`` is returned."""
        return self._sr_on

    @sr_enabled.setter
    def sr_enabled(self, flag: bool) -> None:
        self.set_sr_trainable(flag)

    def set_sr_trainable(self, flag: bool) -> None:
        """(Un)freeze the whole SR network and switch ``loss_sr`` (the SR network always runs: it feeds detection)."""
        for m in self.sr_modules():
            m.requires_grad_(bool(flag))
        self._sr_on = bool(flag)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters reached by both losses: the SR network when the SR image is not detached, else none."""
        if self.cfg.serial_detach:
            return []
        return [p for m in self.sr_modules() for p in m.parameters()]

    def param_groups_spec(self) -> dict[str, list[nn.Parameter]]:
        """``backbone`` (both Swin encoders, lr x0.1), ``sr`` (SR conv + SR decoder), ``other`` (the rest)."""
        return split_param_groups(self, [self.sr_backbone, self.backbone], [self.sr_neck, self.sr_decoder])

    def super_resolve(self, images: Tensor, hr_size: tuple[int, int]) -> Tensor:
        """(B, 3, H, W) or offline LR (B, 3, h, w) normalised input -> (B, 3, *hr_size) normalised SR image."""
        enc = self.sr_backbone(prepare_lr(images, self.cfg.lr))
        return self.sr_decoder(enc["res_x"], self.sr_neck(enc["maps"][-1]), out_size=hr_size)

    def forward(self, images: Tensor, targets: Targets | None = None, epoch: int = 0, *,
                return_sr: bool = False) -> Any:
        """Same contract as :meth:`SDCoNet.forward` (``return_sr`` costs nothing extra here)."""
        hr_size = hr_size_of(images, targets, self.cfg)
        grad_sr = self.training and self._sr_on  # frozen SR network: no graph needed
        with nullcontext() if grad_sr else torch.no_grad():
            sr = self.super_resolve(images, hr_size)
        det_in = sr.detach() if self.cfg.serial_detach else sr
        feats, _ = self.neck(self.backbone(det_in)["maps"], need_sr=False)
        if self.training:
            losses = self.detector(feats, hr_size, targets)
            if self._sr_on:
                ref = sr_target(images, targets or [], self.cfg)
                losses["loss_sr"] = F.l1_loss(sr.float(), ref.float()) * self.cfg.sr_loss_weight
            return losses
        dets = self.detector(feats, hr_size)
        return (dets, sr) if return_sr else dets

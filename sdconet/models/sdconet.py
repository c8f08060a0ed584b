"""The assembled SDCoNet (spec 1, 3, 4): shared Swin encoder -> {neck -> saliency -> SA encoder -> DINO; SR decoder}.

Contract (what :mod:`sdconet.engine` and :mod:`sdconet.evaluate` rely on)::

    model(images, targets, epoch=0)                 # train mode -> {name: weighted scalar loss}
    model(images)                                   # eval mode  -> [{"boxes", "scores", "labels"}] per image
    model(images, return_sr=True)                   # eval mode  -> (detections, SR (B, 3, H, W) or None)
    model.param_groups_spec() / shared_parameters() / set_sr_trainable(flag) / sr_enabled

``images`` are ImageNet-normalised (the dataset normalises): the HR tile (B, 3, H, W), or the LR tile when
``cfg.lr.on_the_fly`` is False (an offline LR set; the HR SR target then comes in ``targets[i]["hr"]`` and the HR
grid is ``scale x`` the LR size, the mod-crop of a tile the scale does not divide). Targets: ``boxes`` (N, 4) xyxy in HR pixels and
``labels`` (N,) int64 in 0..C-1. Training losses are already weighted: detection terms x
``criterion.weight_dict``, ``loss_salience`` x 2.0 (``cfg.saliency.loss_weight``), ``loss_sr`` = L1(SR, HR) x 5.0
(``cfg.sr_loss_weight``; present only while the SR branch is enabled). Tiles of a batch share one size and are not
padded (``pad_size_divisor=1``), so no padding masks are used.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdconet.models.box_ops import normalize_xyxy_to_cxcywh
from sdconet.models.config import SDCoNetConfig
from sdconet.models.criterion import build_criterion, build_postprocess
from sdconet.models.deformable_encoder import build_deformable_encoder
from sdconet.models.encoder import build_encoder
from sdconet.models.host import device_tensor
from sdconet.models.lr_input import prepare_lr
from sdconet.models.memory_transform import build_memory_transform
from sdconet.models.neck import build_neck
from sdconet.models.position import build_position_encoding, flatten_levels
from sdconet.models.sa_encoder import build_sa_encoder
from sdconet.models.saliency import SaliencyLoss, build_saliency, key_token_selection
from sdconet.models.sr_decoder import build_sr_decoder
from sdconet.models.two_stage import build_dino_head

__all__ = ["DetectionBranch", "SDCoNet", "hr_size_of", "sr_target", "check_targets", "split_param_groups"]

Targets = Sequence[dict[str, Any]]


def hr_size_of(images: Tensor, targets: Targets | None, cfg: SDCoNetConfig) -> tuple[int, int]:
    """(H, W) of the HR grid the input covers: the input size (on the fly), or ``lr.scale x`` the offline LR size.

    With an offline LR tile of ``H // s`` rows the input covers the HR tile's top-left ``s * (H // s)`` rows (the
    mod-crop of the SR literature), so that is the size of the reconstruction and of the box normalisation;
    boxes in HR pixels keep their meaning (the grids share the origin).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) normalised RGB, got shape {tuple(images.shape)}")
    if cfg.lr.on_the_fly:
        return int(images.shape[-2]), int(images.shape[-1])
    return int(images.shape[-2]) * cfg.lr.scale, int(images.shape[-1]) * cfg.lr.scale


def sr_target(images: Tensor, targets: Targets, cfg: SDCoNetConfig) -> Tensor:
    """(B, 3, H, W) normalised HR reference of the SR loss: the input itself, or the stacked ``targets[i]["hr"]``."""
    if cfg.lr.on_the_fly:
        return images
    if not all("hr" in t for t in targets):
        raise ValueError("offline LR input (lr.on_the_fly=False) needs targets[i]['hr'] for the SR loss "
                         "(build the TileDataset with lr_dir)")
    h, w = hr_size_of(images, targets, cfg)  # the mod-cropped HR tile
    return torch.stack([t["hr"][..., :h, :w] for t in targets]).to(images.device, images.dtype)


def check_targets(targets: Targets | None, batch: int) -> Targets:
    """Validate the training targets (one dict with ``boxes`` (N, 4) and ``labels`` (N,) per image)."""
    if targets is None:
        raise ValueError("training mode needs targets (one dict with 'boxes' and 'labels' per image)")
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} target dicts for {batch} images")
    for i, t in enumerate(targets):
        b, lb = t["boxes"], t["labels"]
        if b.dim() != 2 or b.shape[-1] != 4 or lb.shape[0] != b.shape[0]:
            raise ValueError(f"target {i}: boxes must be (N, 4) and labels (N,), got {tuple(b.shape)} / "
                             f"{tuple(lb.shape)}")
    return targets


class DetectionBranch(nn.Module):
    """Neck levels -> tokens -> saliency -> (saliency-aware or plain) encoder -> DINO head -> losses / detections.

    Submodules: ``pos_encoding``, ``level_embed``, ``memory_transform`` (shared by the saliency module and the
    two-stage proposal generator, also reachable as ``head.memory_transform``), ``saliency`` (None without
    saliency), ``encoder``, ``head``, ``criterion``, ``postprocess``.

    Args:
        cfg: Model configuration.
    """

    def __init__(self, cfg: SDCoNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos_encoding, self.level_embed = build_position_encoding(cfg)
        self.memory_transform = build_memory_transform(cfg)
        self.head = build_dino_head(cfg, self.memory_transform)
        self.saliency = build_saliency(cfg) if cfg.use_saliency else None
        self.saliency_loss = SaliencyLoss(cfg.saliency) if cfg.use_saliency else None
        if cfg.use_saliency:
            tied = self.head.enc_cls_head if cfg.enhance_mcsp == "tied" else None
            self.encoder: nn.Module = build_sa_encoder(cfg, enhance_mcsp=tied)
        else:
            self.encoder = build_deformable_encoder(cfg)
        self.criterion = build_criterion(cfg)
        self.postprocess = build_postprocess(cfg)
        self.filtering = any(r < 1.0 for r in (*cfg.level_filter_ratio, *cfg.layer_filter_ratio))

    def _encode(self, feats: Sequence[Tensor]) -> tuple[Any, Tensor, Any]:
        """(multi-level inputs, memory (B, N, d), saliency output or None)."""
        ml = flatten_levels(feats, self.pos_encoding, self.level_embed)
        if self.saliency is None:
            return ml, self.encoder(ml.feat, ml.pos, ml.spatial_shapes, ml.valid_ratios), None
        sal = self.saliency(ml.feat + ml.pos, None, ml.spatial_shapes, self.memory_transform)
        inds, focus = None, None
        if self.filtering:  # with all ratios 1 every token is kept: the gathers are skipped (same result)
            sel = key_token_selection(sal.level_scores, self.cfg.level_filter_ratio, self.cfg.layer_filter_ratio,
                                      None, ml.level_start_index)
            inds, focus = [sel.for_layer(k) for k in range(self.cfg.enc_layers)], sel.focus_token_nums
        memory = self.encoder(ml.feat, ml.pos, ml.spatial_shapes, ml.valid_ratios, sal.scores, None, inds, focus)
        return ml, memory, sal

    def forward(self, feats: Sequence[Tensor], hr_size: tuple[int, int],
                targets: Targets | None = None) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Detect on the neck levels.

        Args:
            feats: 4 maps (B, d, h_l, w_l), finest first.
            hr_size: (H, W) of the HR tile (box normalisation, saliency strides, output pixel scale).
            targets: Training targets (``boxes`` xyxy HR pixels, ``labels``); used only in training mode.

        Returns:
            Training: weighted losses (criterion terms and ``loss_salience``). Eval: per image ``boxes`` (K, 4)
            xyxy HR pixels, ``scores`` (K,), ``labels`` (K,), K <= 300.
        """
        ml, memory, sal = self._encode(feats)
        if not self.training:
            out = self.head(memory, ml.spatial_shapes, ml.valid_ratios)
            sizes = device_tensor([hr_size], torch.float32, memory.device).expand(memory.shape[0], 2)
            return self.postprocess(out, sizes)
        targets = check_targets(targets, memory.shape[0])
        det_t = [{"labels": t["labels"].to(memory.device).long(),
                  "boxes": normalize_xyxy_to_cxcywh(t["boxes"].to(memory.device).float(), hr_size)} for t in targets]
        out = self.head(memory, ml.spatial_shapes, ml.valid_ratios, None, det_t)
        raw = self.criterion(out, det_t)
        losses = {k: v * self.criterion.weight_dict[k] for k, v in raw.items()}
        if sal is not None and self.saliency_loss is not None:
            boxes = [t["boxes"].to(memory.device).float() for t in targets]
            losses.update(self.saliency_loss(sal.level_logits, boxes, hr_size))
        return losses


class SDCoNet(nn.Module):
    """SDCoNet with the shared encoder (SA_DINO_SR_GR and its ablations, see :class:`SDCoNetConfig`).

    Submodules: ``backbone`` (Swin-T, lr x0.1), ``neck`` (``ChannelMapperSR``; ``neck.extra_sr`` is the SR conv),
    ``sr_decoder`` (None when ``use_sr`` is False), ``detector`` (:class:`DetectionBranch`).

    Args:
        cfg: Model configuration with ``shared_encoder=True``.
    """

    def __init__(self, cfg: SDCoNetConfig) -> None:
        super().__init__()
        if not cfg.shared_encoder:
            raise ValueError("SDCoNet needs shared_encoder=True; use SerialSDCoNet (build_model) otherwise")
        self.cfg = cfg
        self.backbone = build_encoder(cfg)
        self.neck = build_neck(cfg)
        self.sr_decoder = build_sr_decoder(cfg) if cfg.use_sr else None
        self.detector = DetectionBranch(cfg)
        self._sr_on = self.sr_decoder is not None

    # ------------------------------------------------------------------ routing / optimiser interface
    def sr_modules(self) -> list[nn.Module]:
        """The SR-only modules: the SR decoder and the neck's SR conv (empty without an SR branch)."""
        mods = [self.sr_decoder, self.neck.extra_sr]
        return [m for m in mods if m is not None]

    @property
    def sr_enabled(self) -> bool:
        """Whether the SR branch runs in training and ``loss_sr`` is returned."""
        return self._sr_on

    @sr_enabled.setter
    def sr_enabled(self, flag: bool) -> None:
        self.set_sr_trainable(flag)

    def set_sr_trainable(self, flag: bool) -> None:
        """(Un)freeze the SR decoder and the neck's SR conv and switch ``loss_sr``; a no-op without SR branch."""
        if self.sr_decoder is None:
            self._sr_on = False
            return
        for m in self.sr_modules():
            m.requires_grad_(bool(flag))
        self._sr_on = bool(flag)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive both the detection and the SR gradient: the shared Swin encoder."""
        return list(self.backbone.parameters())

    def param_groups_spec(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups ``backbone`` (Swin, lr x0.1), ``sr`` (SR decoder + neck SR conv) and ``other``.

        Every parameter appears once; frozen ones are included (the SR group is frozen in routing phase 1).
        """
        return split_param_groups(self, [self.backbone], self.sr_modules())

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, targets: Targets | None = None, epoch: int = 0, *,
                return_sr: bool = False) -> Any:
        """Train: weighted losses; eval: detections (and the SR image with ``return_sr``). See the module doc.

        Args:
            images: (B, 3, H, W) normalised HR tiles (or LR tiles with an offline LR set).
            targets: Training targets; ignored in eval mode.
            epoch: Current 0-based epoch (informational; the routing phase is set by ``set_sr_trainable``).
            return_sr: Eval mode only: also run the SR decoder and return (B, 3, H, W) (None without SR branch).
        """
        hr_size = hr_size_of(images, targets, self.cfg)
        enc = self.backbone(prepare_lr(images, self.cfg.lr))
        has_sr = self.sr_decoder is not None
        run_sr = has_sr and (self._sr_on if self.training else return_sr)
        feats, res_4 = self.neck(enc["maps"], need_sr=run_sr)
        sr = self.sr_decoder(enc["res_x"], res_4, out_size=hr_size) if run_sr else None
        if self.training:
            losses = self.detector(feats, hr_size, targets)
            if sr is not None:
                ref = sr_target(images, targets or [], self.cfg)
                losses["loss_sr"] = F.l1_loss(sr.float(), ref.float()) * self.cfg.sr_loss_weight
            return losses
        dets = self.detector(feats, hr_size)
        return (dets, sr) if return_sr else dets


def split_param_groups(model: nn.Module, backbones: Sequence[nn.Module],
                       sr_mods: Sequence[nn.Module]) -> dict[str, list[nn.Parameter]]:
    """Split ``model.parameters()`` (each once) into the backbone / sr / other optimiser groups."""
    bb = {id(p) for m in backbones for p in m.parameters()}
    sr = {id(p) for m in sr_mods for p in m.parameters()}
    out: dict[str, list[nn.Parameter]] = {"backbone": [], "sr": [], "other": []}
    for p in model.parameters():
        out["backbone" if id(p) in bb else "sr" if id(p) in sr else "other"].append(p)
    return out

"""Typed configuration of SDCoNet (spec sections 3 and 10), presets and dict round trips.

Pure dataclasses (no torch import). Every sub-config has the paper/official defaults; the ``tiny`` preset
keeps the same code path with minimal widths and depths so that CPU tests run in seconds.

Example:
    >>> cfg = preset("tiny", scale=2, num_classes=10, swin={"drop_path_rate": 0.0})
    >>> cfg2 = from_dict(to_dict(cfg))          # round trip
    >>> from_dict({"swin": {"embed_dims": 96}})  # raises ConfigError naming 'swin.embed_dims'
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from benchcore import config as _config

INF = math.inf


class ConfigError(_config.ConfigError):
    """An invalid or unknown configuration entry (the message names the dotted key path)."""


def _level_ranges(value: Any) -> tuple[tuple[float, float], ...]:
    """``[[-1, 64], ..., [256, "inf"]]`` -> float pairs; an upper bound ``None``/``"inf"``/``"Infinity"`` is ``inf``."""
    try:
        return tuple((float(lo), INF if hi in (None, "inf", "Infinity") else float(hi)) for lo, hi in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must be a list of (low, high) pairs: {exc}") from None


@dataclass
class SwinConfig:
    """Shared Swin-T encoder (spec 3.1, mmdet ``SwinTransformer`` semantics)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    patch_size: int = 4
    #: Local ``.pth``/``.safetensors`` (timm, official Microsoft or mmdet layout) or ``"timm"`` to let timm
    #: download ``swin_tiny_patch4_window7_224`` (needs ``HF_HUB_OFFLINE=0`` and internet). None: random init.
    pretrained: str | None = None
    #: Use ``F.scaled_dot_product_attention`` inside the window attention (same maths, faster).
    fused_attn: bool = True


@dataclass
class NeckConfig:
    """``ChannelMapperSR`` neck (spec 3.2)."""

    out_channels: int = 256
    num_groups: int = 32
    #: Channels of the SR feature ``res_4`` (2 x stage-4 channels in the official code).
    sr_channels: int = 1536
    #: Build the 3x3 s2 SR conv at all (False for detection-only variants such as SA_DINO_BG).
    build_sr_feature: bool = True
    #: Init of the SR conv's weight: "xavier" (Xavier-uniform, as every other neck conv and the spec body) or
    #: "kaiming_fan_out" (the released code: mmengine re-initialises the ``extra_sr`` ConvModule after the neck's
    #: Xavier ``init_cfg``, ending Kaiming-normal, fan_out, ReLU gain; spec Appendix B).
    sr_conv_init: str = "xavier"


@dataclass
class SRDecoderConfig:
    """SR decoder "SRNet" (spec 3.3)."""

    embed_dim: int = 768
    depths: tuple[int, ...] = (2, 6, 2, 2)
    num_heads: tuple[int, ...] = (6, 12, 6, 3)
    window_size: int = 8
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    # The upscale factor is ``lr.scale`` (one owner: the run's degradation), not a field of its own.
    patch_size: int = 4
    #: Channels after the PatchUnEmbed transposed conv (``embed_dim // 24`` = 32 in the official code).
    unembed_channels: int = 32
    #: Channels of the pixel-shuffle upsampler (``num_feat`` = 16 in the official code).
    num_feat: int = 16
    #: Reproduce the official ``res_4.view(B, -1, C)`` tokenisation bug (spec 3.3 / 9.8).
    official_view_quirk: bool = False
    #: Also build the 0.37 M parameters the official module holds but never uses (parity counting only).
    keep_unused: bool = False
    #: Add the SwinIR RGB mean (0.4488, 0.4371, 0.4040) to the output, as the official code does.
    add_rgb_mean: bool = True
    fused_attn: bool = True
    #: How sizes are reconciled when the LR sides are not multiples of 64 (e.g. x3 on 256 px tiles): "crop"
    #: crops each x2-upsampled decoder map bottom/right to its encoder skip (Swin pads at the bottom/right, so
    #: the grids stay aligned) and the output to LR x upscale; "resize" is the released code's bilinear resize
    #: of the skip and of the output (spec 3.3 items 6 and 10). Identical when the sides are multiples of 64
    #: (the released configuration: 512 px HR tiles at x2).
    size_align: str = "crop"


@dataclass
class SaliencyConfig:
    """Multi-scale saliency predictor and its supervision (spec 3.4)."""

    #: "fixed": alpha = 1.0 frozen (SA_DINO_SR_GR); "learnable": U(-alpha_range, alpha_range) (SA_DINO_SR).
    alpha_mode: str = "fixed"
    alpha_init: float = 1.0
    alpha_range: float = 0.3
    loss_weight: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    #: Level ranges on max(l, t, r, b) in HR pixels, levels 0..3 (lower bound exclusive, upper inclusive).
    level_ranges: tuple[tuple[float, float], ...] = field(
        default=((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, INF)), metadata={"convert": _level_ranges})


@dataclass
class LRConfig:
    """How the low-quality input is made (spec 1 / 2.1)."""

    #: HR / LR size ratio, also the SR decoder's upscale. No default: the run's degradation sets it (the run
    #: specification, ``sdconet.spec``), or ``preset(..., scale=N)`` when building a model by hand.
    scale: int | None = None
    kernel: str = "bicubic"
    #: True: downsample the normalised HR tensor inside the model (official). False: the input is already LR.
    on_the_fly: bool = True


@dataclass
class SDCoNetConfig:
    """The whole model. Detector fields follow spec 3.5/3.6 and 5 (used by the detection half).

    Assembly switches (``sdconet.models.build.build_model``):

    * ``use_saliency``: False drops the score predictor, the key-token selection and the saliency loss and
      uses a plain deformable (DINO) encoder (``sdconet.models.deformable_encoder``).
    * ``use_sr``: False builds neither the SR decoder nor the neck's SR conv (SA_DINO_BG).
    * ``shared_encoder``: False builds ``SerialSDCoNet`` (a separate Swin SR network, then a separate Swin
      detector on its HR-size output); ``serial_detach`` detaches the SR image before the detector
      (DINO_SR_TS; False = SA_DINO_SR_TS, detection gradients reach the SR network).
    * ``deform_residual``: residual around the saliency-aware encoder's deformable attention.
      ``"standard"`` (default, correct): ``x <- LN(x + MSDA(x + pos))`` as in Salience-DETR.
      ``"official"``: the released code's ``x <- LN(2x + pos + MSDA(x + pos))``; it passes ``query = x + pos``
      to mmcv's ``MultiScaleDeformableAttention``, whose built-in identity residual then adds ``x + pos`` on
      top of the layer's own ``+ x``. A bug, kept behind this flag for bit-faithful reproduction only.
    * ``topk_score_mode``: ranking of the encoder pre-attention tokens, ``"official"`` (product of two raw
      logits, spec 9 item 9) or ``"fixed"`` (product of probabilities).
    * ``head_init``: the 7 (class, box) head pairs start ``"independent"`` (each drawn on its own) or as
      ``"copies"``, identical deep copies of one pair (the released mmdet ``DeformableDETRHead``; spec Appendix B);
      either way the prior bias and the zeroed last box layer follow, and the pairs are never shared in training.
    """

    swin: SwinConfig = field(default_factory=SwinConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    sr_decoder: SRDecoderConfig = field(default_factory=SRDecoderConfig)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    lr: LRConfig = field(default_factory=LRConfig)
    # detector (DINO-4scale + saliency-aware encoder)
    num_classes: int = 10
    num_queries: int = 300
    enc_layers: int = 6
    dec_layers: int = 6
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.0
    num_feature_levels: int = 4
    enc_n_points: int = 4
    dec_n_points: int = 4
    pos_temperature: float = 20.0
    level_filter_ratio: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    layer_filter_ratio: tuple[float, ...] = (1.0,) * 6
    topk_sa: int = 100
    bg_embed_size: int = 200
    #: "faithful": the encoder class scorer stays untrained (official); "tied": tie it to the encoder head.
    enhance_mcsp: str = "faithful"
    num_dn_queries: int = 100
    label_noise_scale: float = 0.5
    box_noise_scale: float = 1.0
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_cls_weight: float = 1.0
    loss_bbox_weight: float = 5.0
    loss_giou_weight: float = 2.0
    # multi-task (the gradient-routing schedule is the training config's: train.routing, train.unfreeze_epoch)
    sr_loss_weight: float = 5.0
    use_saliency: bool = True
    use_sr: bool = True
    shared_encoder: bool = True
    serial_detach: bool = True
    deform_residual: str = "standard"
    topk_score_mode: str = "official"
    head_init: str = "independent"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check cross-field consistency; raises :class:`ConfigError` naming the offending keys."""
        s, n, d = self.swin, self.neck, self.sr_decoder
        _check(len(s.depths) == len(s.num_heads) == 4, "swin.depths/swin.num_heads must have 4 stages")
        for i, h in enumerate(s.num_heads):
            _check((s.embed_dim * 2 ** i) % h == 0, f"swin.num_heads[{i}]={h} must divide {s.embed_dim * 2 ** i}")
        _check(n.out_channels == self.hidden_dim, "neck.out_channels must equal hidden_dim")
        _check(n.out_channels % n.num_groups == 0, "neck.num_groups must divide neck.out_channels")
        _check(n.sr_channels % n.num_groups == 0, "neck.num_groups must divide neck.sr_channels")
        _check(self.hidden_dim % 2 == 0 and self.hidden_dim % self.nheads == 0,
               "hidden_dim must be even and divisible by nheads")
        sc = self.lr.scale
        _check(isinstance(sc, int) and not isinstance(sc, bool) and sc >= 1,
               f"lr.scale must be the run's degradation scale, an integer >= 1 (got {sc!r}; the run spec sets it, "
               f"or preset(..., scale=N))")
        if self.use_sr:
            _check(n.build_sr_feature, "use_sr=True needs neck.build_sr_feature=True")
            _check(d.embed_dim == s.embed_dim * 8,
                   f"sr_decoder.embed_dim must equal the stage-4 width swin.embed_dim*8 = {s.embed_dim * 8} "
                   "(the decoder adds the encoder skips)")
            _check(n.sr_channels == 2 * d.embed_dim, "neck.sr_channels must equal 2 * sr_decoder.embed_dim")
            _check(len(d.depths) == len(d.num_heads) == 4, "sr_decoder.depths/num_heads must have 4 stages")
            for i, h in enumerate(d.num_heads):
                _check((d.embed_dim // 2 ** i) % h == 0,
                       f"sr_decoder.num_heads[{i}]={h} must divide {d.embed_dim // 2 ** i}")
            _check(self.lr.scale in (2, 3, 4, 8), "lr.scale (the SR decoder's upscale) must be 2, 3, 4 or 8 "
                   "with the SR branch")
            _check(d.size_align in ("crop", "resize"), "sr_decoder.size_align must be 'crop' or 'resize'")
        _check(self.num_feature_levels == 4, "num_feature_levels must be 4 (3 maps + 1 extra level)")
        _check(len(self.level_filter_ratio) == self.num_feature_levels,
               "level_filter_ratio needs one entry per feature level")
        _check(len(self.layer_filter_ratio) == self.enc_layers, "layer_filter_ratio needs one entry per enc layer")
        for name in ("level_filter_ratio", "layer_filter_ratio"):
            _check(all(0.0 < r <= 1.0 for r in getattr(self, name)), f"{name} entries must lie in (0, 1]")
        sal = self.saliency
        _check(sal.alpha_mode in ("fixed", "learnable"), "saliency.alpha_mode must be 'fixed' or 'learnable'")
        _check(len(sal.level_ranges) == self.num_feature_levels, "saliency.level_ranges needs one range per level")
        _check(self.lr.kernel in ("bicubic", "bilinear"), "lr.kernel must be 'bicubic' or 'bilinear'")
        _check(self.enhance_mcsp in ("faithful", "tied"), "enhance_mcsp must be 'faithful' or 'tied'")
        _check(self.deform_residual in ("standard", "official"), "deform_residual must be 'standard' or 'official'")
        _check(self.topk_score_mode in ("official", "fixed"), "topk_score_mode must be 'official' or 'fixed'")
        _check(self.head_init in ("independent", "copies"), "head_init must be 'independent' or 'copies'")
        _check(n.sr_conv_init in ("xavier", "kaiming_fan_out"),
               "neck.sr_conv_init must be 'xavier' or 'kaiming_fan_out'")
        _check(self.shared_encoder or self.use_sr, "shared_encoder=False (serial SR -> detector) needs use_sr=True")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


_TINY: dict[str, Any] = {
    "swin": {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 2, 4), "window_size": 4,
             "drop_path_rate": 0.1},
    "neck": {"out_channels": 32, "num_groups": 8, "sr_channels": 384},
    "sr_decoder": {"embed_dim": 192, "depths": (1, 1, 1, 1), "num_heads": (2, 2, 2, 1), "window_size": 4,
                   "drop_path_rate": 0.05, "unembed_channels": 16, "num_feat": 8},
    "hidden_dim": 32, "nheads": 4, "dim_feedforward": 64, "enc_layers": 2, "dec_layers": 2,
    "layer_filter_ratio": (1.0, 1.0), "num_queries": 20, "topk_sa": 10, "num_dn_queries": 10,
    "bg_embed_size": 50,
}

PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "tiny": _TINY}


def preset(name: str, scale: int | None = None, **overrides: Any) -> SDCoNetConfig:
    """Build a named preset, then apply overrides.

    Args:
        name: ``"paper"`` (official Swin-T / SRNet widths) or ``"tiny"`` (CPU-test widths, same code path).
        scale: the HR / LR ratio (``lr.scale``, also the SR upscale). It has no default: a run takes it from its
            degradation; by hand, state it (the released configuration is ``scale=2``). May instead come in
            ``overrides`` as ``lr={"scale": N}`` or ``**{"lr.scale": N}``.
        **overrides: top-level fields (``num_classes=10``), nested dicts merged into a sub-config
            (``swin={"drop_path_rate": 0.0}``) or dotted keys (``**{"swin.window_size": 8}``).

    Returns:
        The validated configuration.
    """
    if scale is not None:
        overrides = {**overrides, "lr.scale": scale}
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    d = _config.merge(copy.deepcopy(PRESETS[name]), _config.nest(overrides, error=ConfigError))
    return from_dict(d)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples kept; ``inf`` kept as a float)."""
    return dataclasses.asdict(cfg)


def from_dict(d: Mapping[str, Any], cls: type = SDCoNetConfig, source: str | None = None, prefix: str = "") -> Any:
    """Build a config from a (possibly partial) nested dict; missing keys take their defaults.

    Uses :func:`benchcore.config.from_dict`: lists become tuples, ``"inf"``/``None`` inside ``level_ranges``
    become ``inf``.

    Args:
        d: the nested mapping (or a config instance).
        cls: the config class (a sub-config such as :class:`SwinConfig` works too).
        source: the file named at the start of an error message (None: not named).
        prefix: dotted path of ``d`` in a larger config (``"model."``) for the key paths of errors.

    Raises:
        ConfigError: for an unknown key (named by its dotted path, with a suggestion) or a bad value.
    """
    return _config.from_dict(cls, d, source=source, prefix=prefix, error=ConfigError)

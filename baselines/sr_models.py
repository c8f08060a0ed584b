"""Super-resolution baselines built from BasicSR's own architectures (basicsr-volta 1.4.4).

``build_sr_model(name, scale, preset)`` returns an ``nn.Module`` mapping an RGB float tensor in
[0, 1] of shape (N, 3, h, w) to (N, 3, scale*h, scale*w). Presets:

* ``edsr`` / paper: EDSR-baseline (Lim et al. 2017): 64 features, 16 residual blocks, res_scale 1,
  ``img_range=255`` with the DIV2K RGB mean, pixel-shuffle upsampler. Scales 2, 3, 4.
* ``rrdb`` / paper: RRDBNet of ESRGAN (Wang et al. 2018): 64 features, 23 RRDB blocks, growth 32.
  Scale 4 is native; BasicSR handles x2 (and x1) by pixel-unshuffling the input first, so the input
  height/width must be even: our subclass reflect-pads to a multiple of 2 and crops the output.
  Scale 3 is not supported by the architecture (clear error).
* ``swinir`` / paper: SwinIR **classical** image SR (Liang et al. 2021, the DF2K setting):
  ``img_size=64, window_size=8, embed_dim=180, depths=num_heads=(6,)*6, mlp_ratio=2``,
  ``upsampler="pixelshuffle"``, ``resi_connection="1conv"``, ``img_range=1``. (The *lightweight*
  variant, embed 60 / 4 stages / ``pixelshuffledirect``, is not what the comparison calls SwinIR.)
  BasicSR's SwinIR does not pad (the official repo pads in the test script), so our subclass
  reflect-pads to a multiple of the window size and crops the output: any tile size works.

``tiny`` presets keep the same code paths with a handful of channels, for CPU tests only.

The subclasses keep BasicSR's parameter names, so official BasicSR/SwinIR ``params`` state dicts
load unchanged (:func:`load_sr_weights`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

PRESETS = ("paper", "tiny")

_EDSR = {"paper": dict(num_feat=64, num_block=16), "tiny": dict(num_feat=16, num_block=2)}
_RRDB = {"paper": dict(num_feat=64, num_block=23, num_grow_ch=32),
         "tiny": dict(num_feat=16, num_block=1, num_grow_ch=8)}
_SWINIR = {"paper": dict(img_size=64, window_size=8, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6,
                         mlp_ratio=2.0),
           "tiny": dict(img_size=16, window_size=4, embed_dim=24, depths=(2,), num_heads=(2,),
                        mlp_ratio=2.0)}


def _pad_forward(module: nn.Module, x: torch.Tensor, multiple: int, scale: int) -> torch.Tensor:
    """Pad ``x`` (bottom/right) to a multiple of ``multiple``, run the parent forward, crop back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    out = super(type(module), module).forward(x)
    return out[..., : h * scale, : w * scale]


def _archs() -> tuple[type, type, type]:
    """Import BasicSR lazily: ``import basicsr`` pulls in its whole registry (~5 s)."""
    from basicsr.archs.edsr_arch import EDSR  # noqa: PLC0415
    from basicsr.archs.rrdbnet_arch import RRDBNet  # noqa: PLC0415
    from basicsr.archs.swinir_arch import SwinIR  # noqa: PLC0415

    return EDSR, RRDBNet, SwinIR


def _padded_classes() -> dict[str, type]:
    edsr_cls, rrdb_cls, swinir_cls = _archs()

    class PaddedRRDBNet(rrdb_cls):  # type: ignore[misc, valid-type]
        """RRDBNet that accepts odd sizes at x2/x1 (pixel-unshuffle needs multiples of 2/4)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
            multiple = {2: 2, 1: 4}.get(self.scale, 1)
            return _pad_forward(self, x, multiple, self.scale)

    class PaddedSwinIR(swinir_cls):  # type: ignore[misc, valid-type]
        """SwinIR that accepts any size (reflect pad to the window size, as the official test code)."""

        def __init__(self, *args: Any, window_size: int = 7, **kwargs: Any):
            super().__init__(*args, window_size=window_size, **kwargs)
            self.pad_multiple = int(window_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
            return _pad_forward(self, x, self.pad_multiple, self.upscale)

    return {"edsr": edsr_cls, "rrdb": PaddedRRDBNet, "swinir": PaddedSwinIR}



@dataclass(frozen=True)
class SRModelEntry:
    """One registered SR architecture: ``build(scale, preset) -> nn.Module`` (RGB [0, 1] in, ``scale`` x out),
    the architecture arguments of each preset (recorded for provenance) and the scales it supports."""

    build: Callable[[int, str], nn.Module]
    presets: Mapping[str, Mapping[str, Any]]
    scales: tuple[int, ...]


#: Every learned SR model of the suite, by name (``sr_model`` of the experiments sheet, ``sr_<name>`` section of
#: the baselines config, ``results/.../sr/<name>/``). Add one with :func:`register_sr_model` (docs/recipes.md).
SR_REGISTRY: dict[str, SRModelEntry] = {}


def register_sr_model(name: str, presets: Mapping[str, Mapping[str, Any]], scales: tuple[int, ...]
                      ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(scale, **preset_kwargs) -> nn.Module`` as the SR model ``name``.

    ``presets`` must define ``paper`` and ``tiny`` (the CPU-test size). The module maps (N, 3, h, w) RGB in [0, 1]
    to (N, 3, scale * h, scale * w) for any h, w (pad and crop inside if the architecture needs multiples).
    """
    if not name.isidentifier() or name != name.lower() or name in ("bicubic", "nearest", "none", "joint"):
        raise ValueError(f"SR model name {name!r} must be a lower-case identifier and not a reserved word")
    missing = [p for p in PRESETS if p not in presets]
    if missing:
        raise ValueError(f"SR model {name!r}: presets {missing} are missing")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        SR_REGISTRY[name] = SRModelEntry(lambda scale, preset: fn(scale, **presets[preset]), presets, tuple(scales))
        return fn

    return deco


def sr_model_names() -> tuple[str, ...]:
    """Names of the registered learned SR models, in registration order."""
    return tuple(SR_REGISTRY)


@register_sr_model("edsr", _EDSR, scales=(2, 3, 4))
def _build_edsr(scale: int, **kw: Any) -> nn.Module:
    return _padded_classes()["edsr"](num_in_ch=3, num_out_ch=3, upscale=scale, res_scale=1, img_range=255.0,
                                     rgb_mean=(0.4488, 0.4371, 0.4040), **kw)


@register_sr_model("rrdb", _RRDB, scales=(1, 2, 4))  # x2 / x1 through BasicSR's pixel-unshuffle; no x3
def _build_rrdb(scale: int, **kw: Any) -> nn.Module:
    return _padded_classes()["rrdb"](num_in_ch=3, num_out_ch=3, scale=scale, **kw)


@register_sr_model("swinir", _SWINIR, scales=(2, 3, 4, 8))
def _build_swinir(scale: int, **kw: Any) -> nn.Module:
    return _padded_classes()["swinir"](upscale=scale, in_chans=3, img_range=1.0, upsampler="pixelshuffle",
                                       resi_connection="1conv", **kw)


def build_sr_model(name: str, scale: int, preset: str = "paper") -> nn.Module:
    """Build a registered SR network; input/output RGB in [0, 1]."""
    name = name.lower()
    if name not in SR_REGISTRY:
        raise ValueError(f"unknown SR model {name!r}; expected one of {sr_model_names()}")
    if preset not in PRESETS:
        raise ValueError(f"unknown SR preset {preset!r}; expected one of {PRESETS}")
    entry, scale = SR_REGISTRY[name], int(scale)
    if scale not in entry.scales:
        raise ValueError(f"SR model {name!r} supports scale {', '.join(map(str, entry.scales))}, got {scale}")
    model = entry.build(scale, preset)
    model.sdconet_spec = {"name": name, "scale": scale, "preset": preset}  # type: ignore[assignment]
    return model


def sr_model_spec(name: str, scale: int, preset: str) -> dict[str, Any]:
    """The constructor arguments of a preset (recorded in checkpoints and metrics for provenance)."""
    table = SR_REGISTRY[name.lower()].presets
    return {"name": name.lower(), "scale": int(scale), "preset": preset,
            "arch_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in table[preset].items()}}


def load_sr_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a BasicSR-style file (``params``/``params_ema`` key), our checkpoint (``model``) or a bare state dict."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(blob, dict):
        for key in ("model", "params_ema", "params"):
            if key in blob and isinstance(blob[key], dict):
                blob = blob[key]
                break
    model.load_state_dict(blob, strict=strict)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

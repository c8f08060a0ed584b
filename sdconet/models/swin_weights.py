"""Pretrained Swin weights for :class:`~sdconet.models.encoder.SwinEncoder` (optional; never needed by tests).

Accepted sources:
  * a local ``.pth``/``.pt``/``.bin``/``.safetensors`` file in any of three layouts, detected from the keys:
      - timm (``layers.{i}.downsample`` at the start of stages 1-3, ``head.fc``),
      - official Microsoft Swin (``swin_tiny_patch4_window7_224.pth``: ``{"model": ...}``, downsample at
        the end of stages 0-2),
      - mmdet (``stages.*``, ``attn.w_msa``, ``ffn.layers``, unfold-ordered PatchMerging; optionally under
        ``backbone.`` as in a detector checkpoint, whose trained ``norm1..3`` are then loaded too);
  * ``"timm"`` (or ``"timm:<model_name>"``): timm downloads ``swin_tiny_patch4_window7_224`` from the
    Hugging Face hub. This needs internet and ``HF_HUB_OFFLINE=0`` (the suite defaults to offline).

The keywords of a run config (``docs/weights.md``) are resolved by the run spec (``sdconet.spec.swin_init``):
``imagenet`` becomes the staged ``swin_tiny_patch4_window7_224.pth`` (official Microsoft layout), ``scratch`` None.
Here ``scratch`` loads nothing and ``imagenet`` is an error that says to pass the file (outside a run spec).

Like mmdet, the classifier head and the final ``norm`` of ImageNet checkpoints are dropped; the three
output norms ``norm1..3`` then keep their (1, 0) initialisation.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch
from timm.layers import resize_rel_pos_bias_table
from torch import Tensor, nn

TIMM_DEFAULT = "swin_tiny_patch4_window7_224"
_SKIP = ("relative_position_index", "attn_mask", "relative_coords_table")


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from disk (unwrapping ``model``/``state_dict``/``module``).

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file holds non-tensor pickled objects (``weights_only`` loading refused).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained Swin checkpoint not found: {path} (the workflow's stage_weights rule "
                                f"puts swin_tiny_patch4_window7_224.pth under results/weights/; docs/weights.md)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415

        return dict(load_file(str(path), device="cpu"))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RuntimeError(
            f"{path} contains pickled non-tensor objects that torch.load(weights_only=True) refuses. If you "
            "trust the file, re-save its state dict: torch.save(torch.load(p, weights_only=False)['state_dict'], "
            "'clean.pth') and pass clean.pth.") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _unfold_to_official_reduction(w: Tensor) -> Tensor:
    out_ch, in_ch = w.shape
    return w.reshape(out_ch, in_ch // 4, 4).transpose(1, 2)[:, [0, 2, 1, 3], :].reshape(out_ch, in_ch)


def _unfold_to_official_norm(w: Tensor) -> Tensor:
    return w.reshape(w.shape[0] // 4, 4).transpose(0, 1)[[0, 2, 1, 3], :].reshape(-1)


def to_encoder_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a timm / official / mmdet Swin state dict to :class:`SwinEncoder` names (timm layout)."""
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}
    out: dict[str, Tensor] = {}
    if any(k.startswith("stages.") for k in sd):  # mmdet layout
        for k, v in sd.items():
            if k.startswith("patch_embed.projection."):
                k = k.replace("patch_embed.projection.", "patch_embed.proj.")
            m = re.match(r"stages\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)$", k)
            if m:
                stage, kind, what = int(m.group(1)), m.group(2), m.group(3)
                v = _unfold_to_official_reduction(v) if kind == "reduction" else _unfold_to_official_norm(v)
                k = f"layers.{stage + 1}.downsample.{kind}.{what}"
            else:
                k = re.sub(r"^stages\.", "layers.", k)
                k = k.replace("attn.w_msa.", "attn.").replace("ffn.layers.0.0.", "mlp.fc1.")
                k = k.replace("ffn.layers.1.", "mlp.fc2.")
            out[k] = v
    elif "layers.0.downsample.reduction.weight" in sd:  # official Microsoft layout
        for k, v in sd.items():
            out[re.sub(r"^layers\.(\d+)\.downsample", lambda g: f"layers.{int(g.group(1)) + 1}.downsample", k)] = v
    else:  # timm layout (or this project's own encoder)
        out = dict(sd)
    return {k: v for k, v in out.items()
            if not k.startswith(("head.", "norm.")) and not any(s in k for s in _SKIP)}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cached_on_hub(name: str) -> bool:
    """Whether timm's hub weights for ``name`` are already in the local Hugging Face cache."""
    try:
        import timm  # noqa: PLC0415
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
        return bool(hub_id) and any(isinstance(try_to_load_from_cache(hub_id, f), str)
                                    for f in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # noqa: BLE001 - unknown model / hub layout: let timm decide
        return True


def _fetch_timm(source: str) -> dict[str, Tensor]:
    name = source.split(":", 1)[1] if ":" in source else TIMM_DEFAULT
    hint = (f"timm needs internet and HF_HUB_OFFLINE=0 (this suite sets HF_HUB_OFFLINE=1 by default). Offline, "
            f"download {name} (timm .safetensors or the official Microsoft .pth) and pass its local path as "
            "swin.pretrained instead.")
    if _offline() and not _cached_on_hub(name):
        raise RuntimeError(f"pretrained '{name}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
                           + hint)
    import timm  # noqa: PLC0415

    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:  # noqa: BLE001 - network/hub errors come in many types
        raise RuntimeError(f"could not obtain pretrained '{name}' through timm ({type(exc).__name__}: {exc}). "
                           + hint) from exc
    return model.state_dict()


def load_swin_weights(model: nn.Module, source: str | Mapping[str, Tensor]) -> dict[str, list[str]]:
    """Load Swin weights into ``model`` (a :class:`SwinEncoder`).

    Relative-position bias tables are resized when the window differs.

    Args:
        model: The encoder.
        source: A local file path, ``"timm"``/``"timm:<name>"``, ``"scratch"`` (nothing is loaded), or an already
            loaded state dict.

    Returns:
        ``{"missing": [...], "unexpected": []}``; only the output norms ``norm1..3`` may be missing.

    Raises:
        RuntimeError: download failure, or keys that do not fit this architecture (e.g. a Swin-S file).
    """
    if isinstance(source, Mapping):
        raw = dict(source)
    elif source == "scratch":
        return {"missing": [], "unexpected": []}
    elif source == "imagenet":
        raise RuntimeError("swin.pretrained 'imagenet' names the published swin_tiny_patch4_window7_224.pth, which a "
                           "run spec resolves to the staged copy (results/weights/); outside a run spec pass the "
                           "file's path instead (docs/weights.md)")
    elif source == "timm" or source.startswith("timm:"):
        raw = _fetch_timm(source)
    else:
        raw = read_checkpoint(source)
    sd = to_encoder_keys(raw)
    own = model.state_dict()
    for k, v in list(sd.items()):
        if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
            ws = model.get_submodule(k[: -len(".relative_position_bias_table")]).window_size
            sd[k] = resize_rel_pos_bias_table(v, new_window_size=ws, new_bias_shape=own[k].shape)
    bad_shapes = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
                  if k in own and v.shape != own[k].shape]
    if bad_shapes:
        raise RuntimeError("pretrained Swin weights do not fit this encoder: " + "; ".join(bad_shapes[:5]))
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not re.match(r"norm\d+\.", k)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"pretrained Swin weights do not fit this encoder: missing {missing[:8]}, "
                           f"unexpected {result.unexpected_keys[:8]}")
    return {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}

"""Swin-T state dicts in the published layouts, built from a timm state dict for the loader tests.

Written out independently of the loader under test (the conversions mmdetection's ``swin_converter`` and the
Microsoft release imply), so a test compares two implementations, not one with itself.
"""
from __future__ import annotations

import re

import torch


def official_from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm -> Microsoft layout: PatchMerging at the end of stages 0-2, the classifier as ``head.*``."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^layers\.(\d+)\.downsample", lambda g: f"layers.{int(g.group(1)) - 1}.downsample", k)
        out[k.replace("head.fc.", "head.")] = v
    return out


def mmdet_from_official(sd: dict[str, torch.Tensor], detector: bool = False) -> dict[str, torch.Tensor]:
    """mmdet's ``swin_converter`` (Microsoft -> mmdet layout, under ``backbone.``): ``attn.w_msa``, ``ffn.layers``,
    unfold-ordered PatchMerging. ``detector``: as a trained mmdet detector's checkpoint, which holds the output
    norms ``norm0..3`` instead of the ImageNet model's final ``norm`` (dropped here)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("head") or (detector and k.startswith("norm.")):
            continue
        nk = k
        if k.startswith("layers"):
            nk = k.replace("attn.", "attn.w_msa.").replace("mlp.fc1.", "ffn.layers.0.0.")
            nk = nk.replace("mlp.fc2.", "ffn.layers.1.")
            if "downsample.reduction." in k:
                o, i = v.shape
                v = v.reshape(o, 4, i // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(o, i)
            elif "downsample.norm." in k:
                v = v.reshape(4, -1)[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)
            nk = nk.replace("layers", "stages", 1)
        elif k.startswith("patch_embed"):
            nk = k.replace("proj", "projection")
        out["backbone." + nk] = v
    return out

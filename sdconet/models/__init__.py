"""SDCoNet model components. Importing this package is light: only the (torch-free) config is loaded eagerly;
the modules below are imported on first attribute access.

First half (shared encoder, neck, SR decoder, saliency):
    config          SDCoNetConfig and sub-configs, ``preset``, ``from_dict``, ``to_dict``
    lr_input        ``normalise``, ``denormalise``, ``make_lr``, ``prepare_lr``
    encoder         ``SwinEncoder`` (+ ``swin_weights`` for pretrained loading), ``build_encoder``
    neck            ``ChannelMapperSR``, ``build_neck``
    sr_decoder      ``SRDecoder``, ``build_sr_decoder``
    position        ``SinePositionalEncoding``, ``LevelEmbedding``, ``flatten_levels``
    memory_transform ``MemoryTransform`` (shared with DINO two-stage)
    saliency        ``SaliencyPredictor``, ``key_token_selection``, ``saliency_targets``,
                    ``saliency_focal_loss``, ``SaliencyLoss``
"""
from __future__ import annotations

import importlib
from typing import Any

from sdconet.models.config import (ConfigError, LRConfig, NeckConfig, SaliencyConfig, SDCoNetConfig,
                                   SRDecoderConfig, SwinConfig, from_dict, preset, to_dict)

_LAZY = {
    "normalise": "lr_input", "denormalise": "lr_input", "make_lr": "lr_input", "prepare_lr": "lr_input",
    "SwinEncoder": "encoder", "build_encoder": "encoder", "EncoderOutput": "encoder",
    "ChannelMapperSR": "neck", "build_neck": "neck",
    "SRDecoder": "sr_decoder", "build_sr_decoder": "sr_decoder",
    "SinePositionalEncoding": "position", "LevelEmbedding": "position", "flatten_levels": "position",
    "MultiLevelInputs": "position", "build_position_encoding": "position",
    "MemoryTransform": "memory_transform", "build_memory_transform": "memory_transform",
    "SaliencyPredictor": "saliency", "MaskPredictor": "saliency", "SaliencyOutput": "saliency",
    "KeyTokenSelection": "saliency", "key_token_selection": "saliency", "build_saliency": "saliency",
    "saliency_targets": "saliency_loss", "saliency_focal_loss": "saliency_loss", "SaliencyLoss": "saliency_loss",
}

__all__ = ["ConfigError", "LRConfig", "NeckConfig", "SaliencyConfig", "SDCoNetConfig", "SRDecoderConfig",
           "SwinConfig", "from_dict", "preset", "to_dict", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"sdconet.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sdconet.models' has no attribute {name!r}")

"""Build an SDCoNet model from its typed config, and read the YAML run configs (``config/sdconet/*.yaml``).

A run config has two top-level sections::

    model:                       # preset + overrides of SDCoNetConfig (nested or dotted keys)
      preset: paper              # "paper" | "tiny" (default "paper")
      num_classes: 10
      swin: {pretrained: null}
    train:                       # TrainConfig fields (sdconet.train_config)
      epochs: 52
      batch_size: 2

Overrides (CLI ``--set``, method rows) are flat dotted keys ``model.<field>[.<sub>]`` / ``train.<field>``, applied
in the order: YAML < method row < explicit overrides. The gradient-routing schedule belongs to the train section
(``train.routing``, ``train.unfreeze_epoch``).
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import yaml
from torch import nn

from benchcore.config import flatten

from sdconet.models.config import ConfigError, SDCoNetConfig, preset

__all__ = ["build_model", "load_model_config", "resolve_config", "split_overrides"]

SECTIONS = ("model", "train")


def build_model(cfg: SDCoNetConfig) -> nn.Module:
    """:class:`~sdconet.models.sdconet.SDCoNet` (``shared_encoder=True``) or
    :class:`~sdconet.models.serial.SerialSDCoNet` (``shared_encoder=False``), randomly initialised apart from
    ``cfg.swin.pretrained``."""
    if cfg.shared_encoder:
        from sdconet.models.sdconet import SDCoNet  # noqa: PLC0415

        return SDCoNet(cfg)
    from sdconet.models.serial import SerialSDCoNet  # noqa: PLC0415

    return SerialSDCoNet(cfg)


def split_overrides(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"model.a.b": 1, "train.epochs": 2}`` -> ``{"model": {"a.b": 1}, "train": {"epochs": 2}}``.

    Nested ``{"model": {...}}`` entries are flattened to dotted keys. Raises ConfigError for a key outside
    the two sections.
    """
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in (overrides or {}).items():
        head, _, rest = str(key).partition(".")
        if head not in SECTIONS:
            raise ConfigError(f"unknown config key '{key}': overrides start with 'model.' or 'train.'")
        if not rest:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{key}' needs a mapping or a dotted sub-key")
            for k, v in flatten(value).items():
                out[head][k] = v
        else:
            out[head][rest] = value
    return out


def _model_config(section: Mapping[str, Any], extra: Mapping[str, Any]) -> SDCoNetConfig:
    """Preset named by ``preset`` (default "paper") + the section's fields + dotted ``extra`` keys."""
    merged = flatten(section)
    merged.update(extra)
    name = merged.pop("preset", "paper")
    if not isinstance(name, str):
        raise ConfigError(f"'model.preset' must be a string, got {name!r}")
    nested: dict[str, Any] = {}
    for key, value in merged.items():  # rebuild a nested dict so preset() merges sub-configs
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"config key 'model.{key}': '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return preset(name, **nested)


def resolve_config(doc: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   method: str | Mapping[str, Any] | None = None,
                   source: str = "<config>") -> tuple[SDCoNetConfig, dict[str, Any]]:
    """Apply a method row and overrides to a loaded run config; see :func:`load_model_config`."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: a run config must be a mapping with 'model' and 'train' sections")
    for key in doc:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown config key '{key}' (top-level sections: model, train)")
    model_sec = dict(doc.get("model") or {})
    train_sec = copy.deepcopy(dict(doc.get("train") or {}))
    user = split_overrides(overrides)
    meth: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    try:
        if method is not None:
            from sdconet.methods import method_overrides  # noqa: PLC0415

            # the encoder depth the sheet's layer ratios are fitted to, probed with the row's switches (not its
            # ratios): an input: hr row's scale 1 is only valid without the SR branch
            switches = {k: v for k, v in split_overrides(method_overrides(method))["model"].items()
                        if not k.endswith("filter_ratio")}
            depth = _model_config(model_sec, {**switches, **user["model"]}).enc_layers
            meth = split_overrides(method_overrides(method, enc_layers=depth))
        cfg = _model_config(model_sec, {**meth["model"], **user["model"]})
    except ConfigError as exc:
        raise ConfigError(f"{source}: model section: {exc}") from exc
    for key, value in {**meth["train"], **user["train"]}.items():
        if "." in key:
            raise ConfigError(f"unknown config key 'train.{key}': the train section has no sub-sections")
        train_sec[key] = value
    from sdconet.train_config import TrainConfig, TrainConfigError  # noqa: PLC0415

    try:
        train = TrainConfig.from_dict(train_sec).to_dict()
    except TrainConfigError as exc:
        raise ConfigError(f"{source}: train section: {exc}") from exc
    return cfg, train


def load_model_config(path: str | Path, overrides: Mapping[str, Any] | None = None,
                      method: str | Mapping[str, Any] | None = None) -> tuple[SDCoNetConfig, dict[str, Any]]:
    """Read a YAML run config and return the model config and the (validated, complete) training config dict.

    Args:
        path: YAML file with ``model`` and ``train`` sections.
        overrides: Dotted keys (``{"model.num_classes": 3, "train.epochs": 1}``) or nested section dicts,
            applied last.
        method: Optional experiments-sheet id of the repository's sheet, or a row of the configured sheet
            (:func:`sdconet.methods.method_overrides`), applied before ``overrides``.

    Returns:
        ``(SDCoNetConfig, TrainConfig.to_dict())``.

    Raises:
        ConfigError: unknown key anywhere (named by its dotted path) or an invalid value.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the run config ({exc})") from exc
    return resolve_config(doc, overrides, method, source=str(path))

"""The ``metrics.json`` every run writes (``docs/formats.md`` section 6), its schema, writer and reader.

Path grammar: ``results/{dataset}/{degradation}/{method}/seed{seed}/metrics.json``. Detection metrics are
COCO numbers from :func:`benchcore.metrics.detection.coco_evaluate` (floats in [0, 1], None where a size bin
has no GT); ``sr`` is ``{"psnr", "ssim", ...}`` or null for methods without an SR output; ``efficiency``
is free-form (params, gmac/gflops with their counter, latency) or null.
"""
from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from benchcore.atomic import atomic_write_json
from benchcore.provenance import provenance

_UNIT = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_DETECTION_KEYS = ("AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l", "AR100")

METRICS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "sdconet-bench metrics.json",
    "type": "object",
    "required": ["method", "dataset", "degradation", "seed", "detection", "provenance"],
    "additionalProperties": False,
    "properties": {
        "method": {"type": "string", "minLength": 1, "description": "method id, e.g. sdconet or swinir+frcnn"},
        "dataset": {"type": "string", "minLength": 1},
        "degradation": {"type": "string", "minLength": 1, "description": "e.g. bicubic_x4"},
        "seed": {"type": "integer", "minimum": 0},
        "detection": {
            "type": "object",
            "description": "COCO box metrics on the HR pixel grid; extra keys (AR1, num_images, ...) allowed",
            "required": [*_DETECTION_KEYS, "per_class"],
            "properties": {**{k: _UNIT for k in _DETECTION_KEYS},
                           "per_class": {"type": "object", "additionalProperties": _UNIT}},
        },
        "sr": {
            "type": ["object", "null"],
            "description": "BasicSR PSNR (dB) / SSIM, or null for detection-only methods",
            "required": ["psnr", "ssim"],
            "properties": {"psnr": {"type": "number"}, "ssim": {"type": "number", "maximum": 1}},
        },
        "efficiency": {"type": ["object", "null"], "description": "params, gmac/gflops + counter, latency"},
        "extra": {"type": ["object", "null"]},
        "provenance": {
            "type": "object",
            "required": ["git_sha", "config_hash", "config", "device"],
            "properties": {"git_sha": {"type": "string"}, "config_hash": {"type": "string"},
                           "config": {"type": ["object", "null"]}, "device": {"type": "string"}},
        },
    },
}


class MetricsValidationError(ValueError):
    """A metrics document does not match :data:`METRICS_SCHEMA`; the message names the file and the key."""


def _describe(err: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "<top level>"
    return f"key '{where}': {err.message}"


def validate_metrics(doc: Mapping[str, Any], source: str = "metrics") -> None:
    """Raise :class:`MetricsValidationError` naming ``source`` and the first failing key."""
    validator = jsonschema.Draft202012Validator(METRICS_SCHEMA)
    err = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if err is not None:
        raise MetricsValidationError(f"{source}: invalid metrics, {_describe(err)}")


def write_metrics(path: str | Path, *, method: str, dataset: str, degradation: str, seed: int,
                  detection: Mapping[str, Any], sr: Mapping[str, Any] | None = None,
                  efficiency: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
                  config: Mapping[str, Any] | None = None, device: Any = None) -> dict[str, Any]:
    """Validate and atomically write one run's ``metrics.json``; return the document written.

    ``provenance`` (git SHA, config hash + config, device string, versions, time) is added from
    :func:`benchcore.provenance.provenance`. Per-image lists in ``sr`` are kept as given; pass a
    trimmed dict if they are large. An infinite PSNR (identical images) is written as ``Infinity``, the
    JSON extension Python's ``json`` reads back as ``inf``.
    """
    doc: dict[str, Any] = {
        "method": method, "dataset": dataset, "degradation": degradation, "seed": operator.index(seed),
        "detection": dict(detection), "sr": dict(sr) if sr is not None else None,
        "efficiency": dict(efficiency) if efficiency is not None else None,
    }
    if extra is not None:
        doc["extra"] = dict(extra)
    doc["provenance"] = provenance(config, device)
    validate_metrics(doc, source=str(path))
    atomic_write_json(path, doc)
    return doc


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Load and validate a ``metrics.json``; errors name the file and the failing key."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MetricsValidationError(f"{path}: not valid JSON ({exc})") from exc
    validate_metrics(doc, source=str(path))
    return doc


def add_bootstrap(metrics_path: str | Path, gt: Mapping[str, Any] | str | Path, n_boot: int = 200,
                  metrics: tuple[str, ...] = ("AP", "AP_s"), alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Add percentile-bootstrap CIs over test images (``extra.bootstrap``) to an existing ``metrics.json``.

    Reads ``detections.json`` beside ``metrics_path``, resamples the test images of ``gt`` ``n_boot`` times
    (:func:`benchcore.metrics.stats.bootstrap_ci`), and rewrites the file atomically after re-validating it.
    ``n_boot <= 0`` leaves the file untouched. Returns the (updated) document.
    """
    import json  # noqa: PLC0415

    from benchcore.metrics.stats import bootstrap_ci  # noqa: PLC0415

    path = Path(metrics_path)
    doc = read_metrics(path)
    if n_boot <= 0:
        return doc
    dets_path = path.parent / "detections.json"
    if not dets_path.is_file():
        raise FileNotFoundError(f"{dets_path}: no detections beside {path} to bootstrap")
    dets = json.loads(dets_path.read_text())
    protocol = doc["detection"].get("protocol", "coco")  # the interval is around the number the tables show
    boot = {m: bootstrap_ci(gt, dets, metric=m, n_boot=n_boot, alpha=alpha, seed=seed, protocol=protocol)
            for m in metrics}
    doc["extra"] = {**(doc.get("extra") or {}), "bootstrap": boot}
    validate_metrics(doc, str(path))
    atomic_write_json(path, doc)
    return doc

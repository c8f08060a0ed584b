"""Map an SDCoNet row of ``config/experiments.tsv`` (the full model and its ablations) to config overrides.

Columns used (the sheet is validated by :func:`benchcore.experiments.load_experiments`):

=====================  ==========================================================================
``saliency``           yes/no -> ``model.use_saliency``
``shared_encoder``     yes/no -> ``model.shared_encoder`` (no = :class:`~sdconet.models.serial.SerialSDCoNet`)
``sr_branch``          yes/no -> ``model.use_sr``
``routing``            ``train.routing`` (none | schedule | projection)
``level_filter_ratio`` ``model.level_filter_ratio`` (comma-separated, one per feature level)
``layer_filter_ratio`` ``model.layer_filter_ratio`` (one per encoder layer; see :func:`fit_layer_ratios`)
``alpha``              fixed/learnable -> ``model.saliency.alpha_mode``
=====================  ==========================================================================

Overrides are flat dotted keys (``{"model.use_sr": False, "train.routing": "none"}``), the form
:func:`sdconet.models.build.load_model_config` accepts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from benchcore.experiments import load_experiments

#: The repository's sheet: the default of the CLIs' ``--experiments``. The workflow passes the configured
#: sheet's rows (``experiments:`` of the user's config), never this path.
SHEET = Path(__file__).resolve().parents[1] / "config" / "experiments.tsv"
log = logging.getLogger(__name__)

__all__ = ["SHEET", "sdconet_method_ids", "method_row", "method_overrides", "fit_layer_ratios", "reads_hr",
           "input_scale"]


def _rows(path: str | Path) -> list[dict[str, str]]:
    df = load_experiments(path)
    return [dict(r) for r in df.to_dict(orient="records")]


def sdconet_method_ids(path: str | Path = SHEET) -> list[str]:
    """Ids of the rows whose detector is ``sdconet`` (the full model and its ablations), sheet order."""
    return [r["id"] for r in _rows(path) if r["detector"] == "sdconet"]


def method_row(method: str | Mapping[str, Any], path: str | Path = SHEET) -> dict[str, str]:
    """The sheet row of ``method`` (an id looked up in ``path``, or a row already read from the configured sheet);
    ValueError for an unknown id or a non-SDCoNet (baseline) row."""
    if isinstance(method, Mapping):
        row = {k: str(v) for k, v in method.items()}
        method_id = row.get("id", "<row>")
    else:
        rows = {r["id"]: r for r in _rows(path)}
        if method not in rows:
            raise ValueError(f"unknown method id {method!r} in {path}; SDCoNet rows: {sdconet_method_ids(path)}")
        row, method_id = rows[method], method
    if row["detector"] != "sdconet":
        raise ValueError(f"method {method_id!r} is a {row['detector']} baseline, not an SDCoNet variant "
                         f"(run it with the baselines package)")
    if row["input"] not in ("lr", "hr"):
        raise ValueError(f"method {method_id!r}: SDCoNet rows take the LR input (or the HR tile for the family's "
                         f"upper bound), got input={row['input']!r}")
    if row["input"] == "hr" and row["sr_branch"] != "no":
        raise ValueError(f"method {method_id!r}: an HR-input SDCoNet row has nothing to super-resolve; set "
                         f"sr_branch=no (got {row['sr_branch']!r})")
    return row


def reads_hr(method: str | Mapping[str, Any], path: str | Path = SHEET) -> bool:
    """True for an SDCoNet row whose input is the HR tile itself (``input: hr``: the family's upper bound)."""
    return method_row(method, path)["input"] == "hr"


def input_scale(method: str | Mapping[str, Any], degradation_scale: int, path: str | Path = SHEET) -> int:
    """The model's ``lr.scale`` for ``method``: the degradation's scale, or 1 for an HR-input row (no LR is made)."""
    return 1 if reads_hr(method, path) else int(degradation_scale)


def fit_layer_ratios(ratios: Sequence[float], num_layers: int) -> tuple[float, ...]:
    """Resample per-layer ratios to ``num_layers`` entries (evenly spaced picks, first and last kept).

    The sheet states ratios for the 6-layer paper encoder; a model with another depth (the ``tiny`` preset)
    takes the ratios at ``round(linspace(0, len - 1, num_layers))``. Identity when the lengths match.
    """
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) == num_layers:
        return ratios
    picks = np.round(np.linspace(0, len(ratios) - 1, num_layers)).astype(int)
    return tuple(ratios[i] for i in picks)


def _ratios(cell: str) -> tuple[float, ...]:
    return tuple(float(x) for x in cell.split(","))


def method_overrides(method: str | Mapping[str, Any], path: str | Path = SHEET,
                     enc_layers: int | None = None) -> dict[str, Any]:
    """Dotted-key overrides (``model.*`` and ``train.*``) that turn the base config into ``method``.

    The row's ``set`` cell is not included: :mod:`sdconet.spec` applies it after the workflow's overrides.

    Args:
        method: A row id whose detector is ``sdconet`` (looked up in ``path``) or the row itself.
        path: The experiments sheet (only for an id).
        enc_layers: Encoder depth of the target model; the layer ratios are resampled to it (with a log
            message) when it differs from the sheet's count. None keeps the sheet's list.

    Returns:
        e.g. ``{"model.use_saliency": True, "model.use_sr": False, "train.routing": "none", ...}``.
    """
    row = method_row(method, path)
    method_id = row.get("id", "<row>")
    yes = {"yes": True, "no": False}
    layer = _ratios(row["layer_filter_ratio"])
    if enc_layers is not None and len(layer) != enc_layers:
        fitted = fit_layer_ratios(layer, enc_layers)
        log.info("method %s: layer_filter_ratio %s resampled to %d layers: %s", method_id, layer, enc_layers, fitted)
        layer = fitted
    return {
        "model.use_saliency": yes[row["saliency"]],
        "model.shared_encoder": yes[row["shared_encoder"]],
        "model.use_sr": yes[row["sr_branch"]],
        "train.routing": row["routing"],
        "model.level_filter_ratio": _ratios(row["level_filter_ratio"]),
        "model.layer_filter_ratio": layer,
        "model.saliency.alpha_mode": row["alpha"],
    }

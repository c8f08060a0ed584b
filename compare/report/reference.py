"""User-supplied reference (paper) numbers and the "paper vs reproduced" comparison table.

The file (default ``config/reference_results.yaml``, empty by default) is keyed by dataset id, then method id::

    nwpu:
      sdconet: {degradation: bicubic_x4, source: "Table 2", AP: <percent>, AP_s: <percent>}

AP-family values are percent (0-100) as papers print them, ``psnr`` is dB, ``ssim`` is in [0, 1]; the schema is
``workflow/schemas/reference.schema.yaml``. Nothing in this package ships a reference number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import jsonschema
import pandas as pd
import yaml

from benchcore.experiments import SCHEMA_DIR
from compare.report.tables import MISSING, summary

REFERENCE_SCHEMA_PATH = SCHEMA_DIR / "reference.schema.yaml"
#: Reference metric -> scale applied to the stored run value to reach the reference's unit.
METRIC_SCALE = {"AP": 100.0, "AP50": 100.0, "AP75": 100.0, "AP_s": 100.0, "AP_m": 100.0, "AP_l": 100.0,
                "AR100": 100.0, "psnr": 1.0, "ssim": 1.0}
_DIGITS = {"psnr": 2, "ssim": 4}
COLUMNS = ["Dataset", "Degradation", "Method", "Metric", "Paper", "Reproduced", "Δ", "n", "Ref. source", "source"]


class ReferenceError(ValueError):
    """The reference file is malformed; the message names the file and the key."""


def load_reference(path: str | Path | None, schema_path: str | Path = REFERENCE_SCHEMA_PATH) -> dict[str, Any]:
    """Read and validate a reference file; None, an absent path or a comments-only file give ``{}``.

    Raises:
        ReferenceError: YAML syntax error or schema violation, naming the file and the key path.
    """
    if path is None or not Path(path).exists():
        return {}
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ReferenceError(f"{path}: not valid YAML ({exc})") from exc
    schema = yaml.safe_load(Path(schema_path).read_text())
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ReferenceError(f"{path}: key '{where}': {err.message}")
    return doc or {}


def _fmt(value: float, metric: str) -> str:
    return f"{value:.{_DIGITS.get(metric, 1)}f}"


def reference_table(runs: pd.DataFrame, reference: Mapping[str, Any], experiments: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, degradation, method, metric) that has a reference number.

    ``Reproduced`` is the seed mean (± sample std) of the runs in the reference's unit, and
    ``Δ = reproduced mean - paper`` (percentage points for AP metrics). A reference entry without a
    ``degradation`` is compared with every degradation run for that dataset and method (one row each, or one
    ``missing`` row when none ran).
    """
    names = dict(zip(experiments["id"], experiments["display"]))
    rows = []
    for dataset, methods in (reference or {}).items():
        for method, entry in methods.items():
            sel = runs[(runs["dataset"] == dataset) & (runs["method"] == method)] if len(runs) else runs
            if entry.get("degradation"):
                degs = [entry["degradation"]]
            else:
                degs = sorted(sel["degradation"].unique()) if len(sel) else ["–"]
            for deg in degs:
                r = sel[sel["degradation"] == deg] if len(sel) else sel
                for metric, paper in entry.items():
                    if metric not in METRIC_SCALE:
                        continue
                    scale = METRIC_SCALE[metric]
                    s = summary(r[metric]) if len(r) else None
                    if s is None:
                        repro, delta = (MISSING if not len(r) else "n/a"), "–"
                    else:
                        mean, std = s["mean"] * scale, s["std"] * scale
                        repro = _fmt(mean, metric) + (f" ± {_fmt(std, metric)}" if s["n"] > 1 else "")
                        delta = f"{mean - float(paper):+.{_DIGITS.get(metric, 1)}f}"
                    rows.append({"Dataset": dataset, "Degradation": deg, "Method": names.get(method, method),
                                 "Metric": metric, "Paper": f"{float(paper):g}", "Reproduced": repro,
                                 "Δ": delta, "n": len(r), "Ref. source": entry.get("source", "–"),
                                 "source": ";".join(r["path"]) if len(r) else ""})
    return pd.DataFrame(rows, columns=COLUMNS)

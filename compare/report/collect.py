"""Gather result files into flat DataFrames, and compare them with the runs the config asks for.

Run files: ``RESULTS/{dataset}/{degradation}/{method}/seed{seed}/metrics.json`` (``docs/formats.md`` §6),
optionally with ``detections.json`` beside them. Efficiency files: ``RESULTS/efficiency/{method}.json``.
Every reader error names the offending file.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import pandas as pd

from benchcore.metrics.results import MetricsValidationError, read_metrics

KEYS = ["dataset", "degradation", "method", "seed"]
DETECTION_METRICS = ["AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l", "AR1", "AR10", "AR100", "AR_s", "AR_m", "AR_l"]
RUN_COLUMNS = [*KEYS, *DETECTION_METRICS, "per_class", "psnr", "ssim", "protocol", "precision", "init", "behaviour",
               "git_sha",
               "config_hash", "device", "created_utc", "config", "path", "detections", "bootstrap"]
#: The AP protocol of a metrics.json without ``detection.protocol`` (written before the key existed, when every
#: run was scored with the COCO protocol).
LEGACY_PROTOCOL = "coco"
EFF_COLUMNS = ["method", "input_h", "input_w", "params_total", "params_inference", "params_training_only", "gmac",
               "flops_counter", "latency_ms", "latency_p90_ms", "batch_size", "latency_bsN_ms", "throughput_per_s",
               "peak_mem_mb", "device", "git_sha", "path"]
_SEED_DIR = re.compile(r"^seed(\d+)$")
_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
EFFICIENCY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["method"],
    "properties": {
        "method": {"type": "string", "minLength": 1},
        "input_size": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
        "params": {"type": ["object", "null"], "properties": {"total": _INT, "inference": _INT,
                                                              "training_only": _INT}},
        "flops": {"type": ["object", "null"], "properties": {"gmac": _NUM, "counter": {"type": ["string", "null"]}}},
        "latency": {"type": ["object", "null"], "properties": {
            "bs1": {"type": ["object", "null"], "properties": {"median_ms": _NUM, "p90_ms": _NUM}},
            "bsN": {"type": ["object", "null"], "properties": {"batch_size": _INT, "median_ms": _NUM, "p90_ms": _NUM,
                                                               "throughput_per_s": _NUM}}}},
        "peak_mem_mb": _NUM,
        "device": {"type": ["string", "null"]},
        "provenance": {"type": ["object", "null"]},
    },
}


class ResultsError(ValueError):
    """A result file is malformed or lies in the wrong place; the message names it."""


def _float(v: Any) -> float:
    """A metric as float, NaN for None (pandas' missing marker)."""
    return math.nan if v is None else float(v)


def _is_cuda(device: Any) -> bool:
    d = str(device or "").strip().lower()
    return d.startswith("cuda") or d.split(",")[0].isdigit()  # ultralytics names GPUs "0", "0,1"


def run_precision(config: Mapping[str, Any] | None, device: str | None = None) -> str:
    """The training precision of a run, from the run spec its ``metrics.json`` records (``provenance.config.spec``).

    ``"fp16 autocast"`` (``"bf16 autocast"`` for an SDCoNet run with ``train.amp_dtype: bfloat16``) when AMP was on
    and training ran on CUDA (the engines' rule: AMP is ignored on the CPU), ``"fp32"`` otherwise, ``"unknown"``
    without a spec. SDCoNet rows read ``settings.train.amp`` / ``.amp_dtype`` / ``.device``;
    serial rows the detector's: Faster R-CNN's ``amp``, YOLO's ``overrides.amp`` (ultralytics' default: on) and
    ``device``. A device ``auto`` (or none) is taken as ``device``, the one the run was scored on
    (``provenance.device``; the workflow gives a run's training and evaluation jobs the same resources).
    """
    spec = config.get("spec") if isinstance(config, Mapping) else None
    if not isinstance(spec, Mapping):
        return "unknown"
    settings = spec.get("settings") or {}
    if spec.get("kind") == "sdconet":
        section = settings.get("train") or {}
        amp = section.get("amp")
        half = "bf16" if section.get("amp_dtype") == "bfloat16" else "fp16"  # specs before amp_dtype: float16
    elif spec.get("kind") == "serial":
        section = settings.get("detector") or {}
        amp = section["amp"] if "amp" in section else (section.get("overrides") or {}).get("amp", True)
        half = "fp16"
    else:
        return "unknown"
    if amp is None:
        return "unknown"
    dev = section.get("device")
    dev = device if dev in (None, "", "auto") else dev
    return f"{half} autocast" if amp and _is_cuda(dev) else "fp32"


def run_init(config: Mapping[str, Any] | None) -> str:
    """How a run's trained network started, from the run spec its ``metrics.json`` records
    (``provenance.config.spec.settings.init.init``, ``docs/weights.md``): ``imagenet``, ``coco``, ``scratch``,
    ``file`` or ``timm``; ``unknown`` for a run written before specs recorded it."""
    spec = config.get("spec") if isinstance(config, Mapping) else None
    rec = ((spec.get("settings") or {}).get("init") if isinstance(spec, Mapping) else None) or {}
    return str(rec.get("init")) if isinstance(rec, Mapping) and rec.get("init") else "unknown"


#: The released code's behaviours (spec Appendix B) and the model-config value that switches each on.
RELEASED_BEHAVIOURS = {"double residual": ("deform_residual", "official"),
                       "res_4 view": ("sr_decoder.official_view_quirk", True),
                       "head copies": ("head_init", "copies"),
                       "Kaiming SR conv": ("neck.sr_conv_init", "kaiming_fan_out")}


def run_behaviour(config: Mapping[str, Any] | None) -> str:
    """Which of the released code's behaviours an SDCoNet run's model had, from its run spec: ``released`` (all
    four, as the released code), ``fixed`` (none), or the ones it had; ``–`` for a run without an SDCoNet model
    (serial baselines) and ``unknown`` for a run written before specs recorded it."""
    spec = config.get("spec") if isinstance(config, Mapping) else None
    if not isinstance(spec, Mapping):
        return "unknown"
    model = (spec.get("settings") or {}).get("model")
    if not isinstance(model, Mapping):
        return "–"

    def get(key: str) -> Any:
        node: Any = model
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    on = [name for name, (key, value) in RELEASED_BEHAVIOURS.items() if get(key) == value]
    if not on:
        return "fixed"
    return "released" if len(on) == len(RELEASED_BEHAVIOURS) else "released: " + ", ".join(on)


def run_row(path: Path, results_dir: Path) -> dict[str, Any]:
    """One flat row from the ``metrics.json`` at ``path``; checks the path agrees with the document."""
    try:
        doc = read_metrics(path)
    except (MetricsValidationError, OSError) as exc:
        raise ResultsError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from exc
    rel = path.relative_to(results_dir).parts
    seed_match = _SEED_DIR.match(rel[3])
    from_path = {"dataset": rel[0], "degradation": rel[1], "method": rel[2], "seed": int(seed_match.group(1))}
    for key, val in from_path.items():
        if doc[key] != val:
            raise ResultsError(f"{path}: key '{key}' is {doc[key]!r} but the path says {val!r}")
    det, sr, prov = doc["detection"], doc.get("sr") or {}, doc["provenance"]
    dets = path.parent / "detections.json"
    return {
        **from_path,
        **{k: _float(det.get(k)) for k in DETECTION_METRICS},
        "per_class": {str(k): v for k, v in (det.get("per_class") or {}).items()},
        "psnr": _float(sr.get("psnr")), "ssim": _float(sr.get("ssim")),
        "protocol": det.get("protocol") or LEGACY_PROTOCOL,
        "precision": run_precision(prov.get("config"), prov.get("device")),
        "init": run_init(prov.get("config")),
        "behaviour": run_behaviour(prov.get("config")),
        "git_sha": prov.get("git_sha", ""), "config_hash": prov.get("config_hash", ""),
        "device": prov.get("device", ""), "created_utc": prov.get("created_utc", ""),
        "config": prov.get("config"), "path": path.relative_to(results_dir).as_posix(),
        "detections": dets.relative_to(results_dir).as_posix() if dets.is_file() else None,
        "bootstrap": (doc.get("extra") or {}).get("bootstrap"),
    }


def collect_runs(results_dir: str | Path) -> pd.DataFrame:
    """One row per ``metrics.json`` under ``results_dir`` (columns :data:`RUN_COLUMNS`).

    Metrics are the stored fractions (AP in [0, 1]; NaN where undefined), ``per_class`` a dict
    ``{class name: AP or None}``, ``protocol`` the AP protocol (``detection.protocol``; :data:`LEGACY_PROTOCOL` when
    absent), ``precision`` the training precision (:func:`run_precision`), ``init`` the initialisation
    (:func:`run_init`), ``path`` / ``detections`` relative to
    ``results_dir``. Sorted by
    dataset, degradation, method, seed. An empty or absent folder gives an empty frame.

    Raises:
        ResultsError: a file is not valid JSON, fails the schema, or its keys disagree with its path.
    """
    root = Path(results_dir)
    paths = sorted(p for p in root.glob("*/*/*/seed*/metrics.json") if _SEED_DIR.match(p.parent.name))
    rows = [run_row(p, root) for p in paths]
    df = pd.DataFrame.from_records(rows, columns=RUN_COLUMNS)
    df["seed"] = df["seed"].astype("int64")
    return df.sort_values(KEYS, kind="stable").reset_index(drop=True)


def _get(doc: Mapping[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(k)
    return doc


def efficiency_row(path: Path, results_dir: Path) -> dict[str, Any]:
    """One flat row from an efficiency file; missing or null fields become NaN / None."""
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from exc
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(EFFICIENCY_SCHEMA).iter_errors(doc))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ResultsError(f"{path}: invalid efficiency file, key '{where}': {err.message}")
    if doc["method"] != path.stem:
        raise ResultsError(f"{path}: key 'method' is {doc['method']!r} but the file name says {path.stem!r}")
    size = doc.get("input_size") or [None, None]
    return {
        "method": doc["method"], "input_h": size[0], "input_w": size[1],
        **{f"params_{k}": _float(_get(doc, "params", k)) for k in ("total", "inference", "training_only")},
        "gmac": _float(_get(doc, "flops", "gmac")), "flops_counter": _get(doc, "flops", "counter"),
        "latency_ms": _float(_get(doc, "latency", "bs1", "median_ms")),
        "latency_p90_ms": _float(_get(doc, "latency", "bs1", "p90_ms")),
        "batch_size": _get(doc, "latency", "bsN", "batch_size"),
        "latency_bsN_ms": _float(_get(doc, "latency", "bsN", "median_ms")),
        "throughput_per_s": _float(_get(doc, "latency", "bsN", "throughput_per_s")),
        "peak_mem_mb": _float(doc.get("peak_mem_mb")), "device": doc.get("device"),
        "git_sha": _get(doc, "provenance", "git_sha"), "path": path.relative_to(results_dir).as_posix(),
    }


def collect_efficiency(results_dir: str | Path) -> pd.DataFrame:
    """One row per ``efficiency/{method}.json`` (columns :data:`EFF_COLUMNS`), sorted by method.

    Raises:
        ResultsError: a file is not valid JSON, has a field of the wrong type, or names another method.
    """
    root = Path(results_dir)
    rows = [efficiency_row(p, root) for p in sorted((root / "efficiency").glob("*.json"))]
    return pd.DataFrame.from_records(rows, columns=EFF_COLUMNS).reset_index(drop=True)


SR_REF_COLUMNS = ["dataset", "degradation", "sr_model", "psnr", "ssim", "n", "source"]


def collect_sr_references(results_dir: str | Path, names: list[str]) -> pd.DataFrame:
    """One row per interpolation reference ``{dataset}/{degradation}/sr/{name}/seed*/images/sr_metrics.json``
    (``report.sr_references``; the first seed found: an interpolation does not depend on it), columns
    :data:`SR_REF_COLUMNS`; ``n`` is the number of scored test tiles.

    Raises:
        ResultsError: a file is not valid JSON or has no numeric ``psnr`` / ``ssim``.
    """
    root = Path(results_dir)
    rows, seen = [], set()
    for name in names:
        for path in sorted(root.glob(f"*/*/sr/{name}/seed*/images/sr_metrics.json")):
            ds, deg = path.relative_to(root).parts[:2]
            if (ds, deg, name) in seen:
                continue  # one seed per (dataset, degradation, name)
            seen.add((ds, deg, name))
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                psnr, ssim = float(doc["psnr"]), float(doc["ssim"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ResultsError(f"{path}: not an SR metrics file with numeric psnr and ssim ({exc})") from None
            rows.append({"dataset": ds, "degradation": deg, "sr_model": name, "psnr": psnr, "ssim": ssim,
                         "n": doc.get("n"), "source": path.relative_to(root).as_posix()})
    return pd.DataFrame.from_records(rows, columns=SR_REF_COLUMNS)


def expected_runs(config: Mapping[str, Any], experiments: pd.DataFrame, seeds: list[int],
                  methods: list[str] | None = None) -> pd.DataFrame:
    """Every run the report expects: datasets x degradations (config order) x methods (sheet order) x seeds.

    Args:
        config: the workflow config (``datasets`` and ``degradations`` mappings).
        experiments: :func:`~benchcore.experiments.load_experiments` output.
        seeds: seeds every method should have.
        methods: restrict to these method ids (None = every sheet row).

    Returns:
        Columns ``dataset, degradation, method, seed, path`` (``path`` relative to the results folder).

    Raises:
        ValueError: a method id is not in the sheet.
    """
    ids = list(experiments["id"])
    if methods is not None:
        unknown = [m for m in methods if m not in ids]
        if unknown:
            raise ValueError(f"unknown method id(s) {unknown}; the sheet has {ids}")
        ids = [m for m in ids if m in set(methods)]
    rows = [{"dataset": ds, "degradation": deg, "method": m, "seed": int(s),
             "path": f"{ds}/{deg}/{m}/seed{int(s)}/metrics.json"}
            for ds in config.get("datasets", {}) for deg in config.get("degradations", {}) for m in ids
            for s in seeds]
    df = pd.DataFrame.from_records(rows, columns=[*KEYS, "path"])
    df["seed"] = df["seed"].astype("int64")
    return df


def missing_runs(expected: pd.DataFrame, collected: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``expected`` with no matching (dataset, degradation, method, seed) in ``collected``."""
    have: set[tuple] = set()
    if len(collected):
        have = set(map(tuple, collected[KEYS].astype({"seed": "int64"}).itertuples(index=False)))
    mask = [tuple(r) not in have for r in expected[KEYS].itertuples(index=False)]
    return expected[mask].reset_index(drop=True)


def _first_file(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def qualitative_items(results_dir: str | Path, run: Mapping[str, Any], max_images: int = 3,
                      sr_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Inputs for :func:`~compare.report.figures.qualitative_grid` from one run that has ``detections.json``.

    Looks for the test ground truth ``data/{dataset}/partition/test.json``, HR tiles under ``data/{dataset}/tiles``,
    LR copies under ``data/{dataset}/{degradation}/lr`` and SR outputs (optional) under ``sr_dir`` (default
    ``<run dir>/sr``; a serial pipeline's SR tiles live in ``{dataset}/{degradation}/sr/{model}/seed{s}/images``), all by
    the tile's ``file_name`` or its basename. Picks the ``max_images`` test tiles with the most objects whose HR
    and LR files exist. Returns ``[]`` when any of these is absent.
    """
    root = Path(results_dir)
    if not run.get("detections"):
        return []
    data = root / "data" / run["dataset"]
    gt_path = data / "partition" / "test.json"
    if not gt_path.is_file():
        return []
    gt = json.loads(gt_path.read_text())
    dets = json.loads((root / run["detections"]).read_text())
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt.get("categories", [])}
    by_img: dict[Any, list] = {}
    for a in gt.get("annotations", []):
        by_img.setdefault(a["image_id"], []).append([*a["bbox"], names.get(a["category_id"], a["category_id"])])
    run_dir = (root / run["path"]).parent
    items = []
    for im in sorted(gt.get("images", []), key=lambda im: -len(by_img.get(im["id"], []))):
        rel = Path(im["file_name"])
        hr = _first_file(data / "tiles" / rel, data / "tiles" / "images" / rel.name)
        lr = _first_file(data / run["degradation"] / "lr" / rel, data / run["degradation"] / "lr" / rel.name)
        if hr is None or lr is None:
            continue
        pred = [[*d["bbox"], names.get(d["category_id"], d["category_id"]), d["score"]]
                for d in dets if d.get("image_id") == im["id"]]
        sr_root = Path(sr_dir) if sr_dir is not None else run_dir / "sr"
        items.append({"lr": lr, "sr": _first_file(sr_root / rel.name), "hr": hr,
                      "gt": by_img.get(im["id"], []), "pred": pred, "title": rel.name})
        if len(items) >= max_images:
            break
    return items


def collect_job_costs(results_dir: str | Path) -> pd.DataFrame:
    """Snakemake's per-job cost (the ``benchmark:`` TSVs under ``results_dir/benchmarks``), one row per job.

    This is what each *job* cost on the machine that ran it (wall time, peak RSS, CPU time), not a property of
    a method; the efficiency files hold the method measurements. Columns: stage, job, wall_s, max_rss_mb,
    cpu_time_s, path. Empty when there are no benchmark files.
    """
    root = Path(results_dir) / "benchmarks"
    rows = []
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        try:
            df = pd.read_csv(tsv, sep="\t")
        except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
            raise ResultsError(f"{tsv}: not a Snakemake benchmark file ({exc})") from exc
        if not len(df) or "s" not in df.columns:
            raise ResultsError(f"{tsv}: no 's' (wall seconds) column")
        last = df.iloc[-1]
        rel = tsv.relative_to(root)
        rows.append({"stage": rel.parts[0], "job": "/".join(rel.with_suffix("").parts[1:]),
                     "wall_s": float(last["s"]), "max_rss_mb": _float(last.get("max_rss")),
                     "cpu_time_s": _float(last.get("cpu_time")), "path": (Path("benchmarks") / rel).as_posix()})
    return pd.DataFrame(rows, columns=["stage", "job", "wall_s", "max_rss_mb", "cpu_time_s", "path"])

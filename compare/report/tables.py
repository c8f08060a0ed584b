"""Report tables: pure functions from collected DataFrames to display DataFrames, and one writer.

Inputs are :func:`~compare.report.collect.collect_runs` / ``collect_efficiency`` frames and the experiments
sheet. Every table has a ``source`` column listing the result files its numbers come from (kept in the CSV,
dropped from Markdown / LaTeX). AP-family numbers are shown in percent with one decimal, as ``mean ± std``
over seeds (sample std) when more than one seed is present; ``n`` is the number of seeds. A method of the
sheet with no run shows ``missing``; an undefined metric (e.g. AP_s without small objects) shows ``n/a``.
The AP protocol of the runs a table shows is named by its caption (:func:`protocol_caption`); the main and
ablation tables name each method's training precision (``Precision``) and initialisation (``Init``, with
:data:`SCRATCH_MARK` on methods trained from random weights: ``init: scratch``, not the recipes' pretraining).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from benchcore.metrics.stats import seed_summary
from compare.report.latex import to_latex, to_markdown
from benchcore.atomic import atomic_write_text

MISSING, NA = "missing", "n/a"
AP_COLUMNS = ["AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l"]
MAIN_KINDS = ("sdconet", "serial")
ABLATION_KINDS = ("sdconet", "ablation")
_TICK = {"yes": "✓", "no": "✗", "-": "–"}
#: How a caption names each AP protocol (``detection.protocol`` of metrics.json).
PROTOCOL_TEXT = {
    "coco": "COCO protocol (pycocotools maxDets 1/10/100: every AP at 100 detections per image)",
    "mmdet": "mmdetection CocoMetric protocol, as the released code (maxDets 100/300/1000: AP at 100 detections "
             "per image, AP50/AP75/AP_s/AP_m/AP_l at 1000)",
}


def protocol_caption(runs: pd.DataFrame, configured: str | None = None) -> str:
    """One sentence naming the AP protocol of ``runs`` (the runs a table shows).

    Without runs it names ``configured`` (the workflow's ``evaluation.protocol``); runs scored under different
    protocols are named with their counts and flagged as not comparable.
    """
    found = [] if "protocol" not in runs.columns else [p for p in runs["protocol"].tolist() if isinstance(p, str)]
    names = sorted(set(found))
    if not names:
        return f"AP protocol: {PROTOCOL_TEXT.get(configured, configured)}." if configured else ""
    if len(names) == 1:
        return f"AP protocol: {PROTOCOL_TEXT.get(names[0], names[0])}."
    counts = ", ".join(f"{n}: {found.count(n)} run{'s' if found.count(n) != 1 else ''}" for n in names)
    return (f"AP protocols differ between these runs ({counts}); numbers under different protocols are not "
            f"comparable. " + " ".join(f"{n} = {PROTOCOL_TEXT.get(n, n)}." for n in names))


def _precision(r: pd.DataFrame) -> str:
    """The training precision(s) of a method's runs (``fp32``, ``fp16 autocast``; ``–`` without runs)."""
    if not len(r) or "precision" not in r.columns:
        return "–"
    return " / ".join(sorted({str(p) for p in r["precision"] if isinstance(p, str)})) or "–"


#: Marks an ``Init`` cell of runs trained from random weights (``init: scratch``, docs/weights.md).
SCRATCH_MARK = "†"
INIT_NOTE = (f"Init: how each method's network started (imagenet / coco: the published pretrained weights, "
             f"docs/weights.md); {SCRATCH_MARK} scratch = random initialisation, not the recipes' pretraining: such "
             f"rows are not comparable with pretrained ones.")


def _init(r: pd.DataFrame) -> str:
    """The initialisation(s) of a method's runs (``imagenet``, ``scratch†``, ...; ``–`` without runs)."""
    if not len(r) or "init" not in r.columns:
        return "–"
    found = sorted({str(i) for i in r["init"] if isinstance(i, str)})
    return " / ".join(f"{i}{SCRATCH_MARK}" if i == "scratch" else i for i in found) or "–"


def _behaviour(r: pd.DataFrame) -> str:
    """Which released behaviours a method's runs had (:func:`compare.report.collect.run_behaviour`)."""
    if not len(r) or "behaviour" not in r.columns:
        return "–"
    return " / ".join(sorted({str(b) for b in r["behaviour"] if isinstance(b, str)})) or "–"


def summary(values: Iterable[float]) -> dict | None:
    """:func:`seed_summary` of the finite values, or None when there are none."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return seed_summary(vals) if vals else None


def fmt_stat(values: Iterable[float], mult: float = 100.0, digits: int = 1) -> str:
    """``"mean ± std"`` (n > 1) or ``"mean"`` of ``values * mult``; ``n/a`` when no value is defined."""
    s = summary(values)
    if s is None:
        return NA
    if math.isinf(s["mean"]):
        return "inf"
    mean = f"{s['mean'] * mult:.{digits}f}"
    return mean if s["n"] == 1 else f"{mean} ± {s['std'] * mult:.{digits}f}"


def fmt_num(value: float | None, digits: int | None = None) -> str:
    """A plain number (2 decimals below 10, else 1 by default); ``–`` for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    d = digits if digits is not None else (2 if abs(value) < 10 else 1)
    return f"{value:.{d}f}"


def _runs_of(runs: pd.DataFrame, dataset: str, degradation: str | None = None) -> pd.DataFrame:
    sel = runs["dataset"] == dataset
    if degradation is not None:
        sel &= runs["degradation"] == degradation
    return runs[sel]


def _rows(experiments: pd.DataFrame, kinds: Sequence[str] | None) -> pd.DataFrame:
    return experiments if kinds is None else experiments[experiments["kind"].isin(kinds)]


def _sources(*frames: pd.DataFrame) -> str:
    return ";".join(p for f in frames if len(f) for p in f["path"].tolist() if isinstance(p, str))


def _eff_of(eff: pd.DataFrame | None, method: str) -> pd.Series | None:
    if eff is None or not len(eff):
        return None
    hit = eff[eff["method"] == method]
    return hit.iloc[0] if len(hit) else None


def _params_m(row: pd.Series | None) -> float | None:
    """Inference parameters (total when inference is unknown) in millions."""
    if row is None:
        return None
    for key in ("params_inference", "params_total"):
        v = row.get(key)
        if v is not None and not math.isnan(v):
            return float(v) / 1e6
    return None


def _val(row: pd.Series | None, key: str) -> float | None:
    v = None if row is None else row.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def main_table(runs: pd.DataFrame, eff: pd.DataFrame | None, experiments: pd.DataFrame, dataset: str,
               degradation: str, kinds: Sequence[str] | None = MAIN_KINDS) -> pd.DataFrame:
    """Main comparison: one row per sheet method of ``kinds`` (sheet order) on one dataset / degradation.

    Columns: Method, AP, AP50, AP75, AP_s, AP_m, AP_l (percent), Params (M) (inference), GMAC,
    Latency (ms) (batch 1 median), Precision (training), Init (:func:`_init`), n, source. Efficiency cells come from
    ``efficiency/{method}.json``.
    """
    sel = _runs_of(runs, dataset, degradation)
    rows = []
    for _, exp in _rows(experiments, kinds).iterrows():
        r = sel[sel["method"] == exp["id"]]
        e = _eff_of(eff, exp["id"])
        row = {"Method": exp["display"]}
        row.update({c: fmt_stat(r[c]) if len(r) else MISSING for c in AP_COLUMNS})
        row.update({"Params (M)": fmt_num(_params_m(e)), "GMAC": fmt_num(_val(e, "gmac")),
                    "Latency (ms)": fmt_num(_val(e, "latency_ms")), "Precision": _precision(r), "Init": _init(r),
                    "n": len(r),
                    "source": ";".join(filter(None, [_sources(r), None if e is None else e["path"]]))})
        rows.append(row)
    return pd.DataFrame(rows, columns=["Method", *AP_COLUMNS, "Params (M)", "GMAC", "Latency (ms)", "Precision", "Init",
                                       "n", "source"])


def _token_ratio(exp: pd.Series) -> str:
    level, layer = exp["level_filter_ratio"], exp["layer_filter_ratio"]
    if level == "-" and layer == "-":
        return "–"
    ones = all(float(x) == 1.0 for part in (level, layer) if part != "-" for x in part.split(","))
    return "1 (all tokens)" if ones else f"{level} / {layer}"


def ablation_table(runs: pd.DataFrame, experiments: pd.DataFrame, dataset: str, degradation: str,
                   kinds: Sequence[str] | None = ABLATION_KINDS) -> pd.DataFrame:
    """SDCoNet and its ablations: the switches (✓/✗, routing, token keep ratios level / layer, α), AP, AP_s, the
    training precision, the initialisation and which of the released code's behaviours the model had
    (``Released code``: released / fixed / the ones on)."""
    sel = _runs_of(runs, dataset, degradation)
    rows = []
    for _, exp in _rows(experiments, kinds).iterrows():
        r = sel[sel["method"] == exp["id"]]
        rows.append({"Method": exp["display"], "Saliency": _TICK.get(exp["saliency"], exp["saliency"]),
                     "Shared enc.": _TICK.get(exp["shared_encoder"], exp["shared_encoder"]),
                     "SR branch": _TICK.get(exp["sr_branch"], exp["sr_branch"]), "Routing": exp["routing"],
                     "Token ratio": _token_ratio(exp), "α": exp["alpha"],
                     "AP": fmt_stat(r["AP"]) if len(r) else MISSING,
                     "AP_s": fmt_stat(r["AP_s"]) if len(r) else MISSING, "Precision": _precision(r),
                     "Init": _init(r), "Released code": _behaviour(r), "n": len(r), "source": _sources(r)})
    return pd.DataFrame(rows, columns=["Method", "Saliency", "Shared enc.", "SR branch", "Routing", "Token ratio",
                                       "α", "AP", "AP_s", "Precision", "Init", "Released code", "n", "source"])


SR_REF_DISPLAY = {"nearest": "nearest upscaling (reference)", "bicubic": "bicubic upscaling (reference)"}


def sr_table(runs: pd.DataFrame, experiments: pd.DataFrame, dataset: str, degradation: str,
             references: pd.DataFrame | None = None) -> pd.DataFrame:
    """PSNR (dB) / SSIM of every sheet method with an SR output on this dataset / degradation (sheet order), then
    the interpolation reference rows (``references``: :func:`compare.report.collect.collect_sr_references`)."""
    sel = _runs_of(runs, dataset, degradation)
    refs = []
    if references is not None and len(references):
        ref = references[(references["dataset"] == dataset) & (references["degradation"] == degradation)]
        refs = [{"Method": SR_REF_DISPLAY.get(r["sr_model"], r["sr_model"]), "SR model": r["sr_model"],
                 "PSNR (dB)": f"{r['psnr']:.2f}", "SSIM": f"{r['ssim']:.4f}", "n": "–", "source": r["source"]}
                for _, r in ref.iterrows()]
    rows = []
    for _, exp in experiments.iterrows():
        r = sel[(sel["method"] == exp["id"]) & sel["psnr"].notna()]
        if len(r):
            rows.append({"Method": exp["display"], "SR model": exp["sr_model"],
                         "PSNR (dB)": fmt_stat(r["psnr"], mult=1.0, digits=2),
                         "SSIM": fmt_stat(r["ssim"], mult=1.0, digits=4), "n": len(r), "source": _sources(r)})
    rows += refs  # methods first, in sheet order; the references last
    return pd.DataFrame(rows, columns=["Method", "SR model", "PSNR (dB)", "SSIM", "n", "source"])


def _ratio(value: float | None, ref: float | None) -> str:
    return "–" if value is None or ref is None or ref == 0 else f"{value / ref:.2f}×"


def efficiency_table(eff: pd.DataFrame, experiments: pd.DataFrame, reference: str = "sdconet") -> pd.DataFrame:
    """Params, GMAC, latency, throughput, peak memory per method, and each method's ratio to ``reference``.

    Rows: sheet methods with an efficiency file (sheet order), then files for ids not in the sheet. The ratio
    columns read "this method / SDCoNet" (a serial baseline at 5× costs five times as much).
    """
    if eff is None or not len(eff):
        return pd.DataFrame(columns=["Method", "Input", "Params (M)", "GMAC", "Latency (ms)", "Throughput (img/s)",
                                     "Peak mem (MB)", "Params ratio", "GMAC ratio", "Latency ratio", "source"])
    names = dict(zip(experiments["id"], experiments["display"]))
    order = [m for m in experiments["id"] if m in set(eff["method"])]
    order += [m for m in eff["method"] if m not in names]
    ref = _eff_of(eff, reference)
    rows = []
    for m in order:
        e = _eff_of(eff, m)
        size = "–" if pd.isna(e["input_h"]) else f"{int(e['input_h'])}×{int(e['input_w'])}"
        rows.append({"Method": names.get(m, m), "Input": size, "Params (M)": fmt_num(_params_m(e)),
                     "GMAC": fmt_num(_val(e, "gmac")), "Latency (ms)": fmt_num(_val(e, "latency_ms")),
                     "Throughput (img/s)": fmt_num(_val(e, "throughput_per_s")),
                     "Peak mem (MB)": fmt_num(_val(e, "peak_mem_mb"), 0),
                     "Params ratio": _ratio(_params_m(e), _params_m(ref)),
                     "GMAC ratio": _ratio(_val(e, "gmac"), _val(ref, "gmac")),
                     "Latency ratio": _ratio(_val(e, "latency_ms"), _val(ref, "latency_ms")), "source": e["path"]})
    return pd.DataFrame(rows)


def degradation_table(runs: pd.DataFrame, experiments: pd.DataFrame, dataset: str,
                      degradations: Sequence[str] | None = None,
                      metrics: Sequence[str] = ("AP", "AP_s")) -> pd.DataFrame:
    """Methods (sheet order) x degradations (given order, default: those run, sorted): one column per
    (degradation, metric) named ``"{degradation} {metric}"``."""
    sel = _runs_of(runs, dataset)
    degs = list(degradations) if degradations is not None else sorted(sel["degradation"].unique())
    cols = [f"{d} {m}" for d in degs for m in metrics]
    rows = []
    for _, exp in experiments.iterrows():
        row: dict = {"Method": exp["display"]}
        used = []
        for d in degs:
            r = sel[(sel["method"] == exp["id"]) & (sel["degradation"] == d)]
            used.append(r)
            row.update({f"{d} {m}": fmt_stat(r[m]) if len(r) else MISSING for m in metrics})
        row["source"] = _sources(*used)
        rows.append(row)
    return pd.DataFrame(rows, columns=["Method", *cols, "source"])


def per_class_table(runs: pd.DataFrame, experiments: pd.DataFrame, dataset: str, degradation: str) -> pd.DataFrame:
    """Per-class AP (percent, mean over seeds) of every sheet method run here; class columns in first-seen order."""
    sel = _runs_of(runs, dataset, degradation)
    classes: list[str] = []
    for pc in sel["per_class"]:
        classes += [c for c in (pc or {}) if c not in classes]
    rows = []
    for _, exp in experiments.iterrows():
        r = sel[sel["method"] == exp["id"]]
        if not len(r):
            continue
        row: dict = {"Method": exp["display"]}
        for c in classes:
            s = summary((pc or {}).get(c) for pc in r["per_class"])
            row[c] = NA if s is None else f"{s['mean'] * 100:.1f}"
        row.update({"n": len(r), "source": _sources(r)})
        rows.append(row)
    return pd.DataFrame(rows, columns=["Method", *classes, "n", "source"])


def significance_table(runs: pd.DataFrame, experiments: pd.DataFrame, dataset: str, degradation: str) -> pd.DataFrame:
    """Bootstrap 95 % CIs over test images (``extra.bootstrap`` of each run) for AP and AP_s, per method and seed.

    One row per run that has a bootstrap block (percent, point [low, high], replicates used); runs without one
    are left out (the evaluation was configured with ``report.bootstrap: 0``).
    """
    sel = _runs_of(runs, dataset, degradation)
    rows = []
    for _, exp in experiments.iterrows():
        for _, r in sel[sel["method"] == exp["id"]].iterrows():
            boot = r.get("bootstrap")
            if not isinstance(boot, Mapping):
                continue
            row: dict = {"Method": exp["display"], "seed": int(r["seed"])}
            for m in ("AP", "AP_s"):
                b = boot.get(m) or {}
                ok = all(isinstance(b.get(k), (int, float)) for k in ("point", "low", "high"))
                row[f"{m} [95% CI]"] = (f"{100 * b['point']:.1f} [{100 * b['low']:.1f}, {100 * b['high']:.1f}]"
                                        if ok else NA)
                row[f"{m} n_boot"] = b.get("n_valid", b.get("n_boot", NA))
            row["source"] = r["path"]
            rows.append(row)
    return pd.DataFrame(rows, columns=["Method", "seed", "AP [95% CI]", "AP n_boot", "AP_s [95% CI]",
                                       "AP_s n_boot", "source"])


def job_cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """Per-stage totals of Snakemake's job cost (jobs, total and slowest wall time, peak RSS)."""
    rows = []
    for stage, g in costs.groupby("stage", sort=True):
        slow = g.loc[g["wall_s"].idxmax()]
        rows.append({"Stage": stage, "Jobs": len(g), "Wall total (s)": f"{g['wall_s'].sum():.1f}",
                     "Slowest job": f"{slow['job']} ({slow['wall_s']:.1f} s)",
                     "Peak RSS (MB)": f"{g['max_rss_mb'].max():.0f}" if g["max_rss_mb"].notna().any() else NA,
                     "source": ";".join(g["path"])})
    return pd.DataFrame(rows, columns=["Stage", "Jobs", "Wall total (s)", "Slowest job", "Peak RSS (MB)", "source"])


def write_table(df: pd.DataFrame, out_stem: str | Path, caption: str, label: str,
                bold_best: Mapping[str, str] | None = None, note: str | None = None) -> dict[str, Path]:
    """Write ``{out_stem}.csv`` (every column), ``.md`` and ``.tex`` (without ``source``), each atomically.

    Args:
        df: a display table from this module.
        out_stem: path without suffix, e.g. ``report/tables/main_nwpu_bicubic_x4``.
        caption, label: LaTeX caption / label (the caption also heads the Markdown).
        bold_best: ``{column: "max" | "min"}``: the best cell of each column is bold in Markdown and LaTeX.
        note: an optional footnote (e.g. units).

    Returns:
        ``{"csv": path, "md": path, "tex": path}``.
    """
    stem = Path(out_stem)
    shown = df.drop(columns=["source"], errors="ignore")
    return {"csv": atomic_write_text(f"{stem}.csv", df.to_csv(index=False)),
            "md": atomic_write_text(f"{stem}.md", to_markdown(shown, caption, bold_best, note)),
            "tex": atomic_write_text(f"{stem}.tex", to_latex(shown, caption, label, bold_best, note))}

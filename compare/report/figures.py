"""Report figures (matplotlib, Agg, no pyplot state): each writes one PNG (dpi 150) atomically.

Every function returns the path written, or None (writing nothing) when its input holds nothing to draw.
AP values are drawn in percent; error bars are the sample std over seeds.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from compare.report.tables import summary  # noqa: E402
from benchcore.atomic import atomic_write_bytes  # noqa: E402

DPI = 150


def _save(fig: Figure, out_path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return atomic_write_bytes(out_path, buf.getvalue())


def _order(methods: Sequence[str], experiments: pd.DataFrame | None) -> tuple[list[str], dict[str, str]]:
    """Methods in sheet order (unknown ids last) and their display names."""
    names = {} if experiments is None else dict(zip(experiments["id"], experiments["display"]))
    present = list(dict.fromkeys(methods))
    ordered = [m for m in names if m in present] + [m for m in present if m not in names]
    return ordered, {m: names.get(m, m) for m in ordered}


def _stat(values: pd.Series, mult: float = 100.0) -> tuple[float, float]:
    s = summary(values)
    return (math.nan, 0.0) if s is None else (s["mean"] * mult, s["std"] * mult)


def _select(runs: pd.DataFrame, dataset: str, degradation: str | None) -> pd.DataFrame:
    if runs is None or not len(runs):
        return pd.DataFrame()
    sel = runs["dataset"] == dataset
    if degradation is not None:
        sel &= runs["degradation"] == degradation
    return runs[sel]


def ap_bar(runs: pd.DataFrame, out_path: str | Path, *, dataset: str, degradation: str,
           experiments: pd.DataFrame | None = None, metrics: Sequence[str] = ("AP", "AP_s")) -> Path | None:
    """Grouped bars of ``metrics`` (percent, mean ± std over seeds) per method, sheet order."""
    sel = _select(runs, dataset, degradation)
    if not len(sel):
        return None
    methods, names = _order(sel["method"].tolist(), experiments)
    fig = Figure(figsize=(max(5.0, 0.55 * len(methods) * len(metrics) + 1.5), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(metrics)
    x = np.arange(len(methods))
    for k, metric in enumerate(metrics):
        stats = [_stat(sel.loc[sel["method"] == m, metric]) for m in methods]
        ax.bar(x + (k - (len(metrics) - 1) / 2) * width, [s[0] for s in stats], width,
               yerr=[s[1] for s in stats], capsize=3, label=metric)
    ax.set_xticks(x, [names[m] for m in methods], rotation=30, ha="right")
    ax.set_ylabel("percent")
    ax.set_title(f"{dataset} / {degradation}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path)


def accuracy_vs_cost(runs: pd.DataFrame, eff: pd.DataFrame, out_path: str | Path, *, dataset: str,
                     degradation: str, x: str = "gmac", metric: str = "AP",
                     experiments: pd.DataFrame | None = None) -> Path | None:
    """Scatter of ``metric`` (percent) against cost (``x``: ``"gmac"`` or ``"latency"`` ms at batch 1), labelled."""
    column = {"gmac": "gmac", "latency": "latency_ms"}.get(x)
    if column is None:
        raise ValueError(f"x must be 'gmac' or 'latency', got {x!r}")
    sel = _select(runs, dataset, degradation)
    if not len(sel) or eff is None or not len(eff):
        return None
    methods, names = _order(sel["method"].tolist(), experiments)
    pts = []
    for m in methods:
        cost = eff.loc[eff["method"] == m, column]
        y, err = _stat(sel.loc[sel["method"] == m, metric])
        if len(cost) and not pd.isna(cost.iloc[0]) and not math.isnan(y):
            pts.append((float(cost.iloc[0]), y, err, names[m]))
    if not pts:
        return None
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    # Label the best few points and every SDCoNet row; the rest stay unlabelled so labels stay readable
    # (the tables hold every value).
    best = {label for _, _, _, label in sorted(pts, key=lambda p: -p[1])[:6]}
    for cx, y, err, label in pts:
        ax.errorbar(cx, y, yerr=err, fmt="o", capsize=3)
        if label in best or "SDCoNet" in label:
            ax.annotate(label, (cx, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("GMAC" if x == "gmac" else "latency, batch 1 (ms)")
    ax.set_ylabel(f"{metric} (percent)")
    if min(p[0] for p in pts) > 0 and max(p[0] for p in pts) / min(p[0] for p in pts) > 20:
        ax.set_xscale("log")
    ax.set_title(f"{metric} vs {'GMAC' if x == 'gmac' else 'latency'}: {dataset} / {degradation}")
    ax.grid(alpha=0.3)
    return _save(fig, out_path)


def severity_order(degradations: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Degradation ids from mildest to harshest: by scale, blur sigma, noise sigma, then JPEG (lower = worse)."""
    def key(item: tuple[str, Mapping[str, Any]]) -> tuple:
        d = item[1] or {}
        jpeg = d.get("jpeg")
        return (d["scale"], d.get("blur", 0.0) or 0.0, d.get("noise", 0.0) or 0.0,
                101 - jpeg if jpeg else 0, item[0])
    return [k for k, _ in sorted(degradations.items(), key=key)]


def degradation_curves(runs: pd.DataFrame, out_path: str | Path, *, dataset: str,
                       degradations: Sequence[str] | None = None, metric: str = "AP",
                       experiments: pd.DataFrame | None = None) -> Path | None:
    """``metric`` (percent) against degradation (x in the given severity order, default sorted ids), one line
    per method; draws nothing when fewer than one degradation has runs."""
    sel = _select(runs, dataset, None)
    if not len(sel):
        return None
    present = set(sel["degradation"])
    degs = [d for d in (degradations or sorted(present)) if d in present]
    if not degs:
        return None
    methods, names = _order(sel["method"].tolist(), experiments)
    fig = Figure(figsize=(max(5.0, 1.2 * len(degs) + 3), 4.5))
    ax = fig.add_subplot()
    xs = np.arange(len(degs))
    for m in methods:
        stats = [_stat(sel.loc[(sel["method"] == m) & (sel["degradation"] == d), metric]) for d in degs]
        ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, label=names[m])
    ax.set_xticks(xs, degs, rotation=20, ha="right")
    ax.set_xlabel("degradation (mild → severe)")
    ax.set_ylabel(f"{metric} (percent)")
    ax.set_title(f"{metric} vs degradation: {dataset}")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, out_path)


def per_class_bars(runs: pd.DataFrame, out_path: str | Path, *, dataset: str, degradation: str,
                   experiments: pd.DataFrame | None = None, methods: Sequence[str] | None = None) -> Path | None:
    """Per-class AP (percent, seed mean) as grouped horizontal bars, one group per class."""
    sel = _select(runs, dataset, degradation)
    if not len(sel):
        return None
    if methods is not None:
        sel = sel[sel["method"].isin(methods)]
    classes: list[str] = []
    for pc in sel["per_class"]:
        classes += [c for c in (pc or {}) if c not in classes]
    if not classes:
        return None
    order, names = _order(sel["method"].tolist(), experiments)
    fig = Figure(figsize=(7.0, max(3.0, 0.22 * len(classes) * len(order) + 1)))
    ax = fig.add_subplot()
    height = 0.8 / len(order)
    y = np.arange(len(classes))
    for k, m in enumerate(order):
        pcs = sel.loc[sel["method"] == m, "per_class"]
        vals = [_stat(pd.Series([(pc or {}).get(c) for pc in pcs], dtype=float))[0] for c in classes]
        ax.barh(y + (k - (len(order) - 1) / 2) * height, vals, height, label=names[m])
    ax.set_yticks(y, classes)
    ax.invert_yaxis()
    ax.set_xlabel("AP (percent)")
    ax.set_title(f"per-class AP: {dataset} / {degradation}")
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out_path)


def _boxes(ax: Any, boxes: Sequence[Sequence[Any]], color: str, class_names: Mapping[Any, str] | None,
           score_thr: float | None) -> None:
    for b in boxes:
        x, y, w, h, cls = b[:5]
        score = float(b[5]) if len(b) > 5 else None
        if score_thr is not None and score is not None and score < score_thr:
            continue
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=1.0))
        label = str((class_names or {}).get(cls, cls)) + ("" if score is None else f" {score:.2f}")
        ax.text(x, y - 2, label, color=color, fontsize=5, va="bottom")


def qualitative_grid(items: Sequence[Mapping[str, Any]], out_path: str | Path, score_thr: float = 0.3,
                     class_names: Mapping[Any, str] | None = None) -> Path | None:
    """Rows of examples; columns LR input, SR output (blank when None), HR with GT (green) and predictions (red).

    Args:
        items: dicts ``lr`` (path), ``sr`` (path or None), ``hr`` (path), ``gt`` ``[[x, y, w, h, cls], ...]`` and
            ``pred`` ``[[x, y, w, h, cls, score], ...]`` in HR pixels; optional ``title``.
        score_thr: predictions below this score are not drawn.
        class_names: optional ``{cls: name}`` for the box labels.
    """
    from PIL import Image  # noqa: PLC0415

    if not items:
        return None
    fig = Figure(figsize=(9.0, 3.0 * len(items)))
    axes = fig.subplots(len(items), 3, squeeze=False)
    for row, item in zip(axes, items):
        for ax, key, title in zip(row, ("lr", "sr", "hr"), ("LR input", "SR output", "HR: GT (green), pred (red)")):
            ax.set_axis_off()
            ax.set_title(title if key != "lr" or not item.get("title") else f"{item['title']}: {title}", fontsize=8)
            if item.get(key) is None:
                ax.text(0.5, 0.5, "no SR output", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                continue
            with Image.open(item[key]) as im:
                ax.imshow(np.asarray(im.convert("RGB")))
        _boxes(row[2], item.get("gt") or [], "lime", class_names, None)
        preds = list(item.get("pred") or [])
        if preds and not any(p[5] >= score_thr for p in preds):
            # An undertrained model (e.g. the demo) scores below the threshold: show its top 5 and say so.
            preds = sorted(preds, key=lambda p: -p[5])[:5]
            row[2].set_title(f"HR: GT (green), top-5 pred (red; all scores < {score_thr})", fontsize=8)
            _boxes(row[2], preds, "red", class_names, None)
        else:
            _boxes(row[2], preds, "red", class_names, score_thr)
    return _save(fig, out_path)

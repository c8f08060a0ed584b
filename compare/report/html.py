"""The whole report: tables (CSV / Markdown / LaTeX), figures (PNG) and one self-contained ``index.html``.

:func:`build_report` is a pure function of the result files, the config and the experiments sheet: it never
edits anything under the results folder except ``out_dir``, which it rebuilds atomically as a whole.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from compare.report import figures as F
from compare.report import tables as T
from compare.report.collect import (collect_efficiency, collect_job_costs, collect_runs, collect_sr_references,
                                    expected_runs, missing_runs, qualitative_items)
from benchcore.experiments import load_experiments, select
from compare.report.latex import best_cells
from compare.report.reference import load_reference, reference_table
from benchcore.atomic import atomic_dir, atomic_write_text

_AP_BEST = {c: "max" for c in T.AP_COLUMNS} | {"Params (M)": "min", "GMAC": "min", "Latency (ms)": "min"}
_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
        "font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}"
        ".note{color:#a40}img{max-width:100%}pre{font-size:11px;background:#f6f6f6;padding:.5em}")


@dataclass
class Section:
    """One table or figure of the report (``df`` for a table, ``png`` for a figure; ``note`` when empty)."""

    title: str
    caption: str
    df: pd.DataFrame | None = None
    bold: dict[str, str] = field(default_factory=dict)
    png: Path | None = None
    note: str | None = None
    files: dict[str, Path] = field(default_factory=dict)


def _html_table(df: pd.DataFrame, bold: Mapping[str, str] | None = None) -> str:
    best = best_cells(df, bold)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = [f"<td><b>{html.escape(str(v))}</b></td>" if (i, c) in best else f"<td>{html.escape(str(v))}</td>"
                 for c, v in zip(df.columns, row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ordered(preferred: Sequence[str], found: Sequence[str]) -> list[str]:
    return list(preferred) + sorted(set(found) - set(preferred))


def _tables(runs: pd.DataFrame, eff: pd.DataFrame, exps: pd.DataFrame, datasets: list[str], degs: list[str],
            reference: Mapping[str, Any], protocol: str | None = None,
            sr_refs: pd.DataFrame | None = None) -> list[tuple[str, Section]]:
    """(file stem, section) for every table; empty optional tables are left out. Every table with AP numbers names
    the AP protocol of its runs (``protocol``: the configured one, named when a table has no runs)."""
    out: list[tuple[str, Section]] = []
    pct = "COCO box metrics in percent, mean ± sample std over seeds (n = seeds)."
    prec = "Precision: each run's training precision (fp16 autocast = AMP on CUDA). " + T.INIT_NOTE
    for ds in datasets:
        sel_ds = runs[runs["dataset"] == ds]
        for deg in degs:
            t = f"{ds} / {deg}"
            proto = T.protocol_caption(sel_ds[sel_ds["degradation"] == deg], protocol)
            out.append((f"main_{ds}_{deg}", Section(f"Main results: {t}", f"Main results on {ds}, {deg}. {pct} "
                        f"{proto} Params: inference parameters; GMAC: one image; latency: batch-1 median. {prec}",
                        T.main_table(runs, eff, exps, ds, deg), _AP_BEST)))
            if (exps["kind"] == "ablation").any():
                out.append((f"ablation_{ds}_{deg}", Section(f"Ablations: {t}", f"SDCoNet ablations on {ds}, {deg}. "
                            f"{pct} {proto} Token ratio: level / layer keep ratios. {prec}",
                            T.ablation_table(runs, exps, ds, deg), {"AP": "max", "AP_s": "max"})))
            sr = T.sr_table(runs, exps, ds, deg, sr_refs)
            if len(sr):
                out.append((f"sr_{ds}_{deg}", Section(f"SR quality: {t}", f"SR quality on {ds}, {deg}: PSNR (dB) "
                            "and SSIM, mean ± sample std over seeds; reference rows: plain interpolation of the LR "
                            "tiles, scored the same way (report.sr_references).", sr,
                            {"PSNR (dB)": "max", "SSIM": "max"})))
            sig = T.significance_table(runs, exps, ds, deg)
            if len(sig):
                out.append((f"significance_{ds}_{deg}", Section(f"Bootstrap CIs: {t}", f"AP and AP_s (percent) "
                            f"on {ds}, {deg} with 95 % percentile-bootstrap intervals over test images (per run), "
                            f"each under its run's own AP protocol. {proto}", sig, None)))
            pc = T.per_class_table(runs, exps, ds, deg)
            if len(pc):
                cls = {c: "max" for c in pc.columns if c not in ("Method", "n", "source")}
                out.append((f"perclass_{ds}_{deg}", Section(f"Per-class AP: {t}", f"Per-class AP (percent, mean "
                            f"over seeds) on {ds}, {deg}, at the protocol's largest maxDets. {proto}", pc, cls)))
        dt = T.degradation_table(runs, exps, ds, degs)
        out.append((f"degradation_{ds}", Section(f"Degradations: {ds}", f"AP and AP_s (percent) per degradation "
                    f"on {ds}. {pct} {T.protocol_caption(sel_ds, protocol)}", dt,
                    {c: "max" for c in dt.columns if c not in ("Method", "source")})))
    if len(eff):
        out.append(("efficiency", Section("Efficiency", "Efficiency per method (params: inference, GMAC: one image, "
                    "latency: batch-1 median, throughput at batch N); ratios = method / SDCoNet.",
                    T.efficiency_table(eff, exps), {"Params (M)": "min", "GMAC": "min", "Latency (ms)": "min"})))
    if reference:
        out.append(("reference", Section("Paper vs reproduced", "Reference numbers (user-supplied) vs reproduced "
                    "runs; Δ = reproduced − paper (percentage points for AP). Reproduced runs: "
                    f"{T.protocol_caption(runs, protocol)} The released code scores with the mmdet protocol.",
                    reference_table(runs, reference, exps))))
    return out


def _figures(results_dir: Path, runs: pd.DataFrame, eff: pd.DataFrame, exps: pd.DataFrame, datasets: list[str],
             degs: list[str], fig_dir: Path) -> list[Section]:
    out = []

    def add(title: str, caption: str, path: Path | None, why: str = "no runs to draw") -> None:
        out.append(Section(title, caption, png=path, note=None if path else why))

    for ds in datasets:
        for deg in degs:
            t, stem = f"{ds} / {deg}", f"{ds}_{deg}"
            kw = {"dataset": ds, "degradation": deg, "experiments": exps}
            proto = T.protocol_caption(runs[(runs["dataset"] == ds) & (runs["degradation"] == deg)])
            add(f"AP and AP_s: {t}", f"AP and AP_s per method (percent; error bars: std over seeds). {proto}",
                F.ap_bar(runs, fig_dir / f"ap_bar_{stem}.png", **kw))
            for x in ("gmac", "latency"):
                add(f"AP vs {x}: {t}", f"AP against {'GMAC' if x == 'gmac' else 'batch-1 latency'}.",
                    F.accuracy_vs_cost(runs, eff, fig_dir / f"ap_vs_{x}_{stem}.png", x=x, **kw),
                    "no method has both runs and an efficiency file")
            add(f"Per-class AP: {t}", "Per-class AP (percent, seed mean).",
                F.per_class_bars(runs, fig_dir / f"per_class_{stem}.png", **kw))
            sel = runs[(runs["dataset"] == ds) & (runs["degradation"] == deg) & runs["detections"].notna()]
            # The best-scoring run (SDCoNet wins ties), so the grid shows predictions, not an untrained model.
            sel = sel.assign(_p=(sel["method"] != "sdconet"), _ap=-sel["AP"].fillna(-1.0))
            sel = sel.sort_values(["_ap", "_p", "seed"])
            items = []
            if len(sel):
                best = sel.iloc[0].to_dict()
                sr_dir = None
                if exps is not None and best["method"] in set(exps["id"]):
                    row = exps.set_index("id").loc[best["method"]]
                    if row["input"] == "sr":
                        sr_dir = (Path(results_dir) / ds / deg / "sr" / row["sr_model"]
                                  / f"seed{int(best['seed'])}" / "images")
                items = qualitative_items(results_dir, best, sr_dir=sr_dir)
            add(f"Qualitative: {t}", f"{sel.iloc[0]['method']} seed {sel.iloc[0]['seed']}" if items else "",
                F.qualitative_grid(items, fig_dir / f"qualitative_{stem}.png"),
                "no detections.json with matching test tiles under data/")
        add(f"AP vs degradation: {ds}", "AP per method against degradation, mild to severe. "
            f"{T.protocol_caption(runs[runs['dataset'] == ds])}",
            F.degradation_curves(runs, fig_dir / f"degradation_{ds}.png", dataset=ds, degradations=degs,
                                 experiments=exps))
    return out


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _page(tables: list[tuple[str, Section]], figs: list[Section], runs: pd.DataFrame, missing: pd.DataFrame,
          notes: list[str], protocol: str | None = None) -> str:
    h = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>sdconet-bench report</title>",
         f"<style>{_CSS}</style></head><body><h1>sdconet-bench report</h1>"]
    h += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    precisions = ", ".join(f"{p}: {n} run{'s' if n != 1 else ''}"
                           for p, n in sorted(runs["precision"].value_counts().items())) or "no runs"
    h.append(f"<p><b>Evaluation.</b> {html.escape(T.protocol_caption(runs, protocol))} Training precision: "
             f"{html.escape(precisions)} (per method in the main and ablation tables).</p>")
    sdc = runs[runs["behaviour"].isin(["released", "fixed"]) | runs["behaviour"].str.startswith("released:")] \
        if len(runs) else runs
    kinds = ", ".join(f"{b}: {n} run{'s' if n != 1 else ''}" for b, n in sorted(sdc["behaviour"].value_counts().items()))
    h.append("<p><b>Released code behaviours</b> (SDCoNet runs; the released code has all four: the double residual in "
             "the deformable encoder, the res_4 view, identical head copies at init, the Kaiming neck SR conv; "
             f"docs/methods.md). {html.escape(kinds or 'no SDCoNet runs')} (per method in the ablation tables).</p>")
    inits = ", ".join(f"{i}: {n} runs" for i, n in sorted(runs["init"].value_counts().items())) or "no runs"
    scratch = int((runs["init"] == "scratch").sum()) if len(runs) else 0
    warn = (f" <b>{scratch} runs were trained from random weights (init: scratch, marked {T.SCRATCH_MARK}); the "
            f"recipes start from pretrained weights.</b>" if scratch else "")
    h.append(f"<p><b>Initialisation.</b> {html.escape(inits)} (per method in the main and ablation tables; "
             f"docs/weights.md).{warn}</p>")
    h.append(f"<p>{len(runs)} runs collected; {len(missing)} expected runs missing. Every number comes from the "
             "metrics.json files listed in each CSV's <code>source</code> column (tables/).</p><h2>Tables</h2>")
    for stem, s in tables:
        h.append(f"<h3>{html.escape(s.title)}</h3><p>{html.escape(s.caption)}</p>")
        h.append(_html_table(s.df.drop(columns=["source"], errors="ignore"), s.bold))
        h.append(" ".join(f"<a href='tables/{stem}.{k}'>{k}</a>" for k in ("csv", "md", "tex")))
    h.append("<h2>Figures</h2>")
    for s in figs:
        h.append(f"<h3>{html.escape(s.title)}</h3>")
        h.append(f"<p>{html.escape(s.caption)}</p>{_img(s.png)}" if s.png else
                 f"<p class='note'>Not drawn: {html.escape(s.note or '')}.</p>")
    h.append(f"<h2>Missing runs ({len(missing)})</h2>")
    h.append(_html_table(missing) if len(missing) else "<p>None: every expected run is present.</p>")
    h.append("<h2>Provenance</h2>")
    cols = ["dataset", "degradation", "method", "seed", "protocol", "precision", "init", "behaviour", "git_sha",
            "config_hash", "device", "created_utc", "path"]
    h.append(_html_table(runs[cols]) if len(runs) else "<p>No runs.</p>")
    for _, r in runs.iterrows():
        key = html.escape(r["path"])
        cfg = html.escape(json.dumps(r["config"], indent=1, sort_keys=True, default=str))
        h.append(f"<details><summary>config of {key} ({html.escape(str(r['config_hash']))})</summary>"
                 f"<pre>{cfg}</pre></details>")
    h.append("</body></html>")
    return "\n".join(h)


def build_report(results_dir: str | Path, config: Mapping[str, Any] | str | Path, experiments_path: str | Path,
                 out_dir: str | Path, seeds: Sequence[int], reference_path: str | Path | None = None,
                 methods: Sequence[str] | None = None) -> Path:
    """Collect every result file and write ``out_dir/{tables,figures}`` and ``out_dir/index.html``.

    Args:
        results_dir: the folder holding ``{dataset}/{degradation}/{method}/seed{seed}/metrics.json`` and
            ``efficiency/{method}.json``.
        config: the workflow config (dict or YAML path): its datasets / degradations define the expected runs.
        experiments_path: the experiments sheet.
        out_dir: the report folder, rebuilt atomically (must not be ``results_dir`` or contain it).
        seeds: the seeds every run should have; runs with other seeds are left out (and counted in a note).
        reference_path: optional reference numbers (see :mod:`compare.report.reference`).
        methods: restrict to these method ids (None = the whole sheet).

    Returns:
        The path of ``index.html``.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if results_dir.resolve() == out_dir.resolve() or results_dir.resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"out_dir {out_dir} would replace the results folder {results_dir}")
    cfg = yaml.safe_load(Path(config).read_text()) if isinstance(config, (str, Path)) else dict(config)
    exps = select(load_experiments(experiments_path), methods=list(methods) if methods is not None else None)
    reference = load_reference(reference_path)
    all_runs = collect_runs(results_dir)
    eff = collect_efficiency(results_dir)
    keep = all_runs["seed"].isin(list(seeds)) & all_runs["method"].isin(list(exps["id"]))
    runs = all_runs[keep].reset_index(drop=True)
    eff = eff[eff["method"].isin(list(exps["id"]))].reset_index(drop=True)
    notes = [f"{int((~keep).sum())} collected run(s) left out: seed not in {list(seeds)} or method not selected."
             ] if (~keep).any() else []
    if reference_path is not None and not reference:
        notes.append(f"{reference_path} holds no reference numbers: no paper-vs-reproduced table.")
    missing = missing_runs(expected_runs(cfg, exps, list(seeds)), runs)
    protocol = (cfg.get("evaluation") or {}).get("protocol", "coco")  # the schema's default
    datasets = _ordered(list(cfg.get("datasets", {})), runs["dataset"].unique())
    degs = _ordered(F.severity_order(cfg.get("degradations", {})), runs["degradation"].unique())
    with atomic_dir(out_dir) as tmp:
        sr_refs = collect_sr_references(results_dir, list((cfg.get("report") or {}).get("sr_references") or []))
        tables = _tables(runs, eff, exps, datasets, degs, reference, protocol, sr_refs)
        costs = collect_job_costs(results_dir)
        if len(costs):
            tables.append(("job_cost", Section("Job cost (Snakemake benchmark files)", "What each stage's jobs cost "
                           "on the machine that ran them (Snakemake benchmark: files), reported separately from "
                           "the efficiency measurement of the methods.", T.job_cost_table(costs), None)))
        from compare.report.plan_costs import plan_cost_table  # noqa: PLC0415  (docs/plan.md)

        planned = plan_cost_table(results_dir)  # None unless results_dir/plan.json (python -m compare.plan --json)
        if planned is not None:
            tables.append(("job_cost_plan", Section("Job cost: plan estimate vs actual", "The plan's estimated seconds "
                           "per rule (python -m compare.plan, results_dir/plan.json) against the wall and CPU seconds "
                           "of Snakemake's benchmark files for the same jobs (docs/plan.md).", planned, None)))
        for stem, s in tables:
            s.files = T.write_table(s.df, tmp / "tables" / stem, s.caption, f"tab:{stem}", s.bold)
        flat = runs.drop(columns=["config"]).assign(per_class=runs["per_class"].map(json.dumps))
        atomic_write_text(tmp / "tables" / "runs.csv", flat.to_csv(index=False))
        atomic_write_text(tmp / "tables" / "missing_runs.csv", missing.to_csv(index=False))
        figs = _figures(results_dir, runs, eff, exps, datasets, degs, tmp / "figures")
        atomic_write_text(tmp / "index.html", _page(tables, figs, runs, missing, notes, protocol))
    return out_dir / "index.html"

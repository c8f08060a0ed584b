"""Plan estimate against actual job cost: per rule, the plan's estimated seconds (``python -m compare.plan --json``)
next to the wall seconds Snakemake's ``benchmark:`` files recorded for the same jobs.

A plan job is matched to its benchmark file by the path below ``benchmarks/`` (the plan records each job's
``benchmark:`` path from the dry run), so a plan made with another ``results_dir`` still matches. Rules without a
benchmark file (``run_spec``, ``stage_weights``, ``all``) show the estimate only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from compare.report.collect import collect_job_costs

PLAN_FILE = "plan.json"  # where `python -m compare.plan --json` is expected under the results folder
COLUMNS = ["Rule", "Jobs", "Device", "Estimate (s)", "Actual (s)", "Actual CPU (s)", "Jobs measured",
           "Actual / estimate"]


def _key(path: str | None) -> str | None:
    if not path:
        return None
    parts = Path(path).as_posix().split("benchmarks/", 1)
    return parts[1] if len(parts) == 2 else None


def estimate_frame(plan: Mapping[str, Any]) -> pd.DataFrame:
    """One row per planned job: rule, gpu, seconds, key (its benchmark path below ``benchmarks/``)."""
    return pd.DataFrame([{"rule": j["rule"], "gpu": bool(j["gpu"]), "seconds": float(j["seconds"]),
                          "key": _key(j.get("benchmark"))} for j in plan["jobs"]],
                        columns=["rule", "gpu", "seconds", "key"])


def _cpu(cpu: Mapping[str, Any], keys: Any) -> str:
    vals = [cpu[k] for k in keys if k in cpu and pd.notna(cpu[k])]
    return f"{sum(vals):.1f}" if vals else "-"


def plan_vs_actual(plan: Mapping[str, Any], costs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: estimated seconds (all planned jobs), actual wall and CPU seconds (the jobs with a benchmark file;
    CPU seconds are the load-independent figure on a busy machine), and the wall ratio over the jobs that have both.
    ``costs``: :func:`compare.report.collect.collect_job_costs`."""
    est = estimate_frame(plan)
    actual = {p.split("benchmarks/", 1)[1]: w for p, w in zip(costs["path"], costs["wall_s"])} if len(costs) else {}
    cpu = ({p.split("benchmarks/", 1)[1]: c for p, c in zip(costs["path"], costs["cpu_time_s"])} if len(costs)
           else {})
    rows = []
    for rule, g in est.groupby("rule", sort=False):
        hit = g[g["key"].isin(actual)]
        act = sum(actual[k] for k in hit["key"])
        est_hit = hit["seconds"].sum()
        rows.append({"Rule": rule, "Jobs": len(g), "Device": "gpu" if g["gpu"].any() else "cpu",
                     "Estimate (s)": f"{g['seconds'].sum():.1f}", "Actual (s)": f"{act:.1f}" if len(hit) else "-",
                     "Actual CPU (s)": _cpu(cpu, hit["key"]),
                     "Jobs measured": len(hit),
                     "Actual / estimate": f"{act / est_hit:.2f}" if len(hit) and est_hit > 0 else "-"})
    tot_hit = est[est["key"].isin(actual)]
    act = sum(actual[k] for k in tot_hit["key"])
    rows.append({"Rule": "total", "Jobs": len(est), "Device": "",
                 "Estimate (s)": f"{est['seconds'].sum():.1f}", "Actual (s)": f"{act:.1f}",
                 "Actual CPU (s)": _cpu(cpu, tot_hit["key"]),
                 "Jobs measured": len(tot_hit),
                 "Actual / estimate": f"{act / tot_hit['seconds'].sum():.2f}" if tot_hit["seconds"].sum() else "-"})
    return pd.DataFrame(rows, columns=COLUMNS)


def plan_cost_table(results_dir: str | Path, plan_path: str | Path | None = None) -> pd.DataFrame | None:
    """The estimate-vs-actual table of a results folder, or None when it has no plan (``results_dir/plan.json``,
    written by ``python -m compare.plan --json results/plan.json``)."""
    path = Path(plan_path) if plan_path else Path(results_dir) / PLAN_FILE
    if not path.is_file():
        return None
    return plan_vs_actual(json.loads(path.read_text(encoding="utf-8")), collect_job_costs(results_dir))

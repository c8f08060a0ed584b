"""``python -m compare.plan --configfile FILE [--calibration FILE.json | --calibrate] [--device cpu|cuda] [--cores N]
[--json OUT]``: per rule and in total, the job count and the estimated GPU-hours and CPU-hours, and the wall time of a
local run on ``--cores``, with the assumptions stated (docs/plan.md)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from compare.plan.costs import Plan, build_plan, calibration_needs
from compare.plan.dag import dry_run_jobs
from compare.plan.workload import Workload, load_config


def _hms(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_plan(plan: Plan, configfile: str | None) -> str:
    """The printed plan: the per-rule table, totals, the local wall time and the assumptions."""
    rows = plan.per_rule()
    lines = [f"plan for {configfile or 'config/config.yaml (default)'}: {len(plan.costs)} jobs "
             f"(snakemake's forced dry run)", "",
             f"{'rule':<20} {'jobs':>5} {'device':>6} {'job-hours':>10} {'GPU-hours':>10} {'CPU-hours':>10}",
             "-" * 66]
    for r in rows:
        lines.append(f"{r['rule']:<20} {r['jobs']:>5} {'gpu' if r['gpu'] else 'cpu':>6} {r['seconds'] / 3600:>10.3f} "
                     f"{r['gpu_hours']:>10.3f} {r['cpu_hours']:>10.3f}")
    t = plan.totals()
    lines += ["-" * 66, f"{'total':<20} {t['jobs']:>5} {'':>6} {t['seconds'] / 3600:>10.3f} {t['gpu_hours']:>10.3f} "
                        f"{t['cpu_hours']:>10.3f}", "",
              f"GPU-hours {t['gpu_hours']:.2f}, CPU-hours {t['cpu_hours']:.2f}; estimated wall time of a local run on "
              f"{plan.cores} core(s): {_hms(t['wall_s'])} ({t['wall_s']:.0f} s)", "", "assumptions:"]
    lines += [f"  - {a}" for a in plan.assumptions]
    return "\n".join(lines)


def plan_json(plan: Plan, configfile: str | None) -> dict[str, Any]:
    """The plan as a JSON document (per rule, totals, every job, assumptions, the calibration's provenance)."""
    cal = {k: v for k, v in plan.calibration.items() if k != "figures"}
    return {"configfile": configfile, "cores": plan.cores, "per_rule": plan.per_rule(), "totals": plan.totals(),
            "snakemake_counts": plan.snakemake_counts, "assumptions": plan.assumptions, "calibration": cal,
            "jobs": [{"rule": c.job.rule, "jobid": c.job.jobid, "wildcards": c.job.wildcards, "seconds": c.seconds,
                      "gpu": c.gpu, "threads": c.threads, "basis": c.basis, "benchmark": c.job.benchmark}
                     for c in plan.costs]}


def make_plan(configfile: str | None, calibration: str | Path | None = None, calibrate: bool = False,
              device: str = "cpu", cores: int = 1, overrides: tuple[str, ...] = (), threads: int = 1,
              save_calibration: str | Path | None = None, max_side: int | None = None) -> Plan:
    """Dry run, workload, calibration (read or measured now), cost model, packing."""
    from compare.calibrate import calibrate as measure, load_calibration  # noqa: PLC0415

    t0 = time.perf_counter()
    jobs, counts = dry_run_jobs(configfile, cores, overrides)
    parse_s = time.perf_counter() - t0
    wl = Workload(load_config(configfile, overrides))
    if calibrate:
        needs = calibration_needs(jobs, wl, device)
        print(f"calibrating {len(needs)} models on {device} ...", file=sys.stderr)
        calib = measure(needs, device, threads, log=lambda s: print(s, file=sys.stderr), max_side=max_side)
        calib["configfiles"] = [configfile]
        if save_calibration:
            from benchcore.atomic import atomic_write_json  # noqa: PLC0415

            atomic_write_json(save_calibration, calib)
            calib["path"] = str(save_calibration)
    elif calibration:
        calib = load_calibration(calibration)
        calib["path"] = str(calibration)
    else:
        raise ValueError("give --calibration FILE.json (e.g. docs/calibration/cpu-2core.json) or --calibrate")
    return build_plan(jobs, counts, wl, calib, cores, parse_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.plan", description=__doc__)
    p.add_argument("--configfile", default=None, help="workflow config (default: the demo, config/config.yaml)")
    p.add_argument("--config", nargs="*", default=[], help="key=value overrides, as snakemake --config")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--calibration", help="stored calibration JSON (docs/calibration/*.json)")
    src.add_argument("--calibrate", action="store_true", help="measure the configuration's models now")
    p.add_argument("--device", default="cpu", help="device to calibrate on: cpu or cuda (with --calibrate)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads when calibrating (default 1)")
    p.add_argument("--max-side", type=int, default=None,
                   help="with --calibrate: measure larger sides at this one and scale by pixel count")
    p.add_argument("--save-calibration", help="with --calibrate: write the measured calibration here")
    p.add_argument("--cores", type=int, default=1, help="cores of the local run to pack the jobs onto (default 1)")
    p.add_argument("--json", type=Path, help="also write the plan as JSON here")
    a = p.parse_args(argv)
    try:
        plan = make_plan(a.configfile, a.calibration, a.calibrate, a.device, a.cores, tuple(a.config), a.threads,
                         a.save_calibration, a.max_side)
    except (RuntimeError, ValueError, KeyError) as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    print(format_plan(plan, a.configfile))
    if a.json:
        a.json.write_text(json.dumps(plan_json(plan, a.configfile), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Job calibration: what a job costs beyond its images, from two tiny real runs of the workflow.

The images/s calibration (:mod:`compare.calibrate`) covers the training and inference steps. A real job also starts
a process, reads its data, builds its model, saves checkpoints, and (ultralytics) validates, plots and writes
metrics every epoch; on the demo this was most of a detector job (docs/plan.md). Nothing models those parts
reliably from first principles, so they are measured: the planned configuration is run twice, for real, on a tiny
synthetic dataset with one method per family (SDCoNet, YOLO, Faster R-CNN, an SR network, an interpolation),
at 1 and then 2 training epochs. Per job, the residual is Snakemake's measured wall time (its ``benchmark:`` file,
or the log's timestamps for ``run:`` rules) minus the modelled image work; per key (the rule, split by program
where one rule runs several, :func:`compare.plan.costs.job_terms`):

* keys with epochs (``train_sdconet``, ``train_detector/yolo``, ``train_detector/frcnn``): ``per_epoch_s`` = the
  mean residual at 2 epochs minus at 1 (at least 0), ``fixed_s`` = the 1-epoch residual minus ``per_epoch_s``;
* every other key: ``fixed_s`` = the mean residual per unit (the efficiency job: per method), ``per_epoch_s`` 0.

The plan then costs a job ``units x fixed_s + epochs x per_epoch_s + modelled work``. Everything else in the
configuration (presets, initialisation, devices, validation settings) stays the user's: only the data, the methods,
the seeds, the sweep and the epoch / iteration budgets are replaced (:func:`calibration_config`).
"""
from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from compare.plan.costs import job_terms
from compare.plan.dag import REPO, Job, dry_run_jobs
from compare.plan.workload import Workload, load_config

EPOCH_KEYS = ("train_sdconet", "train_detector/yolo", "train_detector/frcnn")
SR_ITERS_PER_EPOCH = 20   # the calibration's SR training: 20 iterations per "epoch" of the run (20, then 40)


def representative_methods(config: Mapping[str, Any]) -> list[str]:
    """One method per family the configuration runs, first in its order: an SDCoNet-kind row, a YOLO row, a Faster
    R-CNN row, a row with a learned SR network, a row with an interpolation."""
    from baselines.pipeline import SR_INTERP  # noqa: PLC0415
    from benchcore.experiments import load_experiments  # noqa: PLC0415

    exp = load_experiments(config["experiments"]).set_index("id", drop=False)
    methods = list(config.get("methods") or exp.index) + list((config.get("sweep") or {}).get("methods") or [])
    families: dict[str, str] = {}
    for m in methods:
        row = exp.loc[m]
        fams = []
        if row["kind"] != "serial":
            fams.append("sdconet")
        else:
            fams.append("frcnn" if row["detector"] == "frcnn" else "yolo")
            if row["input"] == "sr":
                fams.append("interp" if row["sr_model"] in SR_INTERP else "sr")
        for f in fams:
            families.setdefault(f, m)
    return list(dict.fromkeys(families.values()))


def calibration_config(config: Mapping[str, Any], results_dir: str | Path, epochs: int,
                       n_images: int = 6) -> dict[str, Any]:
    """The planned (resolved) configuration with tiny synthetic data, its representative methods, one seed, no
    sweep, and ``epochs`` training epochs (SR: ``SR_ITERS_PER_EPOCH x epochs`` iterations)."""
    cfg = yaml.safe_load(yaml.safe_dump(dict(config)))  # a deep, plain copy
    first = next(iter(cfg["datasets"].values()))
    tile = int((first.get("tile") or {}).get("size", 512))
    main = cfg.get("main_degradation") or next(iter(cfg["degradations"]))
    methods = representative_methods(cfg)
    cfg.update({
        "results_dir": str(results_dir),
        "datasets": {"calib": {"source": "demo", "demo": {"n_images": n_images, "size": tile, "seed": 0},
                               "tile": {"size": tile, "gap": 0, "pad": True},
                               "partition": {"mode": "ratio", "ratios": {"train": 0.5, "val": 0.17, "test": 0.33},
                                             "seed": 0}}},
        "degradations": {main: cfg["degradations"][main]},
        "main_degradation": main,
        "methods": methods,
        "seeds": [int(cfg["seeds"][0])],
        "sweep": {"degradations": [], "methods": []},
    })
    cfg["sdconet"]["set"] = {**cfg["sdconet"].get("set", {}), "train.epochs": epochs, "train.unfreeze_epoch": 0,
                             "train.milestones": [epochs + 1]}
    sr_iters = SR_ITERS_PER_EPOCH * epochs
    cfg["baselines"]["set"] = {**cfg["baselines"].get("set", {}), "yolo.epochs": epochs, "frcnn.epochs": epochs,
                               "sr.iters": sr_iters, "sr.checkpoint_every": sr_iters}
    cfg["report"] = {**cfg.get("report", {}), "bootstrap": 0}
    return cfg


def _benchmark_seconds(path: str) -> float | None:
    p = Path(path)
    if not p.is_file():
        return None
    lines = p.read_text(encoding="utf-8").strip().splitlines()
    return float(lines[-1].split("\t")[0]) if len(lines) >= 2 else None


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def log_durations(text: str) -> dict[str, list[float]]:
    """{rule: [seconds]} of the jobs in a Snakemake log, from the timestamps before each job's start (``rule X:`` /
    ``localrule X:`` with its ``jobid:``) and its ``Finished jobid: N``; 1 s resolution."""
    import datetime as dt  # noqa: PLC0415

    stamp = None
    start: dict[str, tuple[str, dt.datetime]] = {}
    out: dict[str, list[float]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _STAMP.match(line.strip())
        if m:
            stamp = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        rm = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if rm and stamp is not None:
            for follow in lines[i + 1:i + 12]:
                jm = re.match(r"^\s+jobid: (\d+)$", follow)
                if jm:
                    start[jm.group(1)] = (rm.group(1), stamp)
                    break
        fm = re.match(r"^Finished job(?:id)?:? (\d+)", line.strip())
        if fm and stamp is not None and fm.group(1) in start:
            rule, t0 = start.pop(fm.group(1))
            out.setdefault(rule, []).append((stamp - t0).total_seconds())
    return out


def residuals(jobs: Sequence[Job], wl: Workload, calib: Mapping[str, Any], log_text: str
              ) -> list[tuple[str, int, int, float]]:
    """[(key, epochs, units, measured - modelled work seconds)] of the jobs of one calibration run."""
    durations = log_durations(log_text)
    notes: set[str] = set()
    rows = []
    for job in jobs:
        t = job_terms(job, wl, calib, 0.0, notes)
        if t.units == 0:
            continue
        actual = _benchmark_seconds(job.benchmark) if job.benchmark else None
        if actual is None and durations.get(job.rule):
            actual = durations[job.rule].pop(0)
        if actual is not None:
            rows.append((t.key, t.epochs, t.units, actual - t.work_s))
    return rows


def fit(rows: Sequence[tuple[str, int, int, float]]) -> dict[str, dict[str, Any]]:
    """{key: {fixed_s, per_epoch_s, jobs}} from the residuals of both runs (see the module docstring)."""
    by_key: dict[str, list[tuple[int, int, float]]] = {}
    for key, ep, units, r in rows:
        by_key.setdefault(key, []).append((ep, units, r))
    out: dict[str, dict[str, Any]] = {}
    for key, vals in sorted(by_key.items()):
        eps = sorted({ep for ep, _, _ in vals})
        if key in EPOCH_KEYS and len(eps) >= 2:
            mean = {e: statistics.fmean(r / u for ep, u, r in vals if ep == e) for e in eps}
            lo, hi = eps[0], eps[-1]
            per_epoch = max(0.0, (mean[hi] - mean[lo]) / (hi - lo))
            fixed = max(0.0, mean[lo] - per_epoch * lo)
        else:
            per_epoch, fixed = 0.0, max(0.0, statistics.fmean(r / u for _, u, r in vals))
        out[key] = {"fixed_s": round(fixed, 3), "per_epoch_s": round(per_epoch, 3), "jobs": len(vals)}
    return out


def run_workflow(config: Mapping[str, Any], work: Path, cores: int) -> tuple[str, float]:
    """``snakemake all`` on ``config`` (written to ``work/calib.yaml``); (its log text, wall seconds)."""
    cfgfile = work / "calib.yaml"
    cfgfile.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    exe = str(Path(sys.executable).with_name("snakemake"))
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "-s", str(REPO / "Snakefile"), "all", "--cores", str(cores), "--configfile",
                           str(cfgfile), "--directory", str(work)], cwd=work, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    text = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-20:])
        raise RuntimeError(f"job calibration: the workflow run in {work} failed:\n{tail}")
    return text, wall


def calibrate_jobs(configfile: str | None, calib: Mapping[str, Any], overrides: Sequence[str] = (), cores: int = 1,
                   workdir: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the calibration workflow at 1 and 2 epochs and fit the per-key costs; the ``job_costs`` section and
    what it was measured on (``job_calibration``)."""
    config = load_config(configfile, overrides)
    methods = representative_methods(config)
    rows: list[tuple[str, int, int, float]] = []
    runs = []
    with tempfile.TemporaryDirectory(prefix="plan_jobcal_", dir=workdir) as tmp:
        for epochs in (1, 2):
            work = Path(tmp) / f"epochs{epochs}"
            work.mkdir()
            cfg = calibration_config(config, work / "results", epochs)
            log(f"job calibration: {epochs} epoch(s), methods {cfg['methods']}, {cores} core(s) ...")
            text, wall = run_workflow(cfg, work, cores)
            jobs, _counts = dry_run_jobs(str(work / "calib.yaml"), cores)  # absolute paths: the same files
            rows += residuals(jobs, Workload(load_config(work / "calib.yaml")), calib, text)
            runs.append({"epochs": epochs, "wall_s": round(wall, 1), "jobs": len(jobs)})
            log(f"  took {wall:.0f} s ({len(jobs)} jobs)")
    return {"job_costs": fit(rows),
            "job_calibration": {"configfile": configfile, "overrides": list(overrides), "cores": cores,
                                "methods": methods, "runs": runs}}

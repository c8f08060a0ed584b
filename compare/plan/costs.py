"""The plan's cost model: seconds per job from a calibration and the job's run specification; GPU-/CPU-hours per
rule; the wall time of a local run packed onto ``cores``.

Per rule (``n_*``: the dataset's tile counts, :mod:`compare.plan.workload`; ``ips``: calibrated images/s of the job's
model at its image side; ``OH``: the calibrated start-up of a fresh process that imports the job's package):

* ``train_sdconet``: ``OH + epochs x n_train / train_ips + n_val_passes x n_val / infer_ips``;
* ``evaluate_sdconet`` / ``evaluate_detector``: ``OH + n_test / infer_ips``;
* ``train_detector``: ``OH + epochs x n_train / train_ips + val_passes x n_val / infer_ips`` (YOLO validates every
  epoch when ``yolo.val``, else once; Faster R-CNN does not validate);
* ``train_sr``: ``OH + iters x batch / train_ips`` (LR patches); ``super_resolve``: ``OH + n_all / infer_ips`` of
  the SR network on LR tiles (an interpolation: ``OH``);
* ``measure_efficiency``: per method, a fresh process ``OH + (warmup + runs + 3) x batch / infer_ips`` at the
  efficiency side (3: FLOP tracing and the memory pass), plus the SR network for serial rows;
* ``run_spec`` / ``sr_run_spec`` (``run:`` rules: Snakemake re-parses the workflow in a subprocess): the measured
  wall time of the plan's own dry run;
* data rules: ``OH(python) + STATED_DATA_S_PER_TILE x tiles`` (a stated rate, not measured); ``build_report``:
  ``OH + STATED_REPORT_S_PER_RUN x runs``; rules without an action (``all`` and the named targets): 0.

Images/s of a side that was not calibrated are scaled from the nearest calibrated side of the same model by pixel
count. Training throughput is taken as flat in the batch (the calibration measures at batch <= 2 on the CPU).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

from compare.plan.dag import Job, dependencies
from compare.plan.workload import Workload

STATED_DATA_S_PER_TILE = 0.02   # data stage: seconds per tile (decode, crop/resize, encode); stated, not measured
STATED_REPORT_S_PER_RUN = 0.05  # report: seconds per run read and tabulated; stated, not measured
STATED_SCHED_S = 0.3            # Snakemake's own per-job bookkeeping between jobs; stated, not measured
SPEC_RULES = ("run_spec", "sr_run_spec")
DATA_RULES = ("fetch_raw", "convert", "split_tiles", "partition", "export_yolo_hr", "degrade", "export_yolo_lr",
              "export_basicsr", "stage_weights")
SIDE_TOLERANCE = 0.1            # calibrate one side per model within 10 % (e.g. 510 px x3 mod-crops: 512)
SDCONET_PRESET_DIMS = {96: "paper", 24: "tiny"}  # Swin embed_dim of config/sdconet presets -> preset name


class CalibrationMissing(KeyError):
    """A job needs a model the calibration did not measure (run ``--calibrate`` with this config)."""


# ---------------------------------------------------------------------------------------------- what to calibrate
def _sdconet_key(spec: Mapping[str, Any], side: int) -> tuple[str, dict[str, Any]]:
    """The key and build of an SDCoNet run's figure. The training precision and kernels (``train.amp``,
    ``train.amp_dtype``, ``train.deterministic``) are part of it: the calibration measures under the run's own, and a
    non-default one gets a figure of its own (``.../paper/bf16@512``, ``.../nondet@512``)."""
    from sdconet.train_config import TrainConfig  # noqa: PLC0415

    model = spec["settings"]["model"]
    variant = "no_sr" if not model.get("use_sr", True) else ("separate" if not model.get("shared_encoder", True)
                                                             else "sdconet")
    preset = SDCONET_PRESET_DIMS.get(int(model["swin"]["embed_dim"]), f"swin{model['swin']['embed_dim']}")
    tc = TrainConfig.from_dict(spec["settings"]["train"])
    kernels = {"amp": tc.amp, "amp_dtype": tc.amp_dtype, "deterministic": tc.deterministic}
    suffix = (f"/{'bf16' if tc.amp_dtype == 'bfloat16' else 'fp16'}" if tc.amp else "") + \
        ("" if tc.deterministic else "/nondet")
    return f"sdconet/{variant}/{preset}{suffix}@{side}", {"kind": "sdconet", "model": model, "side": side,
                                                           "batch": tc.batch_size, "train": kernels}


def _detector_side(spec: Mapping[str, Any], tile: int) -> int:
    det = spec["settings"]["detector"]
    own = det.get("imgsz") or det.get("tile_size")
    if own:
        return int(own)
    scale = int(spec["degradation"]["scale"])
    return tile // scale if spec["method"]["input"] == "lr" else scale * (tile // scale) if spec["sr_model"] else tile


def _detector_key(spec: Mapping[str, Any], side: int) -> tuple[str, dict[str, Any]]:
    det = spec["settings"]["detector"]
    name = spec["method"]["detector"]
    if name == "frcnn":
        return f"frcnn/{det['preset']}@{side}", {"kind": "frcnn", "preset": det["preset"], "side": side,
                                                  "batch": det["batch_size"]}
    side = -(-side // 32) * 32  # ultralytics trains at a multiple of its stride (32), rounded up
    return f"{name}@{side}", {"kind": "yolo", "name": name, "side": side, "batch": det["batch"]}


def _sr_key(sr: Mapping[str, Any], tile: int) -> tuple[str, dict[str, Any]]:
    scale = int(sr["scale"])
    return (f"sr/{sr['model_name']}/{sr['preset']}/x{scale}@{sr['lr_patch_size']}",
            {"kind": "sr", "name": sr["model_name"], "preset": sr["preset"], "scale": scale,
             "patch": int(sr["lr_patch_size"]), "lr_side": tile // scale, "batch": sr["batch_size"]})


def job_models(job: Job, wl: Workload) -> list[tuple[str, dict[str, Any]]]:
    """The calibration keys (and what to build) a job's cost reads."""
    wc = job.wildcards
    if job.rule in ("train_sdconet", "evaluate_sdconet", "train_detector", "evaluate_detector"):
        spec = wl.method_spec(wc["dataset"], wc["degradation"], wc["method"], int(wc["seed"]))
        tile = wl.images(wc["dataset"]).side
        if spec["kind"] == "sdconet":
            return [_sdconet_key(spec, tile)]
        return [_detector_key(spec, _detector_side(spec, tile))]
    if job.rule in ("train_sr", "super_resolve"):
        spec = wl.sr_spec(wc["dataset"], wc["degradation"], wc["sr_model"], int(wc["seed"]))
        if spec["settings"].get("sr"):
            return [_sr_key(spec["settings"]["sr"], wl.images(wc["dataset"]).side)]
    if job.rule == "measure_efficiency":
        return [m for _, ms in efficiency_models(wl) for m in ms]
    return []


def efficiency_models(wl: Workload) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """[(method, its calibration keys at the efficiency side)] for the efficiency job (main degradation)."""
    cfg = wl.config
    eff = cfg["efficiency"]
    ds = list(cfg["datasets"])[0]
    deg = cfg.get("main_degradation") or list(cfg["degradations"])[0]
    side = int(eff["hr_size"])
    out = []
    for method in cfg.get("methods") or list(wl.exp.index):
        spec = wl.method_spec(ds, deg, method, int(cfg["seeds"][0]))
        if spec["kind"] == "sdconet":
            out.append((method, [_sdconet_key(spec, side)]))
            continue
        keys = [_detector_key(spec, side // int(spec["degradation"]["scale"]) if spec["method"]["input"] == "lr"
                              else side)]
        sr = (spec["settings"].get("sr") or {}).get("sr")
        if sr:
            keys.append(_sr_key(sr, side))
        out.append((method, keys))
    return out


def calibration_needs(jobs: Sequence[Job], wl: Workload, device: str = "cpu") -> dict[str, dict[str, Any]]:
    """{key: what to build} of every model the jobs run (the calibration measures each once)."""
    found: dict[str, dict[str, Any]] = {}
    for job in jobs:
        for key, need in job_models(job, wl):
            found.setdefault(key, need)
    needs: dict[str, dict[str, Any]] = {}
    for key in sorted(found, key=lambda k: (k.rsplit("@", 1)[0], -int(k.rsplit("@", 1)[1]))):
        model, side = key.rsplit("@", 1)
        near = [k for k in needs if k.rsplit("@", 1)[0] == model
                and abs(int(k.rsplit("@", 1)[1]) / int(side) - 1) <= SIDE_TOLERANCE]
        if not near:  # a side within SIDE_TOLERANCE of a measured one is scaled by pixel count instead
            needs[key] = found[key]
    return needs


# ------------------------------------------------------------------------------------------------ cost per job
@dataclass
class JobCost:
    """One job's estimate: ``seconds`` of wall time on its device, ``gpu`` (the rule declares one), ``threads``,
    ``basis`` (what the figure is made of)."""

    job: Job
    seconds: float
    gpu: bool
    threads: int
    basis: str = ""


@dataclass
class Plan:
    """Every job's cost, the per-rule table, totals and the packed local wall time; ``assumptions`` (printed)."""

    costs: list[JobCost]
    snakemake_counts: dict[str, int]
    cores: int
    wall_s: float
    assumptions: list[str] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)

    def per_rule(self) -> list[dict[str, Any]]:
        """Rows {rule, jobs, gpu, seconds, gpu_hours, cpu_hours}, in the order the rules first appear."""
        rows: dict[str, dict[str, Any]] = {}
        for c in self.costs:
            r = rows.setdefault(c.job.rule, {"rule": c.job.rule, "jobs": 0, "gpu": c.gpu, "seconds": 0.0,
                                             "gpu_hours": 0.0, "cpu_hours": 0.0})
            r["jobs"] += 1
            r["seconds"] += c.seconds
            if c.gpu:
                r["gpu_hours"] += c.seconds / 3600
            else:
                r["cpu_hours"] += c.seconds * c.threads / 3600
        return list(rows.values())

    def totals(self) -> dict[str, float]:
        rows = self.per_rule()
        return {"jobs": sum(r["jobs"] for r in rows), "seconds": sum(r["seconds"] for r in rows),
                "gpu_hours": sum(r["gpu_hours"] for r in rows), "cpu_hours": sum(r["cpu_hours"] for r in rows),
                "wall_s": self.wall_s}


def figure(calib: Mapping[str, Any], key: str) -> tuple[dict[str, float], str]:
    """The calibrated figures of ``key`` (``model@side``), scaled by pixel count from the nearest calibrated side of
    the same model when that side was not measured; (figures, note)."""
    figs = calib["figures"]
    if key in figs:
        return figs[key], ""
    model, side = key.rsplit("@", 1)
    same = [k for k in figs if k.rsplit("@", 1)[0] == model]
    if not same:
        raise CalibrationMissing(f"calibration {calib.get('path', '')} has no figures for {model!r} (needed: {key}); "
                                 f"calibrate with this config: python -m compare.plan --configfile ... --calibrate")
    near = min(same, key=lambda k: abs(math.log(int(k.rsplit("@", 1)[1]) / int(side))))
    pixels = (int(near.rsplit("@", 1)[1]) / int(side)) ** 2
    base = figs[near]
    return ({**base, "train_ips": base["train_ips"] * pixels, "infer_ips": base["infer_ips"] * pixels},
            f"{key} scaled from {near} by pixel count")


def infer_ips(fig: Mapping[str, Any], need: Mapping[str, Any]) -> float:
    """Inference images/s for ``need``: an SR network measured on other LR tiles (``lr_side``) is scaled by pixels."""
    have, want = fig.get("lr_side"), need.get("lr_side")
    if need.get("kind") == "sr" and have and want and int(have) != int(want):
        return float(fig["infer_ips"]) * (int(have) / int(want)) ** 2
    return float(fig["infer_ips"])


def _val_passes(epochs: int, every: int) -> int:
    if every <= 0:
        return 0
    return len({e for e in range(1, epochs + 1) if e % every == 0} | {epochs})


class JobTerms(NamedTuple):
    """The parts of one job's estimate.

    ``key``: what the job calibration's fixed costs are kept under (the rule, with ``/yolo``, ``/frcnn``, ``/net``
    or ``/interp`` where one rule runs different programs); ``start_s``: the process start-up (calibrated imports)
    used without a job calibration; ``units``: how many fixed costs the job pays (the efficiency job: one per
    method); ``work_s``: the images / calibrated images/s part; ``basis``: the formula's terms; ``epochs``: training
    epochs (0 for every rule but ``train_sdconet`` / ``train_detector``).
    """

    key: str
    start_s: float
    units: int
    work_s: float
    basis: str
    epochs: int = 0


def job_terms(job: Job, wl: Workload, calib: Mapping[str, Any], parse_s: float, notes: set[str]) -> JobTerms:
    """The :class:`JobTerms` of one job on the calibrated device."""
    oh = calib["overhead_s"]
    wc = job.wildcards
    rule = job.rule
    if rule in SPEC_RULES:
        return JobTerms(rule, parse_s, 1, 0.0, f"workflow re-parse {parse_s:.1f} s")
    if rule in DATA_RULES:
        n = wl.images(wc["dataset"]).total if "dataset" in wc else 0
        per = n if rule in ("split_tiles", "degrade", "export_basicsr") else 0
        return JobTerms(rule, oh["python"], 1, STATED_DATA_S_PER_TILE * per, f"{per} tiles x stated rate")
    if rule == "build_report":
        runs = sum(1 for _ in job.inputs)
        return JobTerms(rule, oh["sdconet"], 1, STATED_REPORT_S_PER_RUN * runs, f"{runs} inputs x stated rate")
    models = job_models(job, wl)
    if rule == "measure_efficiency":
        eff = wl.config["efficiency"]
        passes = int(eff["warmup"]) + int(eff["runs"]) + 3
        start = work = 0.0
        methods = efficiency_models(wl)
        for _method, keys in methods:
            start += oh["sdconet" if keys[0][0].startswith("sdconet/") else "baselines"]
            for key, need in keys:
                fig, note = figure(calib, key)
                if note:
                    notes.add(note)
                work += passes * int(eff["batch_size"]) / infer_ips(fig, need)
        return JobTerms(rule, start, len(methods), work,
                        f"{len(methods)} methods x {passes} passes x batch {eff['batch_size']}")
    if rule == "super_resolve" and not models:  # an interpolation: a process that resizes the LR tiles
        return JobTerms("super_resolve/interp", oh["baselines"], 1, 0.0, "interpolation")
    if not models:
        return JobTerms(rule, 0.0, 0, 0.0, "no action")
    fig, note = figure(calib, models[0][0])
    if note:
        notes.add(note)
    imgs = wl.images(wc["dataset"])
    if rule in ("train_sdconet", "evaluate_sdconet"):
        spec = wl.method_spec(wc["dataset"], wc["degradation"], wc["method"], int(wc["seed"]))
        if rule == "evaluate_sdconet":
            return JobTerms(rule, oh["sdconet"], 1, imgs.test / fig["infer_ips"], f"{imgs.test} test / infer")
        tr = spec["settings"]["train"]
        ep, vp = int(tr["epochs"]), _val_passes(int(tr["epochs"]), int(tr.get("eval_every", 1)))
        return JobTerms(rule, oh["sdconet"], 1, ep * imgs.train / fig["train_ips"] + vp * imgs.val / fig["infer_ips"],
                        f"{ep} ep x {imgs.train} train / train_ips + {vp} x {imgs.val} val / infer", ep)
    if rule in ("train_detector", "evaluate_detector"):
        spec = wl.method_spec(wc["dataset"], wc["degradation"], wc["method"], int(wc["seed"]))
        key = f"{rule}/{'frcnn' if spec['method']['detector'] == 'frcnn' else 'yolo'}"
        if rule == "evaluate_detector":
            return JobTerms(key, oh["baselines"], 1, imgs.test / fig["infer_ips"], f"{imgs.test} test / infer")
        det = spec["settings"]["detector"]
        ep = int(det["epochs"])
        vp = (ep if det.get("val", True) else 1) if "batch" in det else 0
        return JobTerms(key, oh["baselines"], 1, ep * imgs.train / fig["train_ips"] + vp * imgs.val / fig["infer_ips"],
                        f"{ep} ep x {imgs.train} train / train_ips + {vp} x {imgs.val} val / infer", ep)
    if rule == "train_sr":
        sr = wl.sr_spec(wc["dataset"], wc["degradation"], wc["sr_model"], int(wc["seed"]))["settings"]["sr"]
        n = int(sr["iters"]) * int(sr["batch_size"])
        return JobTerms(rule, oh["baselines"], 1, n / fig["train_ips"],
                        f"{sr['iters']} iters x {sr['batch_size']} patches")
    if rule == "super_resolve":
        return JobTerms("super_resolve/net", oh["baselines"], 1, imgs.total / infer_ips(fig, models[0][1]),
                        f"{imgs.total} LR tiles / infer")
    return JobTerms(rule, oh["python"], 1, 0.0, "unknown rule: one process start")


def job_seconds(job: Job, wl: Workload, calib: Mapping[str, Any], parse_s: float, notes: set[str]) -> tuple[float, str]:
    """(estimated wall seconds of one job on the calibrated device, the formula's terms).

    With a job calibration (``calib["job_costs"]``, :mod:`compare.plan.job_calibration`) a job costs its key's
    measured ``fixed_s`` per unit + ``per_epoch_s`` x epochs + the modelled work; without one, the calibrated
    process start-up + the modelled work.
    """
    t = job_terms(job, wl, calib, parse_s, notes)
    jc = (calib.get("job_costs") or {}).get(t.key)
    if jc is None or t.units == 0:
        return t.start_s + t.work_s, (f"OH {t.start_s:.1f} + {t.basis}" if t.units else t.basis)
    fixed = t.units * float(jc["fixed_s"]) + t.epochs * float(jc["per_epoch_s"])
    return fixed + t.work_s, (f"fixed {t.units} x {jc['fixed_s']:.1f} + {t.epochs} ep x {jc['per_epoch_s']:.2f} "
                              f"(job calibration) + {t.basis}")


def build_plan(jobs: Sequence[Job], snakemake_counts: Mapping[str, int], wl: Workload, calib: Mapping[str, Any],
               cores: int, parse_s: float) -> Plan:
    """Every job's estimate and the packed wall time (see the module docstring)."""
    notes: set[str] = set()
    costs = []
    for job in jobs:
        s, basis = job_seconds(job, wl, calib, parse_s, notes)
        costs.append(JobCost(job, s, job.gpu, max(1, min(job.threads, cores)), basis))
    wall = pack(costs, cores)
    plan = Plan(costs, dict(snakemake_counts), cores, wall, calibration=dict(calib))
    plan.assumptions = assumptions(plan, wl, parse_s, sorted(notes))
    return plan


def pack(costs: Sequence[JobCost], cores: int, sched_s: float = STATED_SCHED_S) -> float:
    """Wall seconds of running the jobs on ``cores`` cores in dependency order: greedy list scheduling, a ready job
    starts when its ``threads`` cores are free (longest job first among the ready ones), as ``snakemake --cores``
    does; ``sched_s`` is added to each job that does something."""
    by_id = {c.job.jobid: c for c in costs}
    deps = dependencies([c.job for c in costs])
    waiting = {i: set(d) & set(by_id) for i, d in deps.items()}
    users: dict[int, list[int]] = {}
    for i, d in waiting.items():
        for k in d:
            users.setdefault(k, []).append(i)
    ready = [i for i, d in waiting.items() if not d]
    running: list[tuple[float, int]] = []
    free, now = cores, 0.0
    while ready or running:
        ready.sort(key=lambda i: -by_id[i].seconds)
        started = True
        while started:
            started = False
            for i in list(ready):
                need = min(by_id[i].threads, cores)
                if need <= free:
                    ready.remove(i)
                    free -= need
                    dur = by_id[i].seconds + (sched_s if by_id[i].seconds > 0 else 0.0)
                    heapq.heappush(running, (now + dur, i))
                    started = True
                    break
        if not running:
            break
        now, done = heapq.heappop(running)
        free += min(by_id[done].threads, cores)
        for u in users.get(done, []):
            waiting[u].discard(done)
            if not waiting[u]:
                ready.append(u)
    return now


def assumptions(plan: Plan, wl: Workload, parse_s: float, notes: Sequence[str]) -> list[str]:
    """The stated assumptions the plan prints."""
    cal = plan.calibration
    out = [f"calibration: {cal.get('path', '(measured now)')}, measured on {cal.get('device_name')} "
           f"({cal.get('device')}, {cal.get('threads') or 'default'} torch thread(s)), torch "
           f"{(cal.get('versions') or {}).get('torch')}, {cal.get('date')}, git {cal.get('git_sha')}"]
    if cal.get("device") == "cpu":
        out.append("CPU calibration: the 'GPU-hours' are hours of the GPU rules' jobs on this CPU, not GPU figures")
    for ds in wl.config["datasets"]:
        im = wl.images(ds)
        out.append(f"images {ds}: train {im.train} / val {im.val} / test {im.test} tiles of {im.side} px "
                   f"({im.source})")
    jc = cal.get("job_costs")
    if jc:
        jcal = cal.get("job_calibration") or {}
        out += ["job time = a fixed cost per job (+ a cost per epoch for training) measured by the job calibration "
                f"(two tiny real runs of {jcal.get('configfile') or 'the demo config'}, methods "
                f"{', '.join(jcal.get('methods') or [])}; {len(jc)} rule keys) + images x epochs / calibrated "
                "images/s of the job's model (training throughput taken as flat in the batch)",
                "rules the job calibration did not run: process start-up (calibrated) + images / images/s; "
                f"run_spec / sr_run_spec without it: the dry run's re-parse, {parse_s:.1f} s"]
    else:
        out += ["job time = process start-up (calibrated) + images x epochs / calibrated images/s of the job's model "
                "(training throughput taken as flat in the batch; phase-1 SR-frozen epochs costed as joint ones)",
                f"run_spec / sr_run_spec: Snakemake re-parses the workflow per job: {parse_s:.1f} s (this plan's dry "
                "run)"]
    out += [f"data rules: start-up + {STATED_DATA_S_PER_TILE} s per tile, report: start-up + {STATED_REPORT_S_PER_RUN}"
            f" s per input (the start-up replaced by the job calibration's fixed cost when it has one), "
            f"{STATED_SCHED_S} s Snakemake bookkeeping per job: stated, not measured",
            "GPU-hours: rules that declare resources gpu (training, evaluation, SR, efficiency); CPU-hours: the rest "
            "(seconds x threads)",
            f"wall time: jobs packed onto {plan.cores} cores in dependency order (threads respected, GPU jobs "
            "counted as using their threads; no --resources gpu limit)",
            "not included: data download, weights staging, queueing, retries, I/O contention between parallel jobs"]
    out += [f"scaled: {n}" for n in notes]
    return out

"""The plan (``python -m compare.plan``): Snakemake's job counts, the cost arithmetic on a synthetic calibration,
packing onto cores, the printed assumptions, the CLI on config/paper.yaml with the stored CPU calibration, the
calibration's measurement paths on the CPU, and the report's estimate-vs-actual table."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from compare.plan.costs import (JobCost, build_plan, calibration_needs, figure, job_models, job_seconds, pack,
                                _val_passes)
from compare.plan.dag import Job, dependencies, dry_run_jobs, parse_dry_run
from compare.plan.workload import Workload, load_config, tile_windows
from compare.report.plan_costs import plan_vs_actual

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "docs/calibration/cpu-2core.json"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(jobs, Snakemake's job stats, workload) of the default (demo) config into a fresh results folder."""
    out = tmp_path_factory.mktemp("plan") / "results"
    overrides = (f"results_dir={out}",)
    jobs, stats = dry_run_jobs(None, 2, overrides)
    return jobs, stats, Workload(load_config(None, overrides))


def synthetic_calibration(needs) -> dict:
    """Round numbers for every needed model: train 4 img/s, infer 10 img/s; overheads 1 / 2 / 3 s."""
    return {"calibration_version": 1, "device": "cpu", "device_name": "synthetic", "threads": 1, "date": "2026-12-06",
            "git_sha": "test", "versions": {"torch": torch.__version__},
            "figures": {k: {"train_ips": 4.0, "infer_ips": 10.0} for k in needs},
            "overhead_s": {"python": 1.0, "sdconet": 2.0, "baselines": 3.0}}


def test_job_counts_equal_snakemake(demo):
    jobs, stats, _ = demo
    assert collections.Counter(j.rule for j in jobs) == stats
    assert {"train_sdconet", "train_detector", "build_report"} <= set(stats)
    assert all(j.gpu for j in jobs if j.rule.startswith("train_")), "training rules declare gpu"
    report = next(j for j in jobs if j.rule == "build_report")
    assert dependencies(jobs)[report.jobid], "the report depends on the runs"


def test_parse_dry_run_minimal():
    text = ("Job stats:\njob    count\n---  -----\na   1\nb   1\ntotal   2\n\n"
            "rule a:\n    output: x/out\n    jobid: 1\n    wildcards: dataset=d, seed=0\n    threads: 2\n"
            "    resources: tmpdir=/tmp, gpu=1, mem_mb=8000\n\n"
            "localrule b:\n    input: x/out/file.txt\n    output: y\n    jobid: 2\n")
    jobs, stats = parse_dry_run(text)
    assert stats == {"a": 1, "b": 1}
    a, b = jobs
    assert (a.rule, a.threads, a.gpu, a.wildcards) == ("a", 2, True, {"dataset": "d", "seed": "0"})
    assert b.local and not b.gpu and dependencies(jobs) == {1: set(), 2: {1}}


def test_cost_arithmetic_on_synthetic_calibration(demo):
    jobs, _, wl = demo
    calib = synthetic_calibration(calibration_needs(jobs, wl))
    im = wl.images("demo")
    notes: set[str] = set()
    train = next(j for j in jobs if j.rule == "train_sdconet")
    tr = wl.method_spec("demo", train.wildcards["degradation"], train.wildcards["method"], 0)["settings"]["train"]
    vp = _val_passes(tr["epochs"], tr["eval_every"])
    s, _ = job_seconds(train, wl, calib, 5.0, notes)
    assert s == pytest.approx(2.0 + tr["epochs"] * im.train / 4.0 + vp * im.val / 10.0)
    ev = next(j for j in jobs if j.rule == "evaluate_detector")
    assert job_seconds(ev, wl, calib, 5.0, notes)[0] == pytest.approx(3.0 + im.test / 10.0)
    # an SR training job (built by hand: the demo's method list need not have one)
    sr = Job(rule="train_sr", wildcards={"dataset": "demo", "degradation": train.wildcards["degradation"],
                                         "sr_model": "edsr", "seed": "0"})
    calib["figures"].update({k: {"train_ips": 4.0, "infer_ips": 10.0} for k, _ in job_models(sr, wl)})
    srs = wl.sr_spec("demo", sr.wildcards["degradation"], "edsr", 0)["settings"]["sr"]
    assert job_seconds(sr, wl, calib, 5.0, notes)[0] == pytest.approx(3.0 + srs["iters"] * srs["batch_size"] / 4.0)
    spec = next(j for j in jobs if j.rule == "run_spec")
    assert job_seconds(spec, wl, calib, 5.0, notes)[0] == 5.0
    plan = build_plan(jobs, collections.Counter(j.rule for j in jobs), wl, calib, 2, 5.0)
    t = plan.totals()
    gpu = sum(c.seconds for c in plan.costs if c.gpu) / 3600
    assert t["gpu_hours"] == pytest.approx(gpu) and t["jobs"] == len(jobs)
    assert t["cpu_hours"] == pytest.approx(sum(c.seconds * c.threads for c in plan.costs if not c.gpu) / 3600)
    assert sum(c.seconds for c in plan.costs) / 2 <= t["wall_s"] <= sum(c.seconds for c in plan.costs) + 0.3 * len(jobs)


def test_images_from_config_and_partition(tmp_path):
    assert tile_windows(512, 512, 256, 0) == 4 and tile_windows(800, 600, 512, 200) == 4
    cfg = load_config(None, (f"results_dir={tmp_path}",))
    im = Workload(cfg).images("demo")
    d = cfg["datasets"]["demo"]
    assert im.total == d["demo"]["n_images"] * tile_windows(d["demo"]["size"], d["demo"]["size"], d["tile"]["size"],
                                                             d["tile"]["gap"])
    assert im.source.startswith("config")
    part = tmp_path / "data/demo/partition"
    part.mkdir(parents=True)
    for name, n in (("train", 5), ("val", 2), ("test", 3)):
        (part / f"{name}.json").write_text(json.dumps({"images": [{"id": i} for i in range(n)]}))
    im = Workload(cfg).images("demo")
    assert (im.train, im.val, im.test) == (5, 2, 3) and im.source.startswith("partition files")
    paper = Workload(load_config(REPO / "config/paper.yaml", (f"results_dir={tmp_path}",)))
    assert paper.images("nwpu").total == 3631 and paper.images("nwpu").source.startswith("documented")


def test_figure_scaled_by_pixels():
    calib = {"figures": {"m@256": {"train_ips": 8.0, "infer_ips": 16.0}}}
    fig, note = figure(calib, "m@512")
    assert fig["train_ips"] == pytest.approx(2.0) and fig["infer_ips"] == pytest.approx(4.0) and "scaled" in note
    with pytest.raises(KeyError):
        figure(calib, "other@256")


def _cost(jobid: int, seconds: float, threads: int = 1, inputs=(), outputs=()) -> JobCost:
    return JobCost(Job(rule=f"r{jobid}", jobid=jobid, threads=threads, inputs=list(inputs), outputs=list(outputs)),
                   seconds, False, threads)


def test_packing_onto_cores():
    four = [_cost(i, 10.0) for i in range(4)]
    assert pack(four, 1, sched_s=0) == pytest.approx(40.0)
    assert pack(four, 2, sched_s=0) == pytest.approx(20.0)
    assert pack(four, 4, sched_s=0) == pytest.approx(10.0)
    # a 2-thread job blocks both cores; a dependency chain runs in order
    assert pack([_cost(0, 10.0, threads=2), _cost(1, 10.0), _cost(2, 10.0)], 2, sched_s=0) == pytest.approx(20.0)
    chain = [_cost(0, 5.0, outputs=["a"]), _cost(1, 5.0, inputs=["a"], outputs=["b"]), _cost(2, 5.0, inputs=["b"])]
    assert pack(chain, 8, sched_s=0) == pytest.approx(15.0)
    assert pack(four, 1, sched_s=1.0) == pytest.approx(44.0)


def test_assumptions_printed(demo):
    from compare.plan.__main__ import format_plan  # noqa: PLC0415

    jobs, stats, wl = demo
    plan = build_plan(jobs, stats, wl, synthetic_calibration(calibration_needs(jobs, wl)), 2, 5.0)
    text = format_plan(plan, None)
    for needle in ("assumptions:", "images demo:", "calibration:", "CPU calibration", "stated, not measured",
                   "wall time of a local run on 2 core(s)", "GPU-hours", "CPU-hours", "total"):
        assert needle in text
    for rule, n in stats.items():
        assert any(line.split()[:2] == [rule, str(n)] for line in text.splitlines()), rule


@pytest.mark.skipif(not STORED.is_file(), reason=f"{STORED} not written yet (python -m compare.calibrate)")
def test_cli_on_paper_config_with_stored_calibration(tmp_path):
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "compare.plan", "--configfile", "config/paper.yaml", "--calibration",
                           str(STORED), "--cores", "8", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GPU-hours" in proc.stdout and "train_sdconet" in proc.stdout and "assumptions:" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["totals"]["gpu_hours"] > 0 and doc["totals"]["jobs"] == sum(doc["snakemake_counts"].values())
    assert {r["rule"]: r["jobs"] for r in doc["per_rule"]} == doc["snakemake_counts"]
    assert doc["calibration"]["measured"] is True and doc["calibration"]["device"] == "cpu"


def test_stored_calibrations_are_measurements():
    """A calibration file under docs/calibration/ is a measurement: device, date, torch, git SHA; a GPU file only when
    measured on a GPU."""
    files = sorted((REPO / "docs/calibration").glob("*.json"))
    for f in files:
        doc = json.loads(f.read_text())
        assert doc["measured"] is True and doc["date"] and doc["git_sha"] and doc["versions"]["torch"]
        assert doc["figures"] and set(doc["overhead_s"]) >= {"python", "sdconet", "baselines"}
        if doc["device"].startswith("cuda"):
            assert "cuda" in doc["device_name"].lower() or "nvidia" in doc["device_name"].lower(), f


def test_calibrate_measures_on_cpu_and_refuses_missing_cuda(monkeypatch):
    import compare.calibrate as cal  # noqa: PLC0415

    monkeypatch.setattr(cal, "measure_overhead", lambda runs=3: {"python": 0.1, "sdconet": 1.0, "baselines": 1.0})
    needs = {"sr/edsr/tiny/x2@16": {"kind": "sr", "name": "edsr", "preset": "tiny", "scale": 2, "patch": 16,
                                    "lr_side": 32, "batch": 8}}
    doc = cal.calibrate(needs, "cpu", threads=1, warmup=0, runs=1, log=lambda s: None)
    fig = doc["figures"]["sr/edsr/tiny/x2@16"]
    assert fig["train_ips"] > 0 and fig["infer_ips"] > 0 and fig["batch"] == 2  # CPU batch capped at 2
    assert doc["measured"] and doc["device"] == "cpu" and doc["versions"]["torch"] == torch.__version__
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            cal.calibrate(needs, "cuda", log=lambda s: None)


def test_detector_and_sdconet_measurements_on_cpu(demo):
    import compare.calibrate as cal  # noqa: PLC0415

    jobs, _, wl = demo
    train = next(j for j in jobs if j.rule == "train_sdconet" and j.wildcards["method"] == "sdconet")
    (_, need), = job_models(train, wl)
    fig = cal.measure_sdconet(need["model"], 64, 1, "cpu", 0, 1)
    assert fig["train_ips"] > 0 and fig["infer_ips"] > 0
    assert cal.measure_yolo("yolov8n", 64, 1, "cpu", 0, 1)["train_ips"] > 0
    assert cal.measure_frcnn("tiny", 64, 1, "cpu", 0, 1)["infer_ips"] > 0


def test_plan_vs_actual_table():
    plan = {"jobs": [{"rule": "train", "gpu": True, "seconds": 10.0, "benchmark": "/x/benchmarks/a/train.tsv"},
                     {"rule": "train", "gpu": True, "seconds": 30.0, "benchmark": "/x/benchmarks/b/train.tsv"},
                     {"rule": "run_spec", "gpu": False, "seconds": 2.0, "benchmark": None}]}
    costs = pd.DataFrame([{"stage": "a", "job": "train", "wall_s": 12.0, "max_rss_mb": 1.0, "cpu_time_s": 1.0,
                           "path": "benchmarks/a/train.tsv"}])
    t = plan_vs_actual(plan, costs).set_index("Rule")
    assert t.loc["train", "Jobs"] == 2 and t.loc["train", "Jobs measured"] == 1
    assert t.loc["train", "Estimate (s)"] == "40.0" and t.loc["train", "Actual / estimate"] == "1.20"
    assert t.loc["run_spec", "Actual (s)"] == "-" and t.loc["total", "Actual (s)"] == "12.0"


def test_sdconet_figures_follow_the_runs_precision_and_kernels(demo, monkeypatch):
    """The run's train.amp / amp_dtype / deterministic are part of its calibration key and are applied while the
    calibration times its training step (as the engine applies them)."""
    import compare.calibrate as cal  # noqa: PLC0415
    from compare.plan.costs import _sdconet_key  # noqa: PLC0415

    jobs, _, wl = demo
    train = next(j for j in jobs if j.rule == "train_sdconet" and j.wildcards["method"] == "sdconet")
    (key, need), = job_models(train, wl)
    assert need["train"] == {"amp": False, "amp_dtype": "float16", "deterministic": True} and "/" in key
    spec = wl.method_spec(train.wildcards["dataset"], train.wildcards["degradation"], "sdconet",
                          int(train.wildcards["seed"]))
    other = {**spec, "settings": {**spec["settings"], "train": {**spec["settings"]["train"], "amp": True,
                                                                 "amp_dtype": "bfloat16", "deterministic": False}}}
    key2, need2 = _sdconet_key(other, 128)
    assert key2 == key.rsplit("@", 1)[0] + "/bf16/nondet@128" and need2["train"]["deterministic"] is False
    seen = []
    monkeypatch.setattr(cal, "timed", lambda fn, *a: seen.append(torch.are_deterministic_algorithms_enabled()) or 1.0)
    before = torch.are_deterministic_algorithms_enabled()
    for flag in (True, False):
        cal.measure_sdconet(need["model"], 64, 1, "cpu", 0, 1, {**need["train"], "deterministic": flag})
    assert seen == [True, before, False, before]  # training under the run's kernels, inference as evaluation runs
    assert torch.are_deterministic_algorithms_enabled() == before

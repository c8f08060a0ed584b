"""The plan's job calibration (compare/plan/job_calibration.py): the calibration config stays the user's except data,
methods and budgets, one method per family, Snakemake log durations, the fit, and how the plan uses the result.
(The two real workflow runs themselves take minutes: docs/plan.md records one.)"""
from __future__ import annotations

import collections

import pytest
import yaml

from compare.plan.costs import calibration_needs, job_seconds, job_terms
from compare.plan.dag import dry_run_jobs
from compare.plan.job_calibration import calibration_config, fit, log_durations, representative_methods
from compare.plan.workload import Workload, load_config
from tests.test_plan import synthetic_calibration

LOG = """Select jobs to execute...
[Sun Dec  6 14:36:32 2026]
localrule sr_run_spec:
    output: results/x/run_spec.json
    jobid: 35
    reason: Missing output files
Shell command: None
[Sun Dec  6 14:36:32 2026]
rule train_sdconet:
    input: a
    jobid: 7
[Sun Dec  6 14:36:37 2026]
Finished jobid: 35 (Rule: sr_run_spec)
1 of 36 steps (3%) done
[Sun Dec  6 14:37:49 2026]
Finished jobid: 7 (Rule: train_sdconet)
"""


def test_log_durations_pair_start_and_finish():
    assert log_durations(LOG) == {"sr_run_spec": [5.0], "train_sdconet": [77.0]}


def test_fit_splits_fixed_and_per_epoch_costs():
    rows = [("train_detector/yolo", 1, 1, 12.0), ("train_detector/yolo", 1, 1, 14.0),  # mean 13 at 1 epoch
            ("train_detector/yolo", 2, 1, 16.0),                                       # 16 at 2: 3 s per epoch
            ("measure_efficiency", 0, 4, 8.0), ("measure_efficiency", 0, 4, 12.0),     # per method: 2, 3
            ("train_sdconet", 1, 1, 5.0), ("train_sdconet", 2, 1, 4.0)]                # noise: no negative slope
    got = fit(rows)
    assert got["train_detector/yolo"] == {"fixed_s": 10.0, "per_epoch_s": 3.0, "jobs": 3}
    assert got["measure_efficiency"]["fixed_s"] == pytest.approx(2.5) and got["measure_efficiency"]["per_epoch_s"] == 0
    assert got["train_sdconet"] == {"fixed_s": 5.0, "per_epoch_s": 0.0, "jobs": 2}


def test_representative_methods_cover_every_family():
    full = load_config("config/demo_full.yaml")
    assert representative_methods(full) == ["sdconet", "yolov8n_hr", "yolov8n_nearest", "yolov8n_edsr", "frcnn_hr"]
    assert representative_methods(load_config(None)) == ["sdconet", "yolov8n_hr", "frcnn_hr"]


def test_calibration_config_keeps_the_users_settings_and_validates(tmp_path):
    user = load_config(None)
    cfg = calibration_config(user, tmp_path / "results", epochs=2)
    path = tmp_path / "calib.yaml"
    path.write_text(yaml.safe_dump(cfg))
    again = load_config(path)  # the workflow schema accepts it
    assert again["results_dir"] == str(tmp_path / "results") and list(again["datasets"]) == ["calib"]
    assert again["methods"] == ["sdconet", "yolov8n_hr", "frcnn_hr"] and again["sweep"]["methods"] == []
    assert again["sdconet"]["config"] == user["sdconet"]["config"]  # the user's presets and init
    assert again["baselines"]["config"] == user["baselines"]["config"]
    assert again["efficiency"] == user["efficiency"] and again["degradations"] == user["degradations"]
    assert again["datasets"]["calib"]["tile"]["size"] == user["datasets"]["demo"]["tile"]["size"]
    jobs, stats = dry_run_jobs(str(path), 1)
    wl = Workload(again)
    calib = synthetic_calibration(calibration_needs(jobs, wl))
    epochs = {j.wildcards["method"]: job_terms(j, wl, calib, 0.0, set()).epochs
              for j in jobs if j.rule.startswith("train_")}
    assert epochs == {"sdconet": 2, "yolov8n_hr": 2, "frcnn_hr": 2}
    assert stats["train_sdconet"] == 1 and stats["train_detector"] == 2


def test_plan_uses_the_job_costs(tmp_path):
    overrides = (f"results_dir={tmp_path}",)
    jobs, _ = dry_run_jobs(None, 2, overrides)
    wl = Workload(load_config(None, overrides))
    calib = synthetic_calibration(calibration_needs(jobs, wl))
    train = next(j for j in jobs if j.rule == "train_detector" and j.wildcards["method"].startswith("yolo"))
    notes: set[str] = set()
    without, _ = job_seconds(train, wl, calib, 5.0, notes)
    calib["job_costs"] = {"train_detector/yolo": {"fixed_s": 7.0, "per_epoch_s": 0.5}}
    with_jc, basis = job_seconds(train, wl, calib, 5.0, notes)
    ep = job_terms(train, wl, calib, 5.0, notes).epochs
    assert ep > 1 and with_jc == pytest.approx(without - 3.0 + 7.0 + 0.5 * ep)  # start-up 3 s replaced
    assert "job calibration" in basis
    frcnn = next(j for j in jobs if j.rule == "train_detector" and j.wildcards["method"].startswith("frcnn"))
    assert job_seconds(frcnn, wl, calib, 5.0, notes)[1].startswith("OH")  # no key: the start-up model
    assert collections.Counter(j.rule for j in jobs)["measure_efficiency"] == 1


def test_stored_demo_calibration_plans_the_demo_with_job_costs(tmp_path):
    """docs/calibration/cpu-2core-demo.json (measured, docs/plan.md) covers every model and job key of the demo."""
    from compare.plan.__main__ import make_plan

    plan = make_plan(None, "docs/calibration/cpu-2core-demo.json", cores=2, overrides=(f"results_dir={tmp_path}",))
    bases = {c.job.rule: c.basis for c in plan.costs}
    for rule in ("train_sdconet", "train_detector", "evaluate_sdconet", "evaluate_detector", "measure_efficiency"):
        assert "job calibration" in bases[rule], rule
    assert any("job calibration" in a for a in plan.assumptions)
    assert 0 < plan.wall_s < sum(c.seconds for c in plan.costs)

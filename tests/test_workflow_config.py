"""Workflow-level checks that need no data: lint, schema validation, dry-run DAG shape."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _smk(repo_root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-s", str(repo_root / "Snakefile"), *args], cwd=cwd or repo_root,
                          capture_output=True, text=True, timeout=300)


def test_lint_is_clean(repo_root):
    r = _smk(repo_root, "--lint")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations" in r.stdout + r.stderr


def test_config_typo_names_the_key(repo_root, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("datasets:\n  demo:\n    source: demo\n    tiel: {size: 256}\n"
                   "degradations:\n  bicubic_x2: {scale: 2}\n")
    r = _smk(repo_root, "-n", "--cores", "1", "--configfile", str(cfg), "--config", "results_dir=" + str(tmp_path))
    assert r.returncode != 0
    assert "'tiel' was unexpected" in r.stdout + r.stderr


@pytest.mark.parametrize("target", ["all", "data"])
def test_demo_dry_run_lists_data_jobs(repo_root, tmp_path, target):
    r = _smk(repo_root, "-n", "--cores", "2", target, "--config", f"results_dir={tmp_path}/results")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for rule in ("fetch_raw", "convert", "split_tiles", "partition", "degrade",
                 "export_yolo_hr", "export_yolo_lr", "export_basicsr"):
        assert f"\n{rule} " in out, f"{rule} missing from the dry run"


def test_slurm_profile_dry_runs(repo_root, tmp_path):
    r = _smk(repo_root, "--profile", str(repo_root / "profiles" / "slurm"), "--executor", "slurm",
             "--jobs", "4", "-n", "all", "--config", f"results_dir={tmp_path}/results")
    assert r.returncode == 0, r.stdout + r.stderr


def test_user_configfile_replaces_the_demo_default(repo_root, tmp_path):
    """--configfile must not be deep-merged into the demo config (no demo jobs in an NWPU run)."""
    r = _smk(repo_root, "-n", "--cores", "2", "data", "--configfile", str(repo_root / "config" / "nwpu_local.yaml"),
             "--config", f"results_dir={tmp_path}/results")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "dataset=nwpu" in out and "dataset=demo" not in out


def _job_counts(out: str) -> dict[str, int]:
    import re

    stats = out[out.index("Job stats"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^([a-z_]+)\s+(\d+)$", stats, re.M)}


def test_paper_dry_run_lists_every_expected_job_without_data(repo_root, tmp_path):
    import yaml

    from benchcore.experiments import load_experiments

    r = _smk(repo_root, "-n", "--cores", "8", "all", "--configfile", str(repo_root / "config" / "paper.yaml"),
             "--config", f"results_dir={tmp_path}/results")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = _job_counts(out)
    cfg = yaml.safe_load((repo_root / "config" / "paper.yaml").read_text())
    exp = load_experiments(repo_root / cfg["experiments"]).set_index("id")
    n_ds, n_deg, n_seed = len(cfg["datasets"]), len(cfg["degradations"]), len(cfg["seeds"])
    main = cfg["main_degradation"]
    sweep_extra = [d for d in cfg["sweep"]["degradations"] if d != main]
    kinds = exp["kind"]
    n_sdc = int(kinds.isin(["sdconet", "ablation"]).sum())
    n_serial = int((kinds == "serial").sum())
    sweep_sdc = sum(kinds[m] != "serial" for m in cfg["sweep"]["methods"])
    sweep_serial = len(cfg["sweep"]["methods"]) - sweep_sdc
    assert counts["train_sdconet"] == n_ds * n_seed * (n_sdc + sweep_sdc * len(sweep_extra))
    assert counts["evaluate_sdconet"] == counts["train_sdconet"]
    assert counts["train_detector"] == n_ds * n_seed * (n_serial + sweep_serial * len(sweep_extra))
    assert counts["evaluate_detector"] == counts["train_detector"]
    assert counts["measure_efficiency"] == 1  # one job measures every method
    assert counts["split_tiles"] == counts["convert"] == counts["fetch_raw"] == n_ds
    assert counts["degrade"] == n_ds * n_deg
    assert counts["build_report"] == 1


@pytest.mark.parametrize("configfile", [None, "config/demo_full.yaml"])
def test_demo_dry_run_runs_every_stage(repo_root, tmp_path, configfile):
    """The default demo (a subset of the methods, no learned SR model) and the full-methods demo (every stage)."""
    args = ["--configfile", configfile] if configfile else []
    r = _smk(repo_root, "-n", "--cores", "2", "all", *args, "--config", f"results_dir={tmp_path}/results")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = _job_counts(out)
    stages = ["train_sdconet", "evaluate_sdconet", "super_resolve", "train_detector", "evaluate_detector",
              "measure_efficiency", "build_report"] + (["train_sr"] if configfile else [])
    for rule in stages:
        assert counts.get(rule, 0) > 0, rule
    # the default demo's SR table has its interpolation references (report.sr_references) and no learned SR model
    assert configfile or (counts["super_resolve"] == 2 and "train_sr" not in counts)

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

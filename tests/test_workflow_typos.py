"""A typo in a run's settings stops the DAG before its first job, in one line naming the file and the key (issue 11).

The workflow resolves every run specification when the DAG is built (``_check_specs`` in common.smk), so a bad
key in ``sdconet.set``, ``baselines.set`` or a sheet row's ``set`` cell, or a key the run owns, fails at
``snakemake -n`` already. (Top-level and nested config typos: tests/test_config_mechanism.py.)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workflow


def _dry_run(repo_root: Path, tmp_path: Path, edit) -> str:
    cfg = yaml.safe_load((repo_root / "config" / "demo_full.yaml").read_text())  # every row of the sheet
    edit(cfg, tmp_path)
    path = tmp_path / "my_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-n", "--cores", "1",
                        "--configfile", str(path), "--config", f"results_dir={tmp_path}/results"],
                       cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "my_config.yaml:" in ln]
    assert len(lines) == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert len((r.stdout + r.stderr).splitlines()) < 20
    return lines[0]


def test_sdconet_set_typo(repo_root, tmp_path):
    def edit(cfg, _):
        cfg["sdconet"]["set"] = {"model.swin.windowsize": 8}
    line = _dry_run(repo_root, tmp_path, edit)
    assert "sdconet.set" in line and "'swin.windowsize'" in line and "did you mean 'swin.window_size'" in line


def test_baselines_set_typo(repo_root, tmp_path):
    def edit(cfg, _):
        cfg["baselines"]["set"] = {"yolo.epoch": 3}
    line = _dry_run(repo_root, tmp_path, edit)
    assert "baselines.set" in line and "'epoch'" in line and "did you mean 'epochs'" in line


def test_sheet_set_cell_typo_and_owned_key(repo_root, tmp_path, copy_sheet):
    def edit(cfg, tmp):
        sheet = copy_sheet(tmp / "sheet.tsv", set_cells={"sdconet_no_saliency": "model.saliency.los_weight=4.0"})
        cfg["experiments"] = str(sheet)
    line = _dry_run(repo_root, tmp_path, edit)
    assert "row 'sdconet_no_saliency', column 'set'" in line and "did you mean 'saliency.loss_weight'" in line

    def owned(cfg, _):
        cfg["sdconet"]["set"] = {"model.lr.scale": 3}
    line = _dry_run(repo_root, tmp_path, owned)
    assert "'model.lr.scale' cannot be set here" in line and "degradation" in line

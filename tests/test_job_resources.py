"""compare.job_resources: per-rule mem_mb / runtime suggestions from Snakemake benchmark files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from compare.job_resources import Headroom, benchmark_rules, job_costs, suggest, to_yaml

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time"]


def _bench(path: Path, rows: list[tuple[float, object]]) -> None:
    """A benchmark file as Snakemake writes it: one row per repeat (wall seconds, max_rss MB or NA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([[s, "0:00:00", rss, 0, 0, 0, 0, 0, 0, s] for s, rss in rows], columns=COLUMNS) \
        .to_csv(path, sep="\t", index=False, na_rep="NA")


def test_benchmark_rules_key_on_the_path_below_benchmarks():
    jobs = [SimpleNamespace(rule="train_sdconet", benchmark="/x/res/benchmarks/sdconet/demo/d/m/seed0/train.tsv"),
            SimpleNamespace(rule="run_spec", benchmark=None)]
    assert benchmark_rules(jobs) == {"sdconet/demo/d/m/seed0/train.tsv": "train_sdconet"}


def test_suggestions_take_the_worst_job_with_headroom_and_floors(tmp_path):
    b = tmp_path / "benchmarks"
    _bench(b / "sdconet/a/train.tsv", [(100.0, 900.0)])
    _bench(b / "sdconet/b/train.tsv", [(700.0, 1700.0), (650.0, 1650.0)])  # repeats: collect_job_costs keeps the last
    _bench(b / "data/convert.tsv", [(0.2, "NA")])  # too short for Snakemake to sample its memory
    _bench(b / "data/unknown.tsv", [(1.0, 10.0)])
    rule_of = {"sdconet/a/train.tsv": "train_sdconet", "sdconet/b/train.tsv": "train_sdconet",
               "data/convert.tsv": "convert"}
    costs, unmatched = job_costs([tmp_path], rule_of)
    assert unmatched == ["benchmarks/data/unknown.tsv"]
    table = suggest(costs)
    assert table.loc["train_sdconet", "jobs"] == 2
    assert table.loc["train_sdconet", "max_rss_mb"] == 1650.0
    assert table.loc["train_sdconet", "mem_mb"] == 4000  # 1650 x 1.5 + 1500 = 3975, up to a multiple of 500
    assert table.loc["train_sdconet", "runtime"] == 25  # 650 s x 2 = 21.7 min, up to a multiple of 5
    assert table.loc["convert", "mem_mb"] == 1500 and table.loc["convert", "runtime"] == 10  # overhead, floor
    strict = suggest(costs, Headroom(mem_factor=3.0, mem_overhead_mb=0, time_factor=1.0, time_floor_min=1,
                                     time_step_min=1))
    assert strict.loc["train_sdconet", "mem_mb"] == 5000 and strict.loc["train_sdconet", "runtime"] == 11
    assert strict.loc["convert", "mem_mb"] == 1000  # the floor


def test_yaml_is_a_profile_set_resources_block(tmp_path):
    _bench(tmp_path / "benchmarks/x/train.tsv", [(30.0, 400.0)])
    costs, _ = job_costs([tmp_path], {"x/train.tsv": "train_x"})
    text = to_yaml(suggest(costs), source="somewhere")
    assert yaml.safe_load(text) == {"set-resources": {"train_x": {"mem_mb": 2500, "runtime": 10}}}
    assert "# peak 400 MB over 1 job(s)" in text and "# longest 0:00:30" in text and "from somewhere" in text


def test_missing_benchmarks_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no benchmarks/ folder"):
        job_costs([tmp_path], {})


@pytest.mark.workflow
def test_cli_maps_files_to_rules_through_the_workflow(tmp_path):
    """The CLI on a results dir shaped like the default config's: files matched by the workflow's own dry run."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    ds, deg = next(iter(cfg["datasets"])), cfg.get("main_degradation") or next(iter(cfg["degradations"]))
    b = tmp_path / "benchmarks"
    _bench(b / f"sdconet/{ds}/{deg}/sdconet/seed0/train.tsv", [(1200.0, 1000.0)])
    _bench(b / f"data/{ds}/split_tiles.tsv", [(5.0, 200.0)])
    _bench(b / "data/elsewhere/split_tiles.tsv", [(5.0, 200.0)])  # a dataset this config does not have
    out = subprocess.run([sys.executable, "-m", "compare.job_resources", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = yaml.safe_load(out.stdout)["set-resources"]
    assert got == {"train_sdconet": {"mem_mb": 3000, "runtime": 40}, "split_tiles": {"mem_mb": 2000, "runtime": 10}}
    assert "1 benchmark file(s) match no job" in out.stderr and "data/elsewhere/split_tiles.tsv" in out.stderr


def test_cli_error_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "compare.job_resources", str(tmp_path / "nope")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no benchmarks/ folder (a results_dir "
                                               "of a finished run?)"]

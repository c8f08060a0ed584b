"""Report tables: sheet validation, result collection, table values, writers and the reference comparison.

All numbers below are synthetic (made up here for the tests); no published number appears.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from benchcore.metrics.results import write_metrics
from compare.report.collect import (ResultsError, collect_efficiency, collect_runs, collect_sr_references,
                                    expected_runs, missing_runs)
from benchcore.experiments import ExperimentsError, load_experiments, select
from compare.report.reference import ReferenceError, load_reference, reference_table
from compare.report.tables import (ablation_table, degradation_table, efficiency_table, main_table,
                                   per_class_table, sr_table, write_table)

REPO = Path(__file__).resolve().parents[1]
SHEET = REPO / "config" / "experiments.tsv"
METHODS = ["sdconet", "sdconet_no_saliency", "yolov8n_bicubic", "frcnn_swinir", "frcnn_hr"]  # frcnn_hr: no runs
RAN = METHODS[:4]
BASE = {"sdconet": 0.40, "sdconet_no_saliency": 0.36, "yolov8n_bicubic": 0.30, "frcnn_swinir": 0.33}
DEGS = {"bicubic_x2": 0.0, "bicubic_x4": -0.10}
CONFIG = {"datasets": {"demo": {"source": "demo"}},
          "degradations": {"bicubic_x2": {"scale": 2}, "bicubic_x4": {"scale": 4}}}
EFF = {"sdconet": (40_000_000, 100.0, 50.0), "yolov8n_bicubic": (3_000_000, 500.0, 150.0),
       "frcnn_swinir": (52_000_000, 800.0, None)}


def ap(method: str, deg: str, seed: int) -> float:
    """The synthetic AP of one run: base + degradation offset + 0.02 per seed."""
    return round(BASE[method] + DEGS[deg] + 0.02 * seed, 4)


def make_results(root: Path) -> Path:
    """4 methods x 2 degradations x 2 seeds of metrics.json, plus 3 efficiency files, under ``root``."""
    for method in RAN:
        for deg in DEGS:
            for seed in (0, 1):
                a = ap(method, deg, seed)
                det = {"AP": a, "AP50": a + 0.2, "AP75": a - 0.05, "AP_s": a / 2, "AP_m": a, "AP_l": None,
                       "AR100": a + 0.1, "per_class": {"airplane": a + 0.1, "ship": a - 0.1}}
                sr = None if method == "sdconet_no_saliency" else {"psnr": 30.0 + seed, "ssim": 0.8 + 0.01 * seed}
                write_metrics(root / "demo" / deg / method / f"seed{seed}" / "metrics.json", method=method,
                              dataset="demo", degradation=deg, seed=seed, detection=det, sr=sr,
                              config={"method": method, "seed": seed})
    for method, (params, gmac, lat) in EFF.items():
        doc = {"method": method, "input_size": [256, 256],
               "params": {"total": params + 1000, "inference": params, "training_only": 1000},
               "flops": {"gmac": gmac, "counter": "fvcore"},
               "latency": {"bs1": {"median_ms": lat, "p90_ms": None},
                           "bsN": {"batch_size": 8, "median_ms": None, "throughput_per_s": 20.0}},
               "peak_mem_mb": 1000.0, "device": "cpu (test)", "provenance": {"git_sha": "abc"}}
        (root / "efficiency").mkdir(parents=True, exist_ok=True)
        (root / "efficiency" / f"{method}.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def exps() -> pd.DataFrame:
    return select(load_experiments(SHEET), methods=METHODS)


@pytest.fixture(scope="module")
def runs(results) -> pd.DataFrame:
    return collect_runs(results)


@pytest.fixture(scope="module")
def eff(results) -> pd.DataFrame:
    return collect_efficiency(results)


def _row(df: pd.DataFrame, method: str) -> pd.Series:
    return df[df["Method"] == method].iloc[0]


# --- experiments sheet ---------------------------------------------------------------------------------------

def test_real_sheet_loads():
    df = load_experiments(SHEET)
    assert len(df) > 20 and df["id"].is_unique and df.iloc[0]["id"] == "sdconet"
    assert set(df["kind"]) == {"sdconet", "ablation", "serial"}
    assert int(df.iloc[0]["line"]) == 2


HEADER = SHEET.read_text().splitlines()[0]
GOOD = "a\tserial\tA\tyolov8n\tsr\tedsr\t-\t-\t-\t-\t-\t-\t-\t\tnote"  # the set cell empty
GOOD_ABL = "b\tablation\tB\tsdconet\tlr\tjoint\tyes\tyes\tyes\tschedule\t1,1,1,1\t1,0.8\tfixed\t-\t"


@pytest.mark.parametrize("lines,line,column", [
    ([GOOD, GOOD_ABL.replace("\tablation\t", "\tablated\t")], 3, "kind"),
    ([GOOD, GOOD.replace("\tsr\t", "\tsrx\t")], 3, "input"),
    ([GOOD_ABL.replace("yes\tyes\tyes", "yes\tmaybe\tyes")], 2, "shared_encoder"),
    ([GOOD.replace("\t-\t-\t-\t-", "\tyes\t-\t-\t-", 1)], 2, "saliency"),
    ([GOOD_ABL.replace("1,0.8", "1,1.5")], 2, "layer_filter_ratio"),
    ([GOOD, GOOD_ABL, GOOD], 4, "id"),
    ([GOOD.replace("\tsr\tedsr", "\tsr\tnone")], 2, "sr_model"),
])
def test_sheet_errors_name_line_and_column(tmp_path, lines, line, column):
    p = tmp_path / "exp.tsv"
    p.write_text("\n".join([HEADER, *lines]) + "\n")
    with pytest.raises(ExperimentsError) as exc:
        load_experiments(p)
    assert f"line {line}, column '{column}'" in str(exc.value) and str(p) in str(exc.value)


def test_sheet_missing_header_column(tmp_path):
    p = tmp_path / "exp.tsv"
    p.write_text(HEADER.replace("\trouting", "") + "\n")
    with pytest.raises(ExperimentsError, match="line 1, column 'routing'"):
        load_experiments(p)


# --- collection ----------------------------------------------------------------------------------------------

def test_collect_runs(runs):
    assert len(runs) == 16
    r = runs[(runs["method"] == "sdconet") & (runs["degradation"] == "bicubic_x4") & (runs["seed"] == 1)].iloc[0]
    assert r["AP"] == pytest.approx(ap("sdconet", "bicubic_x4", 1)) and math.isnan(r["AP_l"])
    assert r["path"] == "demo/bicubic_x4/sdconet/seed1/metrics.json" and r["config"]["seed"] == 1
    assert r["git_sha"] and r["config_hash"] and r["device"]
    assert math.isnan(runs[runs["method"] == "sdconet_no_saliency"].iloc[0]["psnr"])


def test_collect_names_malformed_file(tmp_path):
    bad = tmp_path / "demo" / "bicubic_x2" / "sdconet" / "seed0" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match=str(bad)):
        collect_runs(tmp_path)
    make_results(tmp_path / "r2")
    moved = tmp_path / "r2" / "demo" / "bicubic_x2" / "sdconet" / "seed7"
    (tmp_path / "r2" / "demo" / "bicubic_x2" / "sdconet" / "seed0").rename(moved)
    with pytest.raises(ResultsError, match="seed7.*'seed'"):
        collect_runs(tmp_path / "r2")


def test_collect_efficiency(eff, tmp_path):
    assert list(eff["method"]) == sorted(EFF)
    r = eff[eff["method"] == "frcnn_swinir"].iloc[0]
    assert r["params_inference"] == 52_000_000 and r["gmac"] == 800.0 and math.isnan(r["latency_ms"])
    (tmp_path / "efficiency").mkdir()
    bad = tmp_path / "efficiency" / "x.json"
    bad.write_text(json.dumps({"method": "x", "flops": {"gmac": "many"}}))
    with pytest.raises(ResultsError, match="x.json.*flops/gmac"):
        collect_efficiency(tmp_path)


def test_empty_results(tmp_path, exps):
    runs = collect_runs(tmp_path / "nothing")
    assert len(runs) == 0 and "AP" in runs.columns
    t = main_table(runs, collect_efficiency(tmp_path), exps, "demo", "bicubic_x2")
    assert (t["AP"] == "missing").all()


def test_expected_and_missing(runs, exps):
    exp = expected_runs(CONFIG, exps, [0, 1])
    assert len(exp) == 1 * 2 * 5 * 2
    miss = missing_runs(exp, runs)
    assert set(miss["method"]) == {"frcnn_hr"} and len(miss) == 4
    assert len(expected_runs(CONFIG, exps, [0], methods=["sdconet"])) == 2
    with pytest.raises(ValueError, match="nope"):
        expected_runs(CONFIG, exps, [0], methods=["nope"])


# --- tables --------------------------------------------------------------------------------------------------

def test_main_table_mean_std_and_missing(runs, eff, exps):
    t = main_table(runs, eff, exps, "demo", "bicubic_x2")
    assert list(t["Method"]) == ["SDCoNet", "bicubic + YOLOv8n", "Faster R-CNN on HR (upper bound)",
                                 "SwinIR + Faster R-CNN"]  # sheet order, ablation excluded
    sd = _row(t, "SDCoNet")
    vals = [ap("sdconet", "bicubic_x2", s) * 100 for s in (0, 1)]
    mean, std = sum(vals) / 2, math.sqrt(sum((v - sum(vals) / 2) ** 2 for v in vals))  # ddof=1 with n=2
    assert sd["AP"] == f"{mean:.1f} ± {std:.1f}" == "41.0 ± 1.4"
    assert sd["AP_l"] == "n/a" and sd["n"] == 2 and sd["Params (M)"] == "40.0" and sd["GMAC"] == "100.0"
    assert "demo/bicubic_x2/sdconet/seed0/metrics.json" in sd["source"] and "efficiency/sdconet.json" in sd["source"]
    hr = _row(t, "Faster R-CNN on HR (upper bound)")
    assert hr["AP"] == "missing" and hr["n"] == 0 and hr["Params (M)"] == "–"
    assert _row(t, "SwinIR + Faster R-CNN")["Latency (ms)"] == "–"
    one = main_table(runs[runs["seed"] == 0], eff, exps, "demo", "bicubic_x2")
    assert _row(one, "SDCoNet")["AP"] == "40.0"


def test_ablation_sr_degradation_perclass_tables(runs, eff, exps):
    ab = ablation_table(runs, exps, "demo", "bicubic_x4")
    assert list(ab["Method"]) == ["SDCoNet", "w/o saliency"]
    assert _row(ab, "w/o saliency")["Saliency"] == "✗" and _row(ab, "SDCoNet")["Saliency"] == "✓"
    assert _row(ab, "SDCoNet")["AP"] == "31.0 ± 1.4" and _row(ab, "SDCoNet")["AP_s"] == "15.5 ± 0.7"
    sr = sr_table(runs, exps, "demo", "bicubic_x2")
    assert "w/o saliency" not in set(sr["Method"]) and _row(sr, "SDCoNet")["PSNR (dB)"] == "30.50 ± 0.71"
    dt = degradation_table(runs, exps, "demo", ["bicubic_x2", "bicubic_x4"])
    assert list(dt.columns[1:5]) == ["bicubic_x2 AP", "bicubic_x2 AP_s", "bicubic_x4 AP", "bicubic_x4 AP_s"]
    assert _row(dt, "bicubic + YOLOv8n")["bicubic_x4 AP"] == "21.0 ± 1.4"
    assert _row(dt, "Faster R-CNN on HR (upper bound)")["bicubic_x2 AP"] == "missing"
    pc = per_class_table(runs, exps, "demo", "bicubic_x2")
    assert list(pc.columns[1:3]) == ["airplane", "ship"] and _row(pc, "SDCoNet")["ship"] == "31.0"


def test_sr_table_reference_rows(runs, exps, tmp_path):
    """report.sr_references: interpolation scores (one seed per dataset/degradation) listed after the methods."""
    for seed, psnr in ((0, 27.25), (1, 99.0)):  # a second seed of the same interpolation is not a second row
        d = tmp_path / "demo" / "bicubic_x2" / "sr" / "nearest" / f"seed{seed}" / "images"
        d.mkdir(parents=True)
        (d / "sr_metrics.json").write_text(json.dumps({"psnr": psnr, "ssim": 0.5, "n": 16}))
    refs = collect_sr_references(tmp_path, ["nearest", "bicubic"])
    assert list(refs["sr_model"]) == ["nearest"] and refs.loc[0, "psnr"] == 27.25
    sr = sr_table(runs, exps, "demo", "bicubic_x2", refs)
    assert list(sr["Method"])[-1] == "nearest upscaling (reference)" and list(sr["Method"])[0] == "SDCoNet"
    assert _row(sr, "nearest upscaling (reference)")["PSNR (dB)"] == "27.25"
    assert len(sr_table(runs, exps, "demo", "bicubic_x4", refs).query("`SR model` == 'nearest'")) == 0
    (d / "sr_metrics.json").write_text("{not json")
    (tmp_path / "demo" / "bicubic_x2" / "sr" / "nearest" / "seed0" / "images" / "sr_metrics.json").write_text("[]")
    with pytest.raises(ResultsError, match="sr_metrics.json"):
        collect_sr_references(tmp_path, ["nearest"])


def test_efficiency_table_ratios(eff, exps):
    t = efficiency_table(eff, exps)
    assert list(t["Method"]) == ["SDCoNet", "bicubic + YOLOv8n", "SwinIR + Faster R-CNN"]
    assert _row(t, "SDCoNet")["GMAC ratio"] == "1.00×" and _row(t, "bicubic + YOLOv8n")["GMAC ratio"] == "5.00×"
    assert _row(t, "SwinIR + Faster R-CNN")["Latency ratio"] == "–"
    assert _row(t, "bicubic + YOLOv8n")["Params ratio"] == "0.07×" and _row(t, "SDCoNet")["Input"] == "256×256"


def test_write_table_formats(runs, eff, exps, tmp_path):
    t = main_table(runs, eff, exps, "demo", "bicubic_x2")
    files = write_table(t, tmp_path / "tables" / "main_demo_bicubic_x2", "Main results on demo_set", "tab:main_demo",
                        {"AP": "max", "GMAC": "min"})
    csv, md, tex = (files[k].read_text() for k in ("csv", "md", "tex"))
    assert "source" in csv and "seed0/metrics.json" in csv and pd.read_csv(files["csv"]).shape[0] == 4
    assert "| SDCoNet |" in md and "**41.0 ± 1.4**" in md and "seed0" not in md
    for cmd in (r"\begin{table}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}", r"\label{tab:main_demo}"):
        assert cmd in tex
    assert r"\caption{Main results on demo\_set}" in tex and r"AP\_s" in tex and "AP_s" not in tex
    assert r"\textbf{41.0 $\pm$ 1.4}" in tex and r"\textbf{100.0}" in tex and "seed0" not in tex
    assert tex.count(r"\textbf") == 2 and "missing" in tex
    row = next(line for line in tex.splitlines() if line.startswith("SDCoNet"))
    assert row.count("&") == len(t.columns) - 2 and row.endswith(r"\\")


# --- reference -----------------------------------------------------------------------------------------------

def test_reference_table_delta(runs, exps, tmp_path):
    ref = tmp_path / "ref.yaml"
    ref.write_text("demo:\n  sdconet: {degradation: bicubic_x2, source: made-up, AP: 39.5, AP_s: 25}\n"
                   "  frcnn_hr: {AP: 50}\n")
    doc = load_reference(ref)
    t = reference_table(runs, doc, exps)
    row = t[(t["Method"] == "SDCoNet") & (t["Metric"] == "AP")].iloc[0]
    assert row["Paper"] == "39.5" and row["Reproduced"] == "41.0 ± 1.4" and row["Δ"] == "+1.5"
    row_s = t[(t["Method"] == "SDCoNet") & (t["Metric"] == "AP_s")].iloc[0]
    assert row_s["Δ"] == f"{20.5 - 25:+.1f}"
    assert t[t["Method"] == "Faster R-CNN on HR (upper bound)"].iloc[0]["Reproduced"] == "missing"
    assert len(t) == 3 and "yolov8n" not in " ".join(t["Method"])


def test_reference_file_validation(tmp_path, repo_root):
    assert load_reference(repo_root / "config" / "reference_results.yaml") == {}
    assert load_reference(None) == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("demo:\n  sdconet: {APs: 1.0}\n")
    with pytest.raises(ReferenceError, match="demo/sdconet"):
        load_reference(bad)


def test_significance_table_reads_bootstrap_blocks(tmp_path):
    from benchcore.metrics.results import write_metrics
    from compare.report.collect import collect_runs
    from benchcore.experiments import load_experiments
    from compare.report.tables import significance_table

    det = {k: 0.5 for k in ("AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l", "AR1", "AR10", "AR100", "AR_s", "AR_m", "AR_l")}
    det["per_class"] = {"vehicle": 0.5}
    boot = {"AP": {"point": 0.5, "low": 0.4, "high": 0.6, "n_boot": 20, "n_valid": 20},
            "AP_s": {"point": 0.3, "low": 0.2, "high": 0.45, "n_boot": 20, "n_valid": 19}}
    write_metrics(tmp_path / "demo/x2/sdconet/seed0/metrics.json", method="sdconet", dataset="demo",
                  degradation="x2", seed=0, detection=det, extra={"bootstrap": boot})
    write_metrics(tmp_path / "demo/x2/frcnn_hr/seed0/metrics.json", method="frcnn_hr", dataset="demo",
                  degradation="x2", seed=0, detection=det)
    exps = load_experiments("config/experiments.tsv")
    table = significance_table(collect_runs(tmp_path), exps, "demo", "x2")
    assert list(table["Method"]) == ["SDCoNet"]  # the run without a bootstrap block is left out
    assert table.iloc[0]["AP [95% CI]"] == "50.0 [40.0, 60.0]"
    assert table.iloc[0]["AP_s n_boot"] == 19


def test_job_cost_table_from_snakemake_benchmark_files(tmp_path):
    import pytest

    from compare.report.collect import ResultsError, collect_job_costs
    from compare.report.tables import job_cost_table

    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, wall, rss in [("sdconet/demo/x2/sdconet/seed0/train.tsv", 12.5, 900.0),
                           ("sdconet/demo/x2/sdconet/seed0/evaluate.tsv", 2.5, 700.0),
                           ("data/demo/convert.tsv", 1.0, 50.0)]:
        f = tmp_path / "benchmarks" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(head + f"{wall}\t0:00:{int(wall):02d}\t{rss}\t1\t1\t1\t0\t0\t50\t{wall / 2}\n")
    costs = collect_job_costs(tmp_path)
    assert len(costs) == 3
    table = job_cost_table(costs).set_index("Stage")
    assert table.loc["sdconet", "Jobs"] == 2 and table.loc["sdconet", "Wall total (s)"] == "15.0"
    assert table.loc["sdconet", "Slowest job"].startswith("demo/x2/sdconet/seed0/train")
    assert table.loc["sdconet", "Peak RSS (MB)"] == "900"
    (tmp_path / "benchmarks" / "bad.tsv").write_text("nonsense\n")
    with pytest.raises(ResultsError, match="bad.tsv"):
        collect_job_costs(tmp_path)


def test_run_behaviour_names_the_released_code_behaviours():
    from compare.report.collect import run_behaviour

    def cfg(**model):
        base = {"deform_residual": "standard", "sr_decoder": {"official_view_quirk": False}, "head_init": "independent",
                "neck": {"sr_conv_init": "xavier"}}
        for k, v in model.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) else v
        return {"spec": {"settings": {"model": base}}}

    assert run_behaviour(cfg()) == "fixed"
    released = cfg(deform_residual="official", sr_decoder={"official_view_quirk": True}, head_init="copies",
                   neck={"sr_conv_init": "kaiming_fan_out"})
    assert run_behaviour(released) == "released"
    assert run_behaviour(cfg(deform_residual="official")) == "released: double residual"
    assert run_behaviour({"spec": {"settings": {"detector": {}}}}) == "–"  # a serial baseline
    assert run_behaviour(None) == "unknown"

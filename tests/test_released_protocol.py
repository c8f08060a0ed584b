"""The paper configuration = the released protocol (project issue 10; docs/methods.md).

- ``evaluation.protocol`` (coco | mmdet) reaches ``coco_evaluate`` through the evaluate entry points and is recorded
  in each metrics.json; every report table names it, and the main / ablation tables each run's precision.
- ``config/sdconet/paper.yaml`` trains in fp32 with the four released behaviours on; ``tiny.yaml`` keeps them off.
- ``sdconet.rows`` (per-row overrides between ``sdconet.set`` and the row's ``set`` cell) carries the released
  36-epoch / drop-at-11 schedules in ``config/paper.yaml``; the sheet gives SA_DINO_SR / SA_DINO_BG their learnable
  alpha, and the row ``sdconet_fixed`` turns the four released behaviours off.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchcore.experiments import load_experiments
from benchcore.metrics.detection import coco_evaluate
from benchcore.metrics.results import read_metrics, write_metrics
from benchcore.runspec import degradation_of

REPO = Path(__file__).resolve().parents[1]
SHEET = REPO / "config" / "experiments.tsv"
PAPER = REPO / "config" / "sdconet" / "paper.yaml"
TINY = REPO / "config" / "sdconet" / "tiny.yaml"
DEG = degradation_of("bicubic_x2", {"bicubic_x2": {"scale": 2, "kernel": "torch-bicubic", "blur": 0.0,
                                                   "noise": 0.0, "jpeg": None, "seed": 0}})
RELEASED = {"deform_residual": "official", "official_view_quirk": True, "head_init": "copies",
            "sr_conv_init": "kaiming_fan_out"}
FIXED = {"deform_residual": "standard", "official_view_quirk": False, "head_init": "independent",
         "sr_conv_init": "xavier"}
pytestmark = pytest.mark.usefixtures("one_thread")


def _row(method: str) -> dict:
    return load_experiments(SHEET).set_index("id", drop=False).loc[method].to_dict()


def _spec(method: str, config: Path = PAPER, **kw) -> dict:
    from sdconet.spec import build_spec

    return build_spec(results="results", dataset="nwpu", degradation=DEG, row=_row(method), seed=0,
                      config_file=config, num_classes=10, **kw)


def _behaviours(spec: dict) -> dict:
    m = spec["settings"]["model"]
    return {"deform_residual": m["deform_residual"], "official_view_quirk": m["sr_decoder"]["official_view_quirk"],
            "head_init": m["head_init"], "sr_conv_init": m["neck"]["sr_conv_init"]}


# --- model config: fp32 and the released behaviours --------------------------------------------------------------

def test_paper_config_is_the_released_model_in_fp32() -> None:
    spec = _spec("sdconet")
    assert _behaviours(spec) == RELEASED
    assert spec["settings"]["train"]["amp"] is False
    assert (spec["settings"]["train"]["epochs"], spec["settings"]["train"]["milestones"]) == (52, [27])


def test_sdconet_fixed_turns_the_four_behaviours_off() -> None:
    fixed = _spec("sdconet_fixed")
    assert _behaviours(fixed) == FIXED
    full = _spec("sdconet")
    # nothing else differs from the full model
    for section in ("model", "train"):
        a, b = dict(full["settings"][section]), dict(fixed["settings"][section])
        if section == "model":
            for d in (a, b):
                d["sr_decoder"] = {k: v for k, v in d["sr_decoder"].items() if k != "official_view_quirk"}
                d["neck"] = {k: v for k, v in d["neck"].items() if k != "sr_conv_init"}
                d.pop("deform_residual"), d.pop("head_init")
        assert a == b, section


def test_tiny_config_runs_the_fixed_behaviour_so_sdconet_fixed_equals_sdconet() -> None:
    full, fixed = _spec("sdconet", TINY), _spec("sdconet_fixed", TINY)
    assert _behaviours(full) == FIXED and full["settings"] == fixed["settings"]


# --- the sheet: released alpha per ablation row -----------------------------------------------------------------

def test_released_variants_have_a_learnable_alpha_in_the_sheet() -> None:
    """SA_DINO_SR (joint from epoch 0) and SA_DINO_BG (no SR): learnable alpha U(-0.3, 0.3) (spec Appendix B)."""
    sheet = load_experiments(SHEET).set_index("id")
    assert sheet.loc["sdconet_routing_none", "alpha"] == "learnable"
    assert sheet.loc["sdconet_no_sr", "alpha"] == "learnable"
    assert sheet.loc["sdconet", "alpha"] == "fixed" and sheet.loc["sdconet_fixed", "kind"] == "ablation"
    sal = _spec("sdconet_routing_none")["settings"]["model"]["saliency"]
    assert (sal["alpha_mode"], sal["alpha_range"]) == ("learnable", 0.3)
    import torch

    from sdconet.models.config import preset
    from sdconet.models.saliency import build_saliency

    torch.manual_seed(0)
    alpha = build_saliency(preset("tiny", scale=2, saliency={"alpha_mode": "learnable"})).alpha
    assert alpha.requires_grad and bool((alpha.abs() <= 0.3).all()) and alpha.abs().max() > 0


# --- sdconet.rows: the released schedules ----------------------------------------------------------------------

def _workflow_config() -> dict:
    from snakemake.utils import validate

    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg


def test_paper_workflow_config_gives_the_released_schedules_and_protocol() -> None:
    cfg = _workflow_config()
    assert cfg["evaluation"] == {"protocol": "mmdet"}
    rows = cfg["sdconet"]["rows"]
    assert set(rows) == {"sdconet_routing_none", "sdconet_no_sr", "sdconet_hr", "sdconet_separate"}
    for method in load_experiments(SHEET).query("kind != 'serial'")["id"]:
        spec = _spec(method, sets=cfg["sdconet"]["set"], rows=rows)
        train = spec["settings"]["train"]
        want = (36, [11]) if method in rows else (52, [27])
        assert (train["epochs"], train["milestones"]) == want, method
        assert spec["sources"]["rows"] == rows.get(method, {})
        assert _behaviours(spec) == (FIXED if method == "sdconet_fixed" else RELEASED), method


def test_rows_layer_order_and_errors() -> None:
    from sdconet.spec import SpecError, check_row_ids

    rows = {"sdconet_routing_none": {"train.epochs": 36, "model.sr_loss_weight": 2.0}}
    spec = _spec("sdconet_routing_none", sets={"train.epochs": 5, "model.sr_loss_weight": 3.0}, rows=rows)
    assert spec["settings"]["train"]["epochs"] == 36  # sdconet.rows beats sdconet.set
    assert spec["settings"]["model"]["sr_loss_weight"] == 2.0
    row = {**_row("sdconet_routing_none"), "set": "train.epochs=7"}
    from sdconet.spec import build_spec

    spec = build_spec(results="results", dataset="nwpu", degradation=DEG, row=row, seed=0, config_file=PAPER,
                      num_classes=10, rows=rows)
    assert spec["settings"]["train"]["epochs"] == 7  # the row's own set cell beats sdconet.rows
    assert _spec("sdconet", rows=rows)["settings"]["train"]["epochs"] == 52  # other rows untouched
    with pytest.raises(ValueError, match=r"sdconet.rows.sdconet_no_sr: train section: unknown key 'epoch'.*'epochs'"):
        _spec("sdconet_no_sr", rows={"sdconet_no_sr": {"train.epoch": 36}})
    with pytest.raises(SpecError, match=r"sdconet.rows.sdconet_no_sr: 'train.seed' cannot be set here"):
        _spec("sdconet_no_sr", rows={"sdconet_no_sr": {"train.seed": 3}})
    ids = ["sdconet", "sdconet_no_sr"]
    check_row_ids({"sdconet_no_sr": {}}, ids, [*ids, "frcnn_hr"])
    with pytest.raises(SpecError, match=r"sdconet.rows.sdconet_no_srr: not a row of the sheet"):
        check_row_ids({"sdconet_no_srr": {}}, ids, [*ids, "frcnn_hr"])
    with pytest.raises(SpecError, match=r"sdconet.rows.frcnn_hr: a serial row"):
        check_row_ids({"frcnn_hr": {}}, ids, [*ids, "frcnn_hr"])


def _dry_run(tmp_path: Path, edit) -> subprocess.CompletedProcess:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    edit(cfg)
    path = tmp_path / "my_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
                           "--configfile", str(path), "--config", f"results_dir={tmp_path}/results"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.workflow
def test_workflow_rejects_an_unknown_row_id_and_protocol(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, lambda c: c["sdconet"].update(rows={"sdconet_nosr": {"train.epochs": 36}}))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "my_config.yaml: sdconet.rows.sdconet_nosr: not a row of the sheet" in out
    r = _dry_run(tmp_path, lambda c: c.update(evaluation={"protocol": "voc"}))
    assert r.returncode != 0 and "bad value at 'evaluation.protocol': \"voc\"" in r.stdout + r.stderr
    r = _dry_run(tmp_path, lambda c: (c.update(evaluation={"protocol": "mmdet"}),
                                      c["sdconet"].update(rows={"sdconet_no_sr": {"train.epochs": 2}})))
    assert r.returncode == 0, r.stderr[-2000:]


def test_evaluate_rules_pass_the_protocol() -> None:
    for rules, script, fn in (("sdconet.smk", "evaluate_sdconet.py", "evaluate_from_spec"),
                              ("baselines.smk", "evaluate_detector.py", "evaluate_detector_from_spec")):
        text = (REPO / "workflow" / "rules" / rules).read_text()
        assert text.count('protocol=config["evaluation"]["protocol"]') == 1, rules
        body = (REPO / "workflow" / "scripts" / script).read_text()
        assert fn in body and "protocol=snakemake.params.protocol" in body, script


# --- evaluation: the protocol reaches metrics.json ---------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory, make_demo_data) -> Path:
    """A results/data/demo-like folder: tiles (128 px), partition, bicubic_x2/lr."""
    return make_demo_data(tmp_path_factory.mktemp("protocol"), seed=1)


def test_sdconet_evaluation_records_the_protocol(demo: Path) -> None:
    from sdconet.spec import build_spec, evaluate_from_spec, train_from_spec

    spec = build_spec(results=str(demo.parents[1]), dataset="demo", degradation=DEG, row=_row("sdconet"), seed=0,
                      config_file=TINY, num_classes=4, sets={"train.epochs": 1, "train.unfreeze_epoch": 0,
                                                             "train.eval_every": 0})
    train_from_spec(spec)
    res = evaluate_from_spec(spec, protocol="mmdet")
    doc = read_metrics(res["metrics"])
    det = doc["detection"]
    assert det["protocol"] == "mmdet" and det["max_dets"] == [100, 300, 1000] and "AR1000" in det
    dets = json.loads((Path(res["metrics"]).parent / "detections.json").read_text())
    again = coco_evaluate(demo / "partition" / "test.json", dets, protocol="mmdet")
    assert {k: again[k] for k in ("AP", "AP50", "AP_s")} == {k: det[k] for k in ("AP", "AP50", "AP_s")}
    coco = evaluate_from_spec(spec, out=Path(res["metrics"]).with_name("metrics_coco.json"))
    assert read_metrics(coco["metrics"])["detection"]["protocol"] == "coco"


def test_detector_evaluation_passes_the_protocol(demo: Path, tmp_path: Path, monkeypatch) -> None:
    """evaluate_detector_from_spec -> det_eval_step -> coco_evaluate (the detector itself stubbed)."""
    import baselines.frcnn
    import baselines.spec as bspec
    from baselines.pipeline import det_eval_step

    gt = json.loads((demo / "partition" / "test.json").read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    monkeypatch.setattr(baselines.frcnn, "predict_frcnn", lambda *a, **k: perfect)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"stub")
    doc = det_eval_step("frcnn", weights, demo / "tiles", demo / "partition", tmp_path / "m.json", method="frcnn_hr",
                        dataset="demo", degradation="bicubic_x2", seed=0, protocol="mmdet")
    assert doc["detection"]["protocol"] == "mmdet" and doc["detection"]["AP"] == pytest.approx(1.0)
    seen = {}
    monkeypatch.setattr(bspec, "det_eval_step", lambda *a, **k: seen.update(k) or {})
    out = tmp_path / "run"
    (out / "train").mkdir(parents=True)
    (out / "train" / "complete.json").write_text(json.dumps({"weights": str(weights)}))
    spec = {"paths": {"out": str(out), "images": str(demo / "tiles"), "partition": str(demo / "partition")},
            "method": {"id": "frcnn_hr", "input": "hr", "detector": "frcnn"}, "dataset": "demo", "seed": 0,
            "degradation": dict(DEG), "settings": {"detector": {}, "scale_to_hr": 1}, "kind": "serial"}
    bspec.evaluate_detector_from_spec(spec, protocol="mmdet")
    assert seen["protocol"] == "mmdet"


# --- the report names the protocol and the precision --------------------------------------------------------------

def _write_run(root: Path, method: str, seed: int, protocol: str | None, amp: bool, device: str,
               train_device: str = "auto") -> None:
    det = {"AP": 0.3 + 0.01 * seed, "AP50": 0.5, "AP75": 0.3, "AP_s": 0.2, "AP_m": 0.3, "AP_l": None, "AR100": 0.4,
           "per_class": {"plane": 0.3}}
    if protocol is not None:
        det["protocol"] = protocol
    spec = {"kind": "sdconet", "settings": {"train": {"amp": amp, "device": train_device}, "model": {}}}
    write_metrics(root / "demo" / "bicubic_x2" / method / f"seed{seed}" / "metrics.json", method=method,
                  dataset="demo", degradation="bicubic_x2", seed=seed, detection=det,
                  config={"spec": spec, "spec_hash": "x", "run_spec": None}, device=device)


def test_run_precision_rule() -> None:
    from compare.report.collect import run_precision

    def sd(amp: bool, dev: str = "auto") -> dict:
        return {"spec": {"kind": "sdconet", "settings": {"train": {"amp": amp, "device": dev}}}}

    assert run_precision(sd(True), "cuda:0 (NVIDIA H100)") == "fp16 autocast"
    assert run_precision(sd(True), "cpu (x86, 2 threads)") == "fp32"  # AMP is ignored on the CPU
    assert run_precision(sd(False), "cuda:0") == "fp32"
    assert run_precision(sd(True, "cpu"), "cuda:0") == "fp32"  # an explicit training device wins
    bf16 = {"spec": {"kind": "sdconet",
                     "settings": {"train": {"amp": True, "amp_dtype": "bfloat16", "device": "auto"}}}}
    assert run_precision(bf16, "cuda:0") == "bf16 autocast"
    yolo = {"spec": {"kind": "serial", "settings": {"detector": {"device": "0", "overrides": {}}}}}
    assert run_precision(yolo, "cpu") == "fp16 autocast"  # ultralytics: AMP on by default, GPU "0"
    frcnn = {"spec": {"kind": "serial", "settings": {"detector": {"amp": False, "device": "cuda"}}}}
    assert run_precision(frcnn, "cuda") == "fp32"
    assert run_precision({"method": "x"}, "cuda") == "unknown"


def test_report_names_protocol_and_precision(tmp_path: Path) -> None:
    from compare.report.collect import collect_runs
    from compare.report.html import build_report
    from compare.report.tables import ablation_table, main_table

    res = tmp_path / "results"
    for seed in (0, 1):
        _write_run(res, "sdconet", seed, "mmdet", amp=False, device="cuda:0")
        _write_run(res, "sdconet_fixed", seed, "mmdet", amp=True, device="cuda:0")
    runs = collect_runs(res)
    assert set(runs["protocol"]) == {"mmdet"}
    exps = load_experiments(SHEET)
    exps = exps[exps["id"].isin(["sdconet", "sdconet_fixed", "frcnn_hr"])].reset_index(drop=True)
    main = main_table(runs, None, exps, "demo", "bicubic_x2").set_index("Method")
    assert main.loc["SDCoNet", "Precision"] == "fp32"
    assert main.loc["Faster R-CNN on HR (upper bound)", "Precision"] == "–"  # no runs
    abl = ablation_table(runs, exps, "demo", "bicubic_x2").set_index("Method")
    assert abl.loc["SDCoNet, released bugs fixed", "Precision"] == "fp16 autocast"
    cfg = {"datasets": {"demo": {}}, "degradations": {"bicubic_x2": {"scale": 2}}, "evaluation": {"protocol": "mmdet"}}
    out = tmp_path / "report"
    methods = ["sdconet", "sdconet_fixed", "frcnn_hr"]
    page = build_report(res, cfg, SHEET, out, seeds=[0, 1], methods=methods).read_text()
    for stem in ("main_demo_bicubic_x2", "ablation_demo_bicubic_x2", "degradation_demo", "perclass_demo_bicubic_x2"):
        caption = (out / "tables" / f"{stem}.md").read_text().splitlines()[0]
        assert "mmdetection CocoMetric protocol" in caption, stem
        assert "mmdetection CocoMetric protocol" in (out / "tables" / f"{stem}.tex").read_text(), stem
    assert "<b>Evaluation.</b> AP protocol: mmdetection CocoMetric" in page and "fp16 autocast: 2 runs" in page
    # a run scored under the COCO protocol (or written before the key existed) is named, and flagged as different
    _write_run(res, "sdconet", 2, None, amp=False, device="cpu")
    runs = collect_runs(res)
    assert runs.set_index("seed").loc[2, "protocol"] == "coco" and runs.set_index("seed").loc[2, "precision"] == "fp32"
    build_report(res, cfg, SHEET, out, seeds=[0, 1, 2], methods=["sdconet", "sdconet_fixed"])
    caption = (out / "tables" / "main_demo_bicubic_x2.md").read_text().splitlines()[0]
    assert "AP protocols differ between these runs (coco: 1 run, mmdet: 4 runs)" in caption
    # no runs: the configured protocol is named
    empty = tmp_path / "empty"
    empty.mkdir()
    build_report(empty, {**cfg, "evaluation": {"protocol": "coco"}}, SHEET, tmp_path / "r2", seeds=[0],
                 methods=["sdconet"])
    assert "AP protocol: COCO protocol" in (tmp_path / "r2" / "tables" / "main_demo_bicubic_x2.md").read_text()
    assert isinstance(pd.read_csv(out / "tables" / "runs.csv")["protocol"].iloc[0], str)

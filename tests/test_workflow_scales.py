"""Issue 11: x2, x3 and x4 on the demo's default 256 px tiles, and a user's own experiments sheet, end to end.

One small DAG (``snakemake --cores 2 all`` in a temporary folder) with three degradations (x2 torch-bicubic, x3
MATLAB bicubic, x4 torch-bicubic) runs SDCoNet, one ablation, bicubic + YOLOv8n, EDSR + YOLOv8n and the LR bound
at every scale (the HR bound once: it does not depend on the degradation), from a copied config whose own sheet
holds a new row (a different saliency loss weight). Every SR output has the (mod-cropped) HR size with no resize,
and the SR decoder's upscale is the degradation's scale.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

TILE = 256  # the demo's default tile size
SCALES = {"bicubic_x2": 2, "matlab_x3": 3, "bicubic_x4": 4}
SWEPT = ["sdconet", "sdconet_no_sr", "yolov8n_lr", "yolov8n_bicubic", "yolov8n_edsr"]
NEW_ROW = "sdconet_salw8"
MAIN_ONLY = ["yolov8n_hr", NEW_ROW]


@pytest.fixture(scope="module")
def scales_run(repo_root, tmp_path_factory, run_workflow, copy_sheet):
    work = tmp_path_factory.mktemp("scales_wf")
    copy_sheet(work / "my_sheet.tsv", extra_rows=[{
        "id": NEW_ROW, "kind": "ablation", "display": "saliency loss x4", "detector": "sdconet", "input": "lr",
        "sr_model": "joint", "saliency": "yes", "shared_encoder": "yes", "sr_branch": "yes", "routing": "schedule",
        "level_filter_ratio": "1,1,1,1", "layer_filter_ratio": "1,1,1,1,1,1", "alpha": "fixed",
        "set": "model.saliency.loss_weight=8.0", "notes": "a user's row: the saliency loss weighted 8 instead of 2"}])

    cfg = yaml.safe_load((repo_root / "config" / "demo_full.yaml").read_text())  # smoke budgets
    cfg.update({
        "results_dir": "results",
        "datasets": {"demo": {"source": "demo", "demo": {"n_images": 4, "size": 512, "seed": 0},
                              "tile": {"size": TILE, "gap": 0, "keep_ratio": 0.7, "pad": True},
                              "partition": {"mode": "ratio", "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}}}},
        "degradations": {"bicubic_x2": {"scale": 2}, "matlab_x3": {"scale": 3, "kernel": "matlab-bicubic"},
                         "bicubic_x4": {"scale": 4}},
        "main_degradation": "bicubic_x2",
        "experiments": "my_sheet.tsv",
        "methods": SWEPT + MAIN_ONLY,
        "seeds": [0],
        "sweep": {"degradations": ["matlab_x3", "bicubic_x4"], "methods": SWEPT},
    })
    cfg["sdconet"]["set"] = {"train.epochs": 1, "train.unfreeze_epoch": 0, "train.eval_every": 0}
    cfg["baselines"]["set"] = {"yolo.epochs": 1, "sr.iters": 10, "sr.batch_size": 4}
    cfg["efficiency"].update({"warmup": 0, "runs": 1, "batch_size": 1})
    cfg["report"]["bootstrap"] = 0
    run_workflow(work, cfg, timeout=1500)
    return work / "results"


def _spec(results: Path, deg: str, method: str) -> dict:
    return json.loads((results / "demo" / deg / method / "seed0" / "run_spec.json").read_text())


@pytest.mark.parametrize("deg", sorted(SCALES))
def test_sdconet_sr_upscale_is_the_degradation_scale(scales_run, deg):
    from sdconet.models.build import build_model
    from sdconet.models.config import from_dict

    s = SCALES[deg]
    spec = _spec(scales_run, deg, "sdconet")
    model_cfg = spec["settings"]["model"]
    assert spec["degradation"]["scale"] == s == model_cfg["lr"]["scale"]
    assert model_cfg["sr_decoder"]["size_align"] == "crop"
    assert build_model(from_dict(model_cfg)).sr_decoder.upscale == s
    doc = json.loads((scales_run / "demo" / deg / "sdconet" / "seed0" / "metrics.json").read_text())
    covered = s * (TILE // s)  # 256 at x2 / x4, 255 at x3 (mod-crop)
    assert doc["sr"]["sr_sizes"] == [[covered, covered]] and doc["sr"]["psnr"] > 0
    assert doc["provenance"]["config"]["spec"]["degradation"]["name"] == deg


@pytest.mark.parametrize("deg", sorted(SCALES))
def test_serial_sr_outputs_have_the_hr_size(scales_run, deg):
    s = SCALES[deg]
    covered = s * (TILE // s)
    for model in ("bicubic", "edsr"):
        folder = scales_run / "demo" / deg / "sr" / model / "seed0" / "images"
        sizes = {Image.open(p).size for p in folder.glob("*.png")}
        assert sizes == {(covered, covered)}, (model, sizes)
        assert json.loads((folder / "sr_metrics.json").read_text())["scale"] == s
    sr_spec = json.loads((scales_run / "demo" / deg / "sr" / "edsr" / "seed0" / "run_spec.json").read_text())
    assert sr_spec["settings"]["sr"]["scale"] == s == sr_spec["settings"]["sr_infer"]["scale"]
    lr_spec = _spec(scales_run, deg, "yolov8n_lr")
    assert lr_spec["settings"]["scale_to_hr"] == s
    for method in SWEPT:
        assert (scales_run / "demo" / deg / method / "seed0" / "metrics.json").is_file(), (deg, method)


def test_lr_tiles_are_mod_cropped(scales_run):
    for deg, s in SCALES.items():
        sizes = {Image.open(p).size for p in (scales_run / "data" / "demo" / deg / "lr").glob("*.png")}
        assert sizes == {(TILE // s, TILE // s)}


def test_a_new_row_of_the_users_sheet_trains_and_is_reported(scales_run):
    spec = _spec(scales_run, "bicubic_x2", NEW_ROW)
    assert spec["settings"]["model"]["saliency"]["loss_weight"] == 8.0
    assert _spec(scales_run, "bicubic_x2", "sdconet")["settings"]["model"]["saliency"]["loss_weight"] == 2.0
    assert spec["method"]["set"] == "model.saliency.loss_weight=8.0"
    assert (scales_run / "demo" / "bicubic_x2" / NEW_ROW / "seed0" / "metrics.json").is_file()
    tables = scales_run / "report" / "tables"
    shown = "".join(p.read_text() for p in tables.glob("*.csv"))
    assert "saliency loss x4" in shown
    sweep = [p for p in tables.glob("*.csv") if "degradation" in p.name or "severity" in p.name]
    assert sweep, sorted(p.name for p in tables.glob("*.csv"))
    table = pd.concat(pd.read_csv(p) for p in sweep)
    assert len(table) > 0

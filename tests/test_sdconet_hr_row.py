"""The SDCoNet family's HR upper bound (``sdconet_hr``: the w/o-SR detector fed the HR tile): spec, run, efficiency.

The row takes the HR tile as the model's input at scale 1 (no LR is made, no SR branch), reads the data stage's
HR tiles, and is scored on the same HR grid as every other row.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchcore.experiments import load_experiments
from benchcore.runspec import degradation_of
from sdconet.methods import input_scale, method_row, reads_hr
from sdconet.spec import build_spec, evaluate_from_spec, train_from_spec

REPO = Path(__file__).resolve().parents[1]
SHEET = REPO / "config" / "experiments.tsv"
DEGS = {"bicubic_x2": {"scale": 2, "kernel": "torch-bicubic", "blur": 0.0, "noise": 0.0, "jpeg": None, "seed": 0},
        "bicubic_x4": {"scale": 4, "kernel": "torch-bicubic", "blur": 0.0, "noise": 0.0, "jpeg": None, "seed": 0}}
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")]


def _row(method: str) -> dict:
    return load_experiments(SHEET).set_index("id").loc[method].to_dict() | {"id": method}


def _spec(root: Path, method: str, deg: str = "bicubic_x2", **kw) -> dict:
    return build_spec(results=str(root / "results"), dataset="demo", degradation=degradation_of(deg, DEGS),
                      row=_row(method), seed=0, config_file=REPO / "config" / "sdconet" / "tiny.yaml",
                      num_classes=4, **kw)


def test_the_hr_row_is_the_no_sr_detector_on_the_hr_tile():
    hr, no_sr = method_row("sdconet_hr"), method_row("sdconet_no_sr")
    assert hr["input"] == "hr" and no_sr["input"] == "lr"
    # the same model switches as the LR lower bound of the family: only the input differs
    cols = ("saliency", "shared_encoder", "sr_branch", "routing", "level_filter_ratio", "layer_filter_ratio", "alpha")
    assert {c: hr[c] for c in cols} == {c: no_sr[c] for c in cols}
    assert reads_hr("sdconet_hr") and not reads_hr("sdconet")
    assert input_scale("sdconet_hr", 4) == 1 and input_scale("sdconet_no_sr", 4) == 4


def test_an_hr_row_with_an_sr_branch_is_refused():
    with pytest.raises(ValueError, match="sr_branch=no"):
        method_row({**_row("sdconet_hr"), "sr_branch": "yes"})
    with pytest.raises(ValueError, match="input=.sr."):
        method_row({**_row("sdconet"), "input": "sr"})


@pytest.mark.parametrize("deg", ["bicubic_x2", "bicubic_x4"])
def test_spec_reads_the_hr_tiles_at_scale_one(tmp_path, deg):
    spec = _spec(tmp_path, "sdconet_hr", deg)
    lr = spec["settings"]["model"]["lr"]
    assert lr["scale"] == 1 and lr["on_the_fly"] is False and spec["settings"]["model"]["use_sr"] is False
    assert spec["paths"]["lr"] == f"{spec['paths']['tiles']}/images"
    # the LR rows keep the degradation's scale (x2 torch-bicubic is made inside the model, as released)
    lr_spec = _spec(tmp_path, "sdconet_no_sr", deg)["settings"]["model"]["lr"]
    assert lr_spec["scale"] == DEGS[deg]["scale"] and lr_spec["on_the_fly"] is (deg == "bicubic_x2")


def test_the_scale_of_an_hr_row_cannot_be_overridden(tmp_path):
    from sdconet.spec import SpecError

    with pytest.raises(SpecError, match="model.lr.scale.*HR-input row"):
        _spec(tmp_path, "sdconet_hr", sets={"model.lr.scale": 2})


def test_hr_row_trains_and_is_scored_on_the_hr_grid(tmp_path, make_demo_data):
    make_demo_data(tmp_path, seed=0)
    spec = _spec(tmp_path, "sdconet_hr", sets={"train.epochs": 1, "train.unfreeze_epoch": 0, "train.eval_every": 0})
    train_from_spec(spec)
    doc = evaluate_from_spec(spec)
    assert doc["sr"] is None and set(doc["detection"]) >= {"AP", "AP50", "AP_s"}
    dets = json.loads((Path(spec["paths"]["out"]) / "detections.json").read_text())
    test = json.loads((Path(spec["paths"]["partition"]) / "test.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in test["images"]}
    assert dets, "the untrained model still ranks its queries"
    for d in dets:  # boxes lie on the HR tile (128 px here), not on a half-size LR grid
        w, h = sizes[d["image_id"]]
        x, y, bw, bh = d["bbox"]
        assert -1e-3 <= x and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
    assert max(d["bbox"][0] + d["bbox"][2] for d in dets) > 64  # uses the whole HR extent


def test_efficiency_feeds_the_hr_tile():
    from compare.efficiency_runner import build_sdconet

    hr = build_sdconet("sdconet_hr", SHEET, num_classes=4, hr_size=128, scale=2, preset="tiny")
    lr = build_sdconet("sdconet_no_sr", SHEET, num_classes=4, hr_size=128, scale=2, preset="tiny")
    assert hr.input_side == 128 and lr.input_side == 64
    assert hr.params["total"] == lr.params["total"]  # the same network, fed a 4x larger image

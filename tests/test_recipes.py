"""The recipes of docs/recipes.md, followed step by step: a new SR model, a new ablation switch.

(The third recipe, a new dataset as COCO json + images, is followed by tests/test_workflow_coco.py.)
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from baselines.sr_models import SR_REGISTRY, build_sr_model, register_sr_model
from baselines.spec import build_serial_spec, build_sr_spec, super_resolve_from_spec, train_sr_from_spec
from benchcore.experiments import load_experiments
from benchcore.runspec import degradation_of

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")]
DEGS = {"bicubic_x2": {"scale": 2, "kernel": "torch-bicubic", "blur": 0.0, "noise": 0.0, "jpeg": None, "seed": 0}}


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_demo_data) -> Path:
    """The workflow's layout under a temporary root: results/data/demo/{tiles, partition, bicubic_x2/{lr, basicsr}}."""
    root = tmp_path_factory.mktemp("recipes")
    make_demo_data(root, seed=0, pairs=True)
    return root


@pytest.fixture
def espcn():
    """Recipe "A new SR model", step 1: register a builder (here a two-layer ESPCN) under a new name."""

    @register_sr_model("espcn", presets={"paper": {"feat": 64}, "tiny": {"feat": 8}}, scales=(2, 3, 4))
    def build_espcn(scale: int, feat: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, feat, 5, padding=2), nn.Tanh(),
                             nn.Conv2d(feat, 3 * scale ** 2, 3, padding=1), nn.PixelShuffle(scale))

    yield "espcn"
    SR_REGISTRY.pop("espcn")


def test_new_sr_model_builds_trains_and_super_resolves(espcn, data, tmp_path):
    assert build_sr_model(espcn, 3, "tiny")(torch.rand(1, 3, 10, 12)).shape == (1, 3, 30, 36)
    # step 2: its settings, a `sr_espcn` section of the baselines config (here through the overrides)
    cfg = REPO / "config" / "baselines" / "smoke.yaml"
    sets = {"sr_espcn.iters": 6, "sr_espcn.batch_size": 2, "sr_espcn.lr_patch_size": 16, "sr_espcn.log_every": 2,
            "sr_espcn.checkpoint_every": 3}
    spec = build_sr_spec(results=str(data / "results"), dataset="demo",
                         degradation=degradation_of("bicubic_x2", DEGS), sr_model=espcn, seed=0, config_file=cfg,
                         sets=sets)
    assert spec["settings"]["sr"]["iters"] == 6 and spec["settings"]["sr"]["scale"] == 2
    train_sr_from_spec(spec)
    doc = super_resolve_from_spec(spec)
    images = Path(spec["paths"]["images"])
    assert {Image.open(p).size for p in images.glob("*.png")} == {(128, 128)}
    assert doc["method"] == espcn and doc["psnr"] > 0
    # step 3: a sheet row whose sr_model is the new name makes it a serial pipeline
    row = {**load_experiments(REPO / "config" / "experiments.tsv").set_index("id").loc["frcnn_edsr"].to_dict(),
           "id": "frcnn_espcn", "sr_model": espcn, "display": "ESPCN + Faster R-CNN"}
    serial = build_serial_spec(results=str(data / "results"), dataset="demo",
                               degradation=degradation_of("bicubic_x2", DEGS), row=row, seed=0, config_file=cfg,
                               sets=sets)
    assert serial["paths"]["images"] == spec["paths"]["images"] and serial["settings"]["sr"]["sr"]["iters"] == 6


def test_unknown_or_unsupported_sr_models_are_named(espcn):
    with pytest.raises(ValueError, match="supports scale 2, 3, 4, got 8"):
        build_sr_model(espcn, 8, "tiny")
    with pytest.raises(ValueError, match="reserved"):
        register_sr_model("bicubic", presets={"paper": {}, "tiny": {}}, scales=(2,))
    deg = degradation_of("x3", {"x3": {**DEGS["bicubic_x2"], "scale": 3}})
    with pytest.raises(ValueError, match="'rrdb' supports scale"):
        build_sr_spec(results="r", dataset="d", degradation=deg, sr_model="rrdb", seed=0,
                      config_file=REPO / "config" / "baselines" / "smoke.yaml")


def _sdconet_row(**cells):
    base = load_experiments(REPO / "config" / "experiments.tsv").set_index("id").loc["sdconet"].to_dict()
    return {**base, "id": "sdconet_switch", "kind": "ablation", **cells}


def test_new_ablation_switch_is_a_row_of_the_sheet(data):
    """Recipe "A new ablation switch": a model/train field set by a row's `set` cell (no code change), resolved
    after the workflow's overrides; a typo in the cell names the row and the nearest key."""
    from sdconet.spec import build_spec

    kw = dict(results=str(data / "results"), dataset="demo", degradation=degradation_of("bicubic_x2", DEGS),
              seed=0, config_file=REPO / "config" / "sdconet" / "tiny.yaml", num_classes=4,
              sets={"model.topk_score_mode": "official"})
    row = _sdconet_row(set="model.topk_score_mode=fixed; model.sr_loss_weight=1.0")
    spec = build_spec(row=row, **kw)
    assert spec["settings"]["model"]["topk_score_mode"] == "fixed"  # the row beats the workflow's override
    assert spec["settings"]["model"]["sr_loss_weight"] == 1.0
    assert build_spec(row=_sdconet_row(), **kw)["settings"]["model"]["topk_score_mode"] == "official"
    with pytest.raises(ValueError, match=r"sr_los_weight.*did you mean.*sr_loss_weight"):
        build_spec(row=_sdconet_row(set="model.sr_los_weight=1.0"), **kw)
    with pytest.raises(ValueError, match=r"'model.lr.scale' cannot be set here.*degradation"):
        build_spec(row=_sdconet_row(set="model.lr.scale=4"), **kw)


def test_cli_and_workflow_builders_give_the_same_run(data, tmp_path, capsys):
    """`python -m sdconet train --config ... --data ...` and the workflow resolve the same settings."""
    from sdconet.cli import build_parser, spec_from_args
    from sdconet.spec import build_spec

    data_dir = data / "results" / "data" / "demo"
    out = data / "results" / "demo" / "bicubic_x2" / "sdconet" / "seed0"
    a = build_parser().parse_args(["train", "--config", str(REPO / "config" / "sdconet" / "tiny.yaml"),
                                   "--data", str(data_dir), "--out", str(out), "--set", "train.epochs=2"])
    cli = spec_from_args(a)
    row = load_experiments(REPO / "config" / "experiments.tsv").set_index("id", drop=False).loc["sdconet"].to_dict()
    names = [c["name"] for c in json.loads((data_dir / "partition" / "train.json").read_text())["categories"]]
    dag = build_spec(results=str(data / "results"), dataset="demo", degradation=degradation_of("bicubic_x2", DEGS),
                     row=row, seed=0, config_file=REPO / "config" / "sdconet" / "tiny.yaml", num_classes=len(names),
                     sets={"train.epochs": 2}, class_names=names)
    assert cli["settings"] == dag["settings"] and cli["degradation"] == dag["degradation"]
    from benchcore.runspec import spec_hash

    assert spec_hash(cli) == spec_hash(dag)


def test_a_serial_rows_set_cell_cannot_change_a_shared_sr_stage(data):
    """EDSR + YOLO and EDSR + Faster R-CNN read the same EDSR stage: a row cannot change it for itself alone."""
    cfg = REPO / "config" / "baselines" / "smoke.yaml"
    row = {**load_experiments(REPO / "config" / "experiments.tsv").set_index("id").loc["frcnn_edsr"].to_dict(),
           "id": "frcnn_edsr", "set": "frcnn.epochs=2; sr_edsr.iters=5"}
    with pytest.raises(ValueError, match=r"'sr_edsr.iters': an SR stage is shared"):
        build_serial_spec(results=str(data / "results"), dataset="demo", degradation=degradation_of("bicubic_x2", DEGS),
                          row=row, seed=0, config_file=cfg)
    row["set"] = "frcnn.epochs=2"
    spec = build_serial_spec(results=str(data / "results"), dataset="demo",
                             degradation=degradation_of("bicubic_x2", DEGS), row=row, seed=0, config_file=cfg)
    assert spec["settings"]["detector"]["epochs"] == 2
    stage = build_sr_spec(results=str(data / "results"), dataset="demo", degradation=degradation_of("bicubic_x2", DEGS),
                          sr_model="edsr", seed=0, config_file=cfg)
    assert spec["settings"]["sr"] == stage["settings"]  # the record is the shared stage itself

"""Loaders of the published pretrained files, each on a state dict built locally in its published layout (nothing is
downloaded): Swin-T (timm / Microsoft / mmdetection layouts, through the run spec's ``imagenet`` keyword), the
torchvision ImageNet ResNet-50 and COCO Faster R-CNN files, and ultralytics' classification / detection checkpoints.
"""
from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import benchcore  # noqa: F401  (offline defaults before ultralytics is imported)
from swin_layouts import mmdet_from_official, official_from_timm

REPO = Path(__file__).resolve().parents[1]


def _randomise(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Distinct values for every float tensor, so a load is seen (fresh inits of two models could coincide)."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.02 if v.is_floating_point() else v.clone())
            for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------ Swin-T
@pytest.fixture(scope="module")
def swin_t_timm() -> dict[str, torch.Tensor]:
    """A full-size swin_tiny_patch4_window7_224 state dict in timm's layout (timm's own architecture, random)."""
    import timm

    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    return _randomise(model.state_dict(), seed=0)


def test_paper_swin_t_loads_all_three_published_layouts(swin_t_timm, tmp_path):
    from safetensors.torch import save_file

    from sdconet.models.config import preset
    from sdconet.models.encoder import SwinEncoder
    from sdconet.models.swin_weights import load_swin_weights, to_encoder_keys

    official = official_from_timm(swin_t_timm)
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    files = {"timm.safetensors": None, "swin_tiny_patch4_window7_224.pth": {"model": official},
             "mmdet_detector.pth": {"state_dict": mmdet_from_official(official, detector=True), "meta": {}}}
    save_file({k: v.contiguous() for k, v in swin_t_timm.items()}, str(tmp_path / "timm.safetensors"))
    for name, blob in files.items():
        if blob is not None:
            torch.save(blob, tmp_path / name)
    want = to_encoder_keys(swin_t_timm)
    cfg = preset("paper", scale=2).swin
    for name in files:
        enc = SwinEncoder(cfg)
        report = load_swin_weights(enc, str(tmp_path / name))
        assert all(re.match(r"norm\d+\.", k) for k in report["missing"]), name  # the output norms only
        own = enc.state_dict()
        for k, v in want.items():
            if k in own:
                assert torch.equal(own[k], v), (name, k)
        assert len([k for k in want if k in own]) > 150


def test_swin_keywords_resolve_through_the_run_spec(tmp_path):
    """``pretrained: imagenet`` in a run config becomes the staged Microsoft file, which the encoder loads."""
    import yaml

    from benchcore.experiments import load_experiments
    from sdconet.models.build import build_model
    from sdconet.models.config import from_dict
    from sdconet.models.encoder import SwinEncoder
    from sdconet.models.swin_weights import load_swin_weights
    from sdconet.spec import build_spec

    cfg = yaml.safe_load((REPO / "config/sdconet/tiny.yaml").read_text())
    cfg["model"]["swin"] = {"pretrained": "imagenet"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    row = load_experiments(REPO / "config/experiments.tsv").set_index("id", drop=False).loc["sdconet"].to_dict()
    deg = {"name": "bicubic_x2", "scale": 2, "kernel": "torch-bicubic", "blur": 0.0, "noise": 0.0, "jpeg": None,
           "seed": 0}
    spec = build_spec(results=str(tmp_path), dataset="d", degradation=deg, row=row, seed=0,
                      config_file=tmp_path / "run.yaml", num_classes=3)
    staged = tmp_path / "weights" / "swin_tiny_patch4_window7_224.pth"
    assert spec["settings"]["model"]["swin"]["pretrained"] == str(staged)
    model_cfg = from_dict(spec["settings"]["model"])
    torch.manual_seed(1)
    src = SwinEncoder(model_cfg.swin)
    timm_sd = _randomise({k: v for k, v in src.state_dict().items() if not k.startswith("norm")}, seed=2)
    staged.parent.mkdir(parents=True)
    torch.save({"model": official_from_timm(timm_sd)}, staged)  # the published (Microsoft) layout
    model = build_model(model_cfg)
    enc_sd = {k.split("backbone.", 1)[1]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert enc_sd and all(torch.equal(enc_sd[k], v) for k, v in timm_sd.items() if k in enc_sd)
    with pytest.raises(RuntimeError, match="run spec resolves"):
        load_swin_weights(src, "imagenet")
    assert load_swin_weights(src, "scratch") == {"missing": [], "unexpected": []}
    staged.unlink()
    with pytest.raises(FileNotFoundError, match="stage_weights"):
        build_model(model_cfg)


# ------------------------------------------------------------------------------------------------ torchvision
@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> Path:
    """``resnet50-0676ba61.pth`` as torchvision publishes it: a plain ResNet-50 state dict with ``fc``."""
    from torchvision.models import resnet50

    path = tmp_path_factory.mktemp("tv") / "resnet50-0676ba61.pth"
    torch.save(_randomise(resnet50(weights=None).state_dict(), seed=3), path)
    return path


def test_frcnn_imagenet_backbone_follows_the_reference_recipe(resnet50_file, tmp_path, one_thread):
    from torchvision.ops.misc import FrozenBatchNorm2d

    from baselines.frcnn import build_frcnn, frcnn_architecture

    src = torch.load(resnet50_file, weights_only=True)
    model = build_frcnn(3, 128, "paper", weights=resnet50_file, init="imagenet")
    body = model.backbone.body
    own = body.state_dict()
    for k, v in src.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            assert k not in own
        else:
            assert torch.equal(own[k], v), k
    assert model.sdconet_init["dropped"] == ["fc.bias", "fc.weight"]
    assert isinstance(body.bn1, FrozenBatchNorm2d) and not any(isinstance(m, torch.nn.BatchNorm2d)
                                                                for m in model.modules())
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "layer1"} and trainable == {"layer2", "layer3", "layer4"}  # trainable_layers=3
    model.train()
    img = torch.rand(3, 128, 128)
    losses = model([img], [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])}])
    sum(losses.values()).backward()
    # a trained model rebuilds from its config alone (load_frcnn): same layout, strict load
    again = frcnn_architecture(3, 128, "paper", "imagenet")
    again.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="not a torchvision ResNet-50"):
        from torchvision.models import resnet18

        torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
        build_frcnn(3, 128, "paper", weights=tmp_path / "r18.pth", init="imagenet")
    with pytest.raises(ValueError, match="needs its file"):
        build_frcnn(3, 128, "paper", init="imagenet")
    with pytest.raises(ValueError, match="no published imagenet"):
        build_frcnn(3, 128, "tiny", weights=resnet50_file, init="imagenet")


def test_frcnn_coco_detector_file_loads_all_but_the_predictor(tmp_path, one_thread):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from baselines.frcnn import build_frcnn, frcnn_architecture

    # torchvision's COCO R50-FPN layout (91 classes, frozen BN): built with the same layout, random values
    coco = frcnn_architecture(90, 128, "paper", "coco")
    path = tmp_path / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    sd = _randomise(coco.state_dict(), seed=4)
    torch.save(sd, path)
    assert set(sd) == set(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()) - {
        k for k in fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
        if k.endswith("num_batches_tracked")}
    model = build_frcnn(3, 128, "paper", weights=path, init="coco")
    own = model.state_dict()
    skipped = set(model.sdconet_init["skipped"])
    assert skipped == {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
                       "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias"}
    assert all(torch.equal(own[k], v) for k, v in sd.items() if k not in skipped)


# ------------------------------------------------------------------------------------------------ ultralytics
def _ultralytics_ckpt(model: torch.nn.Module, path: Path, task: str) -> Path:
    """Save ``model`` the way ultralytics' trainer does (a pickled half-precision model under ``model``)."""
    torch.save({"date": None, "version": "8.4", "epoch": -1, "best_fitness": None, "model": copy.deepcopy(model).half(),
                "ema": None, "updates": None, "optimizer": None, "train_args": {"task": task}, "train_metrics": {},
                "train_results": {}}, path)
    return path


@pytest.fixture(scope="module")
def yolo_files(tmp_path_factory) -> dict[str, Path]:
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel

    d = tmp_path_factory.mktemp("ultra")
    torch.manual_seed(5)
    cls = ClassificationModel("yolov8n-cls.yaml", nc=1000, verbose=False)
    cls.load_state_dict(_randomise(cls.state_dict(), seed=6))
    det = DetectionModel("yolov8n.yaml", nc=80, verbose=False)
    return {"cls": _ultralytics_ckpt(cls, d / "yolov8n-cls.pt", "classify"),
            "det": _ultralytics_ckpt(det, d / "yolov8n.pt", "detect")}


def test_yolo_imagenet_init_takes_the_cls_backbone_layers(yolo_files):
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    from baselines.yolo import check_yolo_init

    det = DetectionModel("yolov8n.yaml", nc=10, verbose=False)
    report = check_yolo_init(det, yolo_files["cls"], "imagenet")
    assert report["layers"] == list(range(9)) and report["task"] == "classify"
    src, _ = load_checkpoint(str(yolo_files["cls"]))
    before = {k: v.clone() for k, v in det.state_dict().items()}
    det.load(src, verbose=False)  # what ultralytics' trainer does with pretrained=<file>
    src_sd, own = src.float().state_dict(), det.state_dict()
    for k, v in own.items():
        layer = int(k.split(".")[1])
        if layer < 9 and k in src_sd:
            assert torch.equal(v, src_sd[k]), k
        elif v.is_floating_point() and layer >= 9 and not k.endswith(("running_mean", "running_var")):
            assert torch.equal(v, before[k]), k  # neck and head untouched
    with pytest.raises(ValueError, match="same scale"):
        check_yolo_init(DetectionModel("yolov8s.yaml", nc=10, verbose=False), yolo_files["cls"], "imagenet")
    with pytest.raises(ValueError, match="'detect' checkpoint, but init 'imagenet'"):
        check_yolo_init(det, yolo_files["det"], "imagenet")
    coco = check_yolo_init(det, yolo_files["det"], "coco")
    assert coco["task"] == "detect" and coco["transferred"] > report["transferred"]
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        check_yolo_init(det, yolo_files["cls"].with_name("absent.pt"), "imagenet")


def test_train_yolo_starts_from_the_imagenet_backbone(yolo_files, tmp_path, monkeypatch):
    """End to end through ultralytics' trainer: the model it trains starts with the cls checkpoint's layers 0-8."""
    import numpy as np
    import ultralytics
    from PIL import Image
    from ultralytics.nn.tasks import load_checkpoint

    from baselines.yolo import train_yolo

    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((np.random.default_rng(i).random((64, 64, 3)) * 255).astype("uint8")).save(
                root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [thing]\n")
    seen: dict[str, torch.Tensor] = {}

    class Spy(ultralytics.YOLO):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback("on_pretrain_routine_end",
                              lambda tr: seen.update({k: v.detach().clone() for k, v in tr.model.state_dict().items()}))

    monkeypatch.setattr(ultralytics, "YOLO", Spy)
    train_yolo(root / "data.yaml", tmp_path / "out", model="yolov8n.yaml", epochs=1, imgsz=64, batch=2,
               device="cpu", init="imagenet", weights=yolo_files["cls"], val=False)
    src = load_checkpoint(str(yolo_files["cls"]))[0].float().state_dict()
    layers = [k for k in src if int(k.split(".")[1]) < 9 and k.endswith(".weight")]
    assert layers and all(torch.equal(seen[k], src[k]) for k in layers)
    with pytest.raises(ValueError, match="init 'scratch' but a weights file"):
        train_yolo(root / "data.yaml", tmp_path / "out2", weights=yolo_files["cls"])


def test_detector_configs_validate_init():
    from baselines.config import ConfigError, FrcnnConfig, YoloConfig

    assert FrcnnConfig.from_dict({"init": "imagenet"}).init == "imagenet"
    with pytest.raises(ConfigError, match="init must be one of"):
        YoloConfig.from_dict({"init": "imagnet"})
    with pytest.raises(ConfigError, match="init is 'scratch'"):
        FrcnnConfig.from_dict({"weights": "a.pth"})
    with pytest.raises(ConfigError, match="'file' needs weights"):
        YoloConfig.from_dict({"init": "file"})
    assert replace(YoloConfig.from_dict({"init": "file", "weights": "a.pt"})).to_kwargs()["init"] == "file"

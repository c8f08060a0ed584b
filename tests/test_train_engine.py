"""Training engine, data and evaluation tests with a toy model that implements the SDCoNet model contract.

``ToyModel`` and ``make_tiles`` are imported by the other engine tests (test_routing, test_checkpoint_resume,
test_ddp_cpu).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from sdconet.data import TileDataset, build_loader, collate, set_loader_epoch
from sdconet.engine import NonFiniteLossError, train
from sdconet.evaluate import evaluate, write_run_metrics
from benchcore.metrics.results import read_metrics
from sdconet.train_config import TrainConfig, TrainConfigError, WarmupMultiStep, build_optimizer


class ToyModel(nn.Module):
    """Tiny model with the SDCoNet contract: shared conv "backbone", one-box det head, x2 SR head.

    Input: normalised HR (LR made on the fly by bicubic x0.5, like the official model) or, with ``offline_lr``,
    the offline LR tile (the SR target is then ``target["hr"]``). Det head: one box per image (sigmoid cxcywh relative to the HR size), L1 to the
    first GT box + cross-entropy to its label. SR head: conv + PixelShuffle(2), L1 to the normalised HR.
    """

    def __init__(self, num_classes: int = 2, width: int = 8, dropout: float = 0.1, nan_epoch: int = -1,
                 offline_lr: bool = False) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.neck = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)
        self.det_head = nn.Linear(width, 4 + num_classes)
        self.sr_head = nn.Sequential(nn.Conv2d(width, 12, 3, padding=1), nn.PixelShuffle(2))
        self.num_classes, self.nan_epoch, self.offline_lr, self.sr_enabled = num_classes, nan_epoch, offline_lr, True

    # --- contract helpers -------------------------------------------------------------------------
    def param_groups_spec(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(self.backbone.parameters()), "sr": list(self.sr_head.parameters()),
                "other": list(self.neck.parameters()) + list(self.det_head.parameters())}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    def set_sr_trainable(self, flag: bool) -> None:
        for p in self.sr_head.parameters():
            p.requires_grad_(flag)
        self.sr_enabled = flag

    # --- forward ------------------------------------------------------------------------------------
    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None, epoch: int = 0,
                return_sr: bool = False) -> Any:
        offline = self.offline_lr
        lr = images if offline else F.interpolate(images, scale_factor=0.5, mode="bicubic", align_corners=False)
        hr_h, hr_w = lr.shape[-2] * 2, lr.shape[-1] * 2
        feats = self.backbone(lr)
        pooled = self.drop(torch.relu(self.neck(feats.mean((2, 3)))))
        out = self.det_head(pooled)
        cxcywh = torch.sigmoid(out[:, :4])
        logits = out[:, 4:]
        if self.training:
            assert targets is not None
            losses: dict[str, Tensor] = {}
            have = [i for i, t in enumerate(targets) if len(t["boxes"])]
            if have:
                gt = torch.stack([targets[i]["boxes"][0] for i in have])
                scale = torch.tensor([hr_w, hr_h, hr_w, hr_h], dtype=gt.dtype, device=gt.device)
                g = gt / scale
                gt_c = torch.stack([(g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2, g[:, 2] - g[:, 0],
                                    g[:, 3] - g[:, 1]], 1)
                labels = torch.stack([targets[i]["labels"][0] for i in have])
                losses["loss_bbox"] = 5.0 * F.l1_loss(cxcywh[have], gt_c)
                losses["loss_cls"] = F.cross_entropy(logits[have], labels)
            else:
                losses["loss_bbox"] = losses["loss_cls"] = 0.0 * out.sum()
            if epoch == self.nan_epoch:
                losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
            if self.sr_enabled:
                hr = torch.stack([t["hr"] for t in targets]) if offline else images
                losses["loss_sr"] = F.l1_loss(self.sr_head(feats), hr)
            return losses
        c = cxcywh
        boxes = torch.stack([(c[:, 0] - c[:, 2] / 2) * hr_w, (c[:, 1] - c[:, 3] / 2) * hr_h,
                             (c[:, 0] + c[:, 2] / 2) * hr_w, (c[:, 1] + c[:, 3] / 2) * hr_h], 1)
        prob = logits.softmax(-1)
        dets = [{"boxes": boxes[i:i + 1], "scores": prob[i].max().reshape(1), "labels": prob[i].argmax().reshape(1)}
                for i in range(len(images))]
        return (dets, self.sr_head(feats)) if return_sr else dets


def make_tiles(root: Path, n: int = 8, size: int = 32, lr: bool = False, seed: int = 0) -> tuple[Path, Path | None]:
    """Write ``n`` random tiles + a partition json (one empty tile); returns (json path, LR dir or None)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lr_dir = root / "lr" if lr else None
    if lr_dir:
        lr_dir.mkdir()
    images, anns = [], []
    for i in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        name = f"t{i}__0_0.png"
        Image.fromarray(arr).save(root / "images" / name)
        if lr_dir:
            Image.fromarray(arr[::2, ::2].copy()).save(lr_dir / name)
        images.append({"id": i + 1, "file_name": f"images/{name}", "width": size, "height": size})
        if i == n - 1:
            continue  # one empty tile
        x, y = float(rng.integers(0, size // 2)), float(rng.integers(0, size // 2))
        w, h = float(rng.integers(4, size // 2)), float(rng.integers(4, size // 2))
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [x, y, w, h],
                     "area": w * h, "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "plane"}, {"id": 2, "name": "ship"}]}
    path = root / "train.json"
    path.write_text(json.dumps(coco))
    return path, lr_dir


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**kw: Any) -> TrainConfig:
    base = dict(epochs=2, batch_size=2, lr=5e-3, clip_grad=None, milestones=(), routing="none",
                progress=False, keep_last=0, device="cpu")
    base.update(kw)
    return TrainConfig.from_dict(base)


def read_log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------
def test_config_from_dict_rejects_unknown_and_invalid() -> None:
    with pytest.raises(TrainConfigError, match="'warmup_iter'.*did you mean 'warmup_iters'"):
        TrainConfig.from_dict({"epochs": 1, "batch_size": 2, "warmup_iter": 1})
    with pytest.raises(TrainConfigError, match="routing"):
        TrainConfig.from_dict({"epochs": 1, "batch_size": 2, "routing": "pcgrad"})
    with pytest.raises(TrainConfigError, match="batch_size"):
        TrainConfig.from_dict({"epochs": 1})
    cfg = TrainConfig.from_dict({"epochs": 52, "batch_size": 2, "milestones": [27]})
    assert cfg.milestones == (27,) and cfg.unfreeze_epoch == 16 and cfg.clip_grad == 0.1
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_dataset_reads_normalises_and_flips(tmp_path: Path) -> None:
    js, lr_dir = make_tiles(tmp_path, n=3, size=32, lr=True)
    plain = TileDataset(js, tmp_path, train=False)
    img, tgt = plain[0]
    raw = np.asarray(Image.open(tmp_path / "images" / "t0__0_0.png").convert("RGB")).astype(np.float32)
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert torch.allclose(img[0], torch.from_numpy((raw[..., 0] - 123.675) / 58.395), atol=1e-5)
    ann = json.loads(js.read_text())["annotations"][0]
    x, y, w, h = ann["bbox"]
    assert torch.allclose(tgt["boxes"], torch.tensor([[x, y, x + w, y + h]]))
    assert tgt["labels"].tolist() == [ann["category_id"] - 1] and tgt["image_id"] == 1
    assert plain[2][1]["boxes"].shape == (0, 4)  # empty tile
    flipped = TileDataset(js, tmp_path, train=True, hflip_p=1.0)
    fimg, ftgt = flipped[0]
    assert ftgt["flipped"] and torch.equal(fimg, img.flip(-1))
    assert torch.allclose(ftgt["boxes"], torch.tensor([[32 - (x + w), y, 32 - x, y + h]]))
    assert not TileDataset(js, tmp_path, train=True, hflip_p=0.0)[0][1]["flipped"]
    lr_ds = TileDataset(js, tmp_path, train=True, hflip_p=1.0, lr_dir=lr_dir, scale=2)
    limg, ltgt = lr_ds[0]
    assert limg.shape == (3, 16, 16) and torch.equal(ltgt["hr"], fimg)
    assert torch.allclose(ltgt["boxes"], ftgt["boxes"])  # boxes stay on the HR grid


def test_flips_depend_on_seed_and_epoch_only(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path, n=8)
    ds = TileDataset(js, tmp_path, train=True)
    loader = build_loader(ds, 2, shuffle=True, seed=3, workers=0)
    def run(epoch: int) -> list[tuple[int, bool]]:
        set_loader_epoch(loader, epoch, seed=3)
        return [(t["image_id"], t["flipped"]) for _, ts in loader for t in ts]
    a, b, a2 = run(0), run(1), run(0)
    assert a == a2 and a != b and len(a) == 8
    workers = build_loader(ds, 2, shuffle=True, seed=3, workers=2)
    set_loader_epoch(workers, 1, seed=3)
    assert [(t["image_id"], t["flipped"]) for _, ts in workers for t in ts] == b  # same with worker processes
    assert 0 < sum(f for _, f in a) < 8
    with pytest.raises(ValueError, match="different sizes"):
        collate([(torch.zeros(3, 4, 4), {"image_id": 1}), (torch.zeros(3, 8, 8), {"image_id": 2})])


def test_training_reduces_loss_and_logs_every_epoch(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d")
    torch.manual_seed(0)
    model = ToyModel(dropout=0.0)
    cfg = small_cfg(epochs=5, lr=3e-2, warmup_iters=2, clip_grad=1.0)
    out = train(model, TileDataset(js, tmp_path / "d", train=True), None, cfg, tmp_path / "run")
    logs = read_log(tmp_path / "run")
    assert [r["epoch"] for r in logs] == list(range(5)) and len(out["history"]) == 5
    assert logs[-1]["losses"]["loss_bbox"] < 0.8 * logs[0]["losses"]["loss_bbox"]
    assert logs[-1]["losses"]["loss_sr"] < logs[0]["losses"]["loss_sr"]
    assert logs[-1]["loss"] < 0.9 * logs[0]["loss"]
    first = logs[0]
    assert set(first["losses"]) == {"loss_bbox", "loss_cls", "loss_sr"} and first["phase"] == 2
    assert first["lr"]["backbone"] == pytest.approx(0.1 * first["lr"]["other"])
    assert first["images"] == 8 and first["images_per_s"] > 0 and first["iters"] == 4
    assert out["global_step"] == 20 and (tmp_path / "run" / "last.pt").is_file()


def test_lr_schedule_and_param_groups() -> None:
    fn = WarmupMultiStep(steps_per_epoch=4, milestones=(2, 3), gamma=0.1, warmup_iters=4)
    assert fn(0) == pytest.approx(0.001) and fn(2) == pytest.approx(0.001 + 0.999 * 0.5)
    assert fn(4) == 1.0 and fn(8) == pytest.approx(0.1) and fn(12) == pytest.approx(0.01)
    model = ToyModel()
    opt = build_optimizer(model, small_cfg(lr=1e-4, backbone_lr_mult=0.1))
    by = {g["name"]: g for g in opt.param_groups}
    assert by["backbone"]["lr"] == pytest.approx(1e-5) and by["sr"]["lr"] == by["other"]["lr"] == 1e-4
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)
    model.param_groups_spec = lambda: {"backbone": list(model.backbone.parameters())}  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="in no optimiser group"):
        build_optimizer(model, small_cfg())


def test_non_finite_loss_stops_with_term_name_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d")
    model = ToyModel(nan_epoch=1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, iteration 0: loss_bbox=nan") as exc:
        train(model, TileDataset(js, tmp_path / "d", train=True), None, small_cfg(epochs=3), tmp_path / "run")
    assert set(exc.value.terms) == {"loss_bbox"} and "last.pt" in str(exc.value)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["epoch"] == 0 and not (tmp_path / "run" / "epoch_001.pt").exists()
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["epoch"] for r in read_log(tmp_path / "run")] == [0]


def test_evaluate_toy_model_gives_all_metric_keys_and_writes_metrics(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d", n=5)
    ds = TileDataset(js, tmp_path / "d", train=False, scale=2)
    res = evaluate(ToyModel(), ds, ds.coco, "cpu", batch_size=2, sr=True)
    det = res["detection"]
    for key in ("AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l", "AR100", "per_class"):
        assert key in det
    assert len(res["detections"]) == 5 and {d["category_id"] for d in res["detections"]} <= {1, 2}
    assert res["sr"]["n"] == 5 and math.isfinite(res["sr"]["psnr"]) and res["sr"]["crop_border"] == 2
    doc = write_run_metrics(tmp_path / "res" / "metrics.json", res, "toy", "demo", "bicubic_x2", 0,
                            {"k": 1}, "cpu")
    assert read_metrics(tmp_path / "res" / "metrics.json")["detection"]["AP"] == doc["detection"]["AP"]
    assert len(json.loads((tmp_path / "res" / "detections.json").read_text())) == 5


class PerfectModel(nn.Module):
    """Returns the GT boxes of the images in dataset order (and the input itself as the 'SR' output)."""

    def __init__(self, ds: TileDataset) -> None:
        super().__init__()
        self.queue = [ds.targets_of(i) for i in range(len(ds))]

    def forward(self, images: Tensor, targets: Any = None, epoch: int = 0, return_sr: bool = False) -> Any:
        dets = []
        for _ in range(len(images)):
            boxes, labels = self.queue.pop(0)
            dets.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": labels})
        return (dets, images.clone()) if return_sr else dets


def test_perfect_predictions_give_ap_one_and_identical_sr_infinite_psnr(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d", n=6)
    ds = TileDataset(js, tmp_path / "d", train=False)
    res = evaluate(PerfectModel(ds), ds, ds.coco, "cpu", batch_size=4, sr=True, crop_border=0,
                   test_y_channel=False)
    assert res["detection"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert res["detection"]["AP50"] == pytest.approx(1.0, abs=1e-6)
    assert res["sr"]["psnr"] == math.inf and res["sr"]["ssim"] == pytest.approx(1.0)


def test_training_with_validation_logs_val_metrics(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d", n=4)
    cfg = dataclasses.replace(small_cfg(epochs=2, eval_every=2), eval_sr=True)
    train(ToyModel(), TileDataset(js, tmp_path / "d", train=True), TileDataset(js, tmp_path / "d", train=False, scale=2),
          cfg, tmp_path / "run")
    logs = read_log(tmp_path / "run")
    assert "val" not in logs[0] and "AP" in logs[1]["val"]["detection"] and "psnr" in logs[1]["val"]["sr"]


def test_offline_lr_training_and_sr_evaluation(tmp_path: Path) -> None:
    js, lr_dir = make_tiles(tmp_path / "d", n=4, lr=True)
    model = ToyModel(offline_lr=True)
    train(model, TileDataset(js, tmp_path / "d", train=True, lr_dir=lr_dir, scale=2), None, small_cfg(epochs=1),
          tmp_path / "run")
    assert "loss_sr" in read_log(tmp_path / "run")[0]["losses"]
    val = TileDataset(js, tmp_path / "d", train=False, lr_dir=lr_dir, scale=2)
    res = evaluate(model, val, val.coco, "cpu", sr=True, crop_border=0, test_y_channel=False)
    assert res["sr"]["n"] == 4 and 0 < res["sr"]["psnr"] < 60 and not res["sr"]["test_y_channel"]
    assert res["detection"]["num_images"] == 4 and len(res["detections"]) == 4


def test_adamw_is_fused_by_default_and_can_be_turned_off():
    from sdconet.train_config import TrainConfig, build_optimizer

    model = ToyModel()
    assert build_optimizer(model, TrainConfig(epochs=1, batch_size=1)).defaults["fused"] is True
    assert not build_optimizer(model, TrainConfig(epochs=1, batch_size=1, fused_adamw=False)).defaults["fused"]


def test_amp_dtype_selects_autocast_and_loss_scaling() -> None:
    """train.amp_dtype: float16 (default, with GradScaler) or bfloat16 (no loss scaling); AMP stays CUDA-only."""
    from sdconet.engine import autocast_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert TrainConfig(epochs=1, batch_size=1).amp_dtype == "float16"
    assert autocast_dtype(TrainConfig(epochs=1, batch_size=1), cuda) is torch.float16
    assert autocast_dtype(TrainConfig(epochs=1, batch_size=1, amp_dtype="bfloat16"), cuda) is torch.bfloat16
    assert autocast_dtype(TrainConfig(epochs=1, batch_size=1, amp_dtype="bfloat16"), cpu) is None
    assert autocast_dtype(TrainConfig(epochs=1, batch_size=1, amp=False, amp_dtype="bfloat16"), cuda) is None
    with pytest.raises(TrainConfigError, match="amp_dtype must be one of"):
        TrainConfig(epochs=1, batch_size=1, amp_dtype="fp8")
    with pytest.raises(TrainConfigError, match="amp_dtype"):
        TrainConfig.from_dict({"epochs": 1, "batch_size": 1, "amp_dtype": "half"})


def test_train_deterministic_selects_the_kernels_and_restores_them(tmp_path: Path, monkeypatch) -> None:
    """train.deterministic (default on): PyTorch's deterministic algorithms during the run, off when false; cuDNN
    autotuning off either way; the caller's state is restored; a run may resume under the other value."""
    from sdconet import engine

    assert TrainConfig(epochs=1, batch_size=1).deterministic is True
    assert TrainConfig.from_dict({"epochs": 1, "batch_size": 1, "deterministic": False}).deterministic is False
    seen = []
    monkeypatch.setattr(engine, "_run", lambda *a, **k: seen.append(
        (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)) or {})
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    torch.backends.cudnn.benchmark = True
    try:
        for flag in (True, False):
            train(ToyModel(), [], None, TrainConfig(epochs=1, batch_size=1, deterministic=flag), tmp_path)
            assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == (before[0], True)
    finally:
        torch.backends.cudnn.benchmark = before[1]
    assert seen == [(True, False), (False, False)]
    cfg = TrainConfig(epochs=3, batch_size=1)
    torch.save({"config": cfg.to_dict(), "epoch": 0}, tmp_path / "last.pt")
    assert not engine._set_aside_if_stale(tmp_path / "last.pt", dataclasses.replace(cfg, deterministic=False),
                                          tmp_path, 0)
    assert engine._set_aside_if_stale(tmp_path / "last.pt", dataclasses.replace(cfg, lr=2e-4), tmp_path, 0)

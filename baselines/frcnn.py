"""torchvision Faster R-CNN detector on tiles: model presets, COCO tile dataset, training loop, prediction.

Presets (``build_frcnn``):

* ``paper``: torchvision's ``fasterrcnn_resnet50_fpn`` (R50-FPN, the detector of the serial baselines) with
  ``num_classes = C + 1`` and ``min_size = max_size = tile``, so the internal transform never resizes a square
  tile (its default 800/1333 would upsample every tile).
* ``tiny``: the same FasterRCNN head on a ResNet-18 trunk with a 64-channel FPN (same 5 levels, anchors and
  RoI pooling as ``paper``, ~1/10 of the compute); for CPU tests only.

Initialisation (``init``, ``docs/weights.md``); nothing is ever downloaded:

* ``scratch``: random; torchvision then makes all 5 backbone stages trainable with ordinary BatchNorm.
* ``imagenet`` (``paper``): torchvision's reference recipe, ``fasterrcnn_resnet50_fpn(weights_backbone=
  ResNet50_Weights.IMAGENET1K_V1)``, rebuilt from a local ``resnet50-0676ba61.pth``: the ResNet-50 trunk loads the
  ImageNet state dict (its ``fc`` is dropped), BatchNorm becomes ``FrozenBatchNorm2d`` and the stem + ``layer1``
  stay frozen (``trainable_backbone_layers=3``); FPN, RPN and RoI heads start random.
* ``coco`` (``paper``): the same frozen-BN layout with torchvision's COCO R50-FPN state dict
  (``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``); the class-specific predictor is skipped when its shape differs.
* ``file``: a local file (our checkpoint, ...): every tensor whose name and shape match is loaded.

Boxes: the tile COCO json is on the HR grid; when the images are LR/SR copies of another size, the
dataset scales boxes by (image size / json size) and :func:`predict_frcnn` maps predictions back to HR.
Training: SGD (momentum 0.9, weight decay 1e-4), linear warm-up, x0.1 at 2/3 and 8/9 of the epochs,
AMP on CUDA only, an atomic checkpoint every epoch, exact resume at epoch boundaries (per-epoch
shuffles and flips are pure functions of ``(seed, epoch, index)``), ``log.jsonl``, and a clear error on a
non-finite loss.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from baselines._runtime import (JsonlLog, PendingLosses, load_checkpoint, load_resume_checkpoint, resolve_device,
                                rng_state, sample_rng, save_checkpoint, seed_everything, set_rng_state)
from baselines.mapping import TileIndex, boxes_to_coco, label_maps, scale_factors
from baselines.sr_train import read_rgb, to_tensor
from benchcore.atomic import atomic_file
from benchcore.provenance import git_sha

_RESUME_KEYS = ("preset", "num_classes", "tile_size", "batch_size", "lr", "seed", "optimizer", "init")
FRCNN_INITS = ("scratch", "imagenet", "coco", "file")


def frcnn_architecture(num_classes: int, tile_size: int, preset: str = "paper", init: str = "scratch") -> nn.Module:
    """The untrained Faster R-CNN of a preset and an initialisation's layout (no weights are read).

    ``imagenet`` / ``coco`` give torchvision's pretrained layout (``FrozenBatchNorm2d``, the stem and ``layer1``
    frozen); ``scratch`` / ``file`` the plain one (BatchNorm, all stages trainable)."""
    from torchvision.models import resnet18, resnet50  # noqa: PLC0415
    from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn  # noqa: PLC0415
    from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor  # noqa: PLC0415
    from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: PLC0415

    if init not in FRCNN_INITS:
        raise ValueError(f"unknown Faster R-CNN init {init!r}; expected one of {FRCNN_INITS}")
    size = int(tile_size)
    if preset == "paper" and init in ("imagenet", "coco"):
        # fasterrcnn_resnet50_fpn with weights / weights_backbone, minus the download
        backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
        model = FasterRCNN(backbone, num_classes=num_classes + 1, min_size=size, max_size=size)
    elif preset == "paper":
        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                        min_size=size, max_size=size)
    elif preset == "tiny":
        if init in ("imagenet", "coco"):
            raise ValueError(f"Faster R-CNN preset 'tiny' has no published {init} weights; use init scratch or file")
        layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
        backbone = BackboneWithFPN(resnet18(weights=None), return_layers=layers,
                                   in_channels_list=[64, 128, 256, 512], out_channels=64)
        model = FasterRCNN(backbone, num_classes=num_classes + 1, min_size=size, max_size=size,
                           rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
                           rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150, box_batch_size_per_image=64)
    else:
        raise ValueError(f"unknown Faster R-CNN preset {preset!r}; expected 'paper' or 'tiny'")
    model.sdconet_spec = {"num_classes": num_classes, "tile_size": size, "preset": preset,  # type: ignore[assignment]
                          "init": init}
    return model


def _state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a torchvision / our checkpoint file (``{"model": ...}`` unwrapped)."""
    from benchcore.checkpoints import load_tensors  # noqa: PLC0415

    return load_tensors(path, ("model", "state_dict"), what="Faster R-CNN init file")


def load_resnet50_imagenet(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load a torchvision ImageNet ResNet-50 state dict (``resnet50-0676ba61.pth`` layout: ``conv1.weight``,
    ``bn1.*``, ``layer{1..4}.*``, ``fc.*``) into the trunk ``backbone.body`` of a paper Faster R-CNN.

    Every trunk tensor must be filled; ``fc`` is dropped (the trunk has none). Returns ``{"loaded", "dropped"}``.

    Raises:
        ValueError: the file is not that layout (e.g. a detector checkpoint or a ResNet-18).
    """
    body = model.backbone.body
    state = _state_dict(path)
    own = body.state_dict()
    dropped = sorted(k for k in state if k.startswith("fc."))
    sd = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in own if k not in sd)
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if k in own
             and v.shape != own[k].shape]
    extra = sorted(k for k in sd if k not in own)
    if missing or wrong or extra:
        raise ValueError(f"{path}: not a torchvision ResNet-50 ImageNet state dict (missing {missing[:4]}, "
                         f"shape mismatches {wrong[:3]}, unexpected {extra[:4]})")
    body.load_state_dict(sd)
    return {"loaded": len(sd), "dropped": dropped}


def load_matching(model: nn.Module, path: str | os.PathLike, what: str = "Faster R-CNN") -> dict[str, Any]:
    """Load every tensor of ``path`` whose name and shape match ``model`` (a COCO detector: all but the
    class-specific predictor). Returns ``{"loaded", "skipped"}``."""
    state = _state_dict(path)
    own = model.state_dict()
    ok = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not ok:
        raise ValueError(f"{path}: no tensor matches the {what}")
    model.load_state_dict(ok, strict=False)
    return {"loaded": len(ok), "skipped": sorted(set(state) - set(ok))}


def build_frcnn(num_classes: int, tile_size: int, preset: str = "paper", weights: str | os.PathLike | None = None,
                init: str = "scratch") -> nn.Module:
    """Faster R-CNN for ``num_classes`` object classes (+1 background) on ``tile_size`` tiles, initialised as
    ``init`` says from ``weights`` (module docstring). ``model.sdconet_init`` records what was loaded."""
    if init == "scratch" and weights is not None:
        raise ValueError(f"init 'scratch' but a weights file is named ({weights}); use init 'file' to start from it")
    if init != "scratch" and weights is None:
        raise ValueError(f"Faster R-CNN init {init!r} needs its file (the workflow stages it: docs/weights.md; "
                         f"on the command line, --set frcnn.weights=/path/to/file)")
    model = frcnn_architecture(num_classes, tile_size, preset, init)
    report: dict[str, Any] = {"init": init, "file": str(weights) if weights else None}
    if init == "imagenet":
        report.update(load_resnet50_imagenet(model, weights))
    elif init in ("coco", "file"):
        report.update(load_matching(model, weights, f"{preset} Faster R-CNN"))
        if init == "coco":
            from torchvision.models.detection._utils import overwrite_eps  # noqa: PLC0415

            overwrite_eps(model, 0.0)  # as torchvision does for its COCO weights (trained with eps 0)
    model.sdconet_init = report  # type: ignore[assignment]
    return model


class CocoTileDataset(Dataset):
    """Tiles of a COCO json read from ``image_dir`` (HR, LR or SR copies), with targets on that grid.

    Items are ``(image float CHW in [0, 1], {"boxes": (N, 4) xyxy float32, "labels": (N,) int64,
    "image_id": int})``; an image without annotations gets ``boxes`` of shape (0, 4). ``iscrowd`` boxes are
    left out of training targets. With ``hflip`` each item is flipped with p=0.5 as a function of
    ``(seed, epoch, index)`` (call :meth:`set_epoch`).
    """

    def __init__(self, coco: Mapping[str, Any] | str | os.PathLike, image_dir: str | os.PathLike,
                 hflip: bool = False, seed: int = 0):
        self.index, self.image_dir, self.hflip, self.seed, self.epoch = TileIndex(coco), Path(image_dir), hflip, seed, 0
        self.records = sorted(self.index.coco["images"], key=lambda r: r["id"])
        self.cat_to_label, _ = label_maps(self.index.categories)
        self.anns: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in self.records}
        for a in self.index.coco.get("annotations", []):
            if not a.get("iscrowd", 0):
                self.anns[a["image_id"]].append(a)

    def set_epoch(self, epoch: int) -> None:
        """Select the flips of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        rec = self.records[i]
        img = read_rgb(self.index.find_file(self.image_dir, rec))
        h, w = img.shape[:2]
        anns = self.anns[rec["id"]]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        # the image covers the json tile's top-left k * (w, h) pixels: k = 1 for HR and SR tiles (an SR tile of a
        # scale the tile does not divide is the mod-crop, a few pixels short), the scale for an LR copy
        k = max(1, int(rec["width"]) // w)
        boxes = np.clip(boxes / k, 0, [w, h, w, h])
        labels = np.array([self.cat_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], labels[keep]
        if self.hflip and sample_rng(self.seed, self.epoch, i).random() < 0.5:
            img = img[:, ::-1]
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        target = {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(labels, dtype=torch.int64), "image_id": int(rec["id"])}
        return to_tensor(img), target


def _collate(batch: Sequence[Any]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def _lr_factor(step: int, epoch: int, epochs: int, warmup_iters: int) -> float:
    warm = min(1.0, 0.001 + (1 - 0.001) * step / warmup_iters) if warmup_iters > 0 else 1.0
    drops = sum(epoch >= m for m in {int(epochs * 2 / 3), int(epochs * 8 / 9)} if m > 0)
    return warm * 0.1 ** drops


def train_frcnn(coco_json: str | os.PathLike, image_dir: str | os.PathLike, out_dir: str | os.PathLike,
                epochs: int, batch_size: int = 2, lr: float = 0.01, seed: int = 0, resume: bool = False,
                device: str | torch.device | None = "cpu", preset: str = "paper", tile_size: int | None = None,
                optimizer: str = "sgd", weight_decay: float = 1e-4, warmup_iters: int = 500, log_every: int = 20,
                num_workers: int = 0, weights: str | os.PathLike | None = None, amp: bool = True,
                init: str = "scratch") -> dict[str, Any]:
    """Train Faster R-CNN on the tiles of ``coco_json`` read from ``image_dir``; returns a summary dict.

    ``tile_size`` defaults to the largest side of the first image in ``image_dir`` (the detector's input
    grid). ``optimizer``: ``"sgd"`` (momentum 0.9) or ``"adamw"``. ``resume`` continues from
    ``out_dir/checkpoints/last.pt`` (written after every epoch) when it exists. ``init`` / ``weights``: the
    initialisation (:func:`build_frcnn`), recorded in the checkpoint's config and the returned summary.
    """
    out, dev = Path(out_dir), resolve_device(device)
    data = CocoTileDataset(coco_json, image_dir, hflip=True, seed=seed)
    if not len(data):
        raise ValueError(f"{coco_json}: no images")
    if tile_size is None:
        tile_size = max(read_rgb(data.index.find_file(image_dir, data.records[0])).shape[:2])
    categories = data.index.categories
    config = {"preset": preset, "num_classes": len(categories), "tile_size": int(tile_size), "epochs": int(epochs),
              "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed), "optimizer": optimizer,
              "weight_decay": float(weight_decay), "warmup_iters": int(warmup_iters), "categories": categories,
              "coco_json": str(coco_json), "image_dir": str(image_dir), "weights": str(weights) if weights else None,
              "init": init}
    seed_everything(seed)
    model = build_frcnn(len(categories), int(tile_size), preset, weights, init=init)
    init_report = model.sdconet_init
    model = model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        optim: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    elif optimizer == "adamw":
        optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'sgd' or 'adamw'")
    use_amp = amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ckpt_path, start_epoch, step = out / "checkpoints" / "last.pt", 0, 0
    if resume and ckpt_path.is_file():
        ckpt = load_resume_checkpoint(ckpt_path, config, _RESUME_KEYS)
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        set_rng_state(ckpt["rng"])
    log = JsonlLog(out / "log.jsonl", resume_step=step if resume else None, key="step")
    t0 = time.time()
    last: dict[str, float] = {}
    pending = PendingLosses(out)
    for epoch in range(start_epoch, epochs):
        data.set_epoch(epoch)
        order = sample_rng(seed, epoch).permutation(len(data)).tolist()
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        # pinned batches on CUDA, so that the non-blocking copies below overlap the previous step's kernels
        loader = DataLoader(data, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
                            pin_memory=dev.type == "cuda",
                            generator=torch.Generator().manual_seed(int(seed) * 100003 + epoch))
        model.train()
        for images, targets in tqdm(loader, desc=f"frcnn epoch {epoch + 1}/{epochs}", disable=None):
            for g in optim.param_groups:
                g["lr"] = lr * _lr_factor(step, epoch, epochs, warmup_iters)
            images = [im.to(dev, non_blocking=True) for im in images]
            targets = [{k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                       for t in targets]
            with torch.autocast("cuda", enabled=use_amp):
                losses = model(images, targets)
            loss = sum(losses.values())
            step += 1
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            pending.add(step, {**losses, "loss": loss})  # read at the log line: no per-step sync on CUDA
            if step % log_every == 0:
                last = pending.flush()[-1][1]
                log.write({"step": step, "epoch": epoch + 1, "lr": optim.param_groups[0]["lr"], **last,
                           "elapsed_s": round(time.time() - t0, 3)})
        if len(pending):
            last = pending.flush()[-1][1]
        log.write({"step": step, "epoch": epoch + 1, "end_of_epoch": True, **last})
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": optim.state_dict(),
                                    "scaler": scaler.state_dict(), "epoch": epoch + 1, "step": step,
                                    "rng": rng_state(), "config": config, "git_sha": git_sha()})
    weights_path = out / "model.pt"
    with atomic_file(weights_path, "wb") as fh:
        torch.save({"model": model.state_dict(), "config": config}, fh)
    return {"epochs": epochs, "steps": step, "resumed_from_epoch": start_epoch or None, "last_losses": last,
            "checkpoint": str(ckpt_path), "weights": str(weights_path), "log": str(out / "log.jsonl"),
            "seconds": round(time.time() - t0, 3), "device": str(dev), "tile_size": int(tile_size),
            "init": init_report}


def load_frcnn(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from ``model.pt`` or ``checkpoints/last.pt``."""
    blob = load_checkpoint(path)
    cfg = blob["config"]
    model = frcnn_architecture(cfg["num_classes"], cfg["tile_size"], cfg["preset"], cfg.get("init", "scratch"))
    model.load_state_dict(blob["model"])
    return model, cfg


@torch.no_grad()
def predict_frcnn(model: nn.Module | str | os.PathLike, coco_json: Mapping[str, Any] | str | os.PathLike,
                  image_dir: str | os.PathLike, scale_to_hr: float | None = None,
                  device: str | torch.device | None = "cpu", batch_size: int = 4) -> list[dict[str, Any]]:
    """COCO detections (HR grid) for every image of ``coco_json`` found in ``image_dir``.

    Boxes are scaled by ``scale_to_hr`` (checked against the json sizes) or, when None, by the json/image
    size ratio, and clipped to the HR tile. torchvision's test settings are kept (score > 0.05, at most
    100 detections per image, the Detectron defaults).
    """
    data = CocoTileDataset(coco_json, image_dir)
    if isinstance(model, (str, os.PathLike)):
        path = model
        model, cfg = load_frcnn(path)
        trained = [c["name"] for c in cfg["categories"]]
        if trained != [c["name"] for c in data.index.categories]:
            raise ValueError(f"{path} was trained on classes {trained}, {coco_json} has "
                             f"{[c['name'] for c in data.index.categories]}")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    _, label_to_cat = label_maps(data.index.categories)
    out: list[dict[str, Any]] = []
    for i0 in range(0, len(data), batch_size):
        items = [data[i] for i in range(i0, min(i0 + batch_size, len(data)))]
        preds = model([im.to(dev) for im, _ in items])
        for (im, _), rec, p in zip(items, data.records[i0:i0 + batch_size], preds):
            sx, sy = scale_factors(rec, (im.shape[2], im.shape[1]), scale_to_hr)
            cats = [label_to_cat[int(lbl)] for lbl in p["labels"].cpu()]
            out += boxes_to_coco(p["boxes"].cpu().numpy(), p["scores"].cpu().tolist(), cats, rec["id"], sx, sy,
                                 rec["width"], rec["height"])
    return out

"""Tile dataset, collation and deterministic loaders (spec sections 1, 2.4; ``docs/formats.md`` 2-4).

A sample is ``(image, target)``:

- ``image``: float32 ``(3, H, W)`` RGB, ImageNet-normalised in 0..255 units (``(x - mean) / std``). It is the
  HR tile, or the offline LR tile (``(3, H // scale, W // scale)``) when ``lr_dir`` is given.
- ``target``: ``boxes`` float32 ``(N, 4)`` xyxy in **HR** pixels, ``labels`` int64 ``(N,)`` = category_id - 1,
  ``image_id`` (int, the COCO id), ``size`` (H, W) of the HR tile, ``flipped`` (bool) and, with ``lr_dir``,
  ``hr``: the normalised HR tile ``(3, s * (H // s), s * (W // s))`` (the SR target, mod-cropped to the area the
  LR tile covers; boxes are clipped to it and flipped about it, together with the LR input).

Boxes follow mmdet's ``CocoDataset``: ``iscrowd=1`` boxes and boxes with ``w < 1`` or ``h < 1`` are left out of
the training targets (evaluation uses the COCO json, not these targets). Empty tiles give ``boxes (0, 4)``.

The only augmentation is a horizontal flip (official ``RandomFlip(p=0.5)``). Whether sample ``i`` is flipped
is drawn from ``numpy.random.default_rng([seed, epoch, i])``, so it depends on neither the worker count nor
the process's RNG state: an interrupted and resumed run sees the same flips (call :func:`set_loader_epoch`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

MEAN_255 = (123.675, 116.28, 103.53)
STD_255 = (58.395, 57.12, 57.375)

Sample = tuple[Tensor, dict[str, Any]]


def normalise_uint8(img: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 RGB -> float32 ``(3, H, W)`` ImageNet-normalised (0..255 units)."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).to(torch.float32)
    mean = torch.tensor(MEAN_255, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD_255, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


def _read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"tile image not found: {path}")
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


class TileDataset(Dataset):
    """COCO tiles (a partition json: ``file_name`` = ``images/<name>.png`` relative to ``image_dir``).

    Args:
        coco_json: path to the COCO json, or the loaded dict (category ids must be 1..C).
        image_dir: the tiles directory that ``file_name`` is relative to.
        train: apply the random horizontal flip.
        hflip_p: flip probability in training.
        lr_dir: optional folder of offline LR tiles (same basenames, ``docs/formats.md`` 4); the LR tile becomes
            the input and the HR tile the ``hr`` target.
        scale: HR / LR size ratio (the run's ``lr.scale``; checked against the LR files). Required with
            ``lr_dir``; also the default SR border crop of :func:`sdconet.evaluate.evaluate`.
        seed: flip seed (the engine replaces it with the run seed through :meth:`set_epoch`).
    """

    def __init__(self, coco_json: str | Path | Mapping[str, Any], image_dir: str | Path, train: bool,
                 hflip_p: float = 0.5, lr_dir: str | Path | None = None, scale: int | None = None,
                 seed: int = 0) -> None:
        if isinstance(coco_json, (str, Path)):
            self.source = str(coco_json)
            self.coco: dict[str, Any] = json.loads(Path(coco_json).read_text())
        else:
            self.source = "<dict>"
            self.coco = dict(coco_json)
        cat_ids = sorted(int(c["id"]) for c in self.coco.get("categories", []))
        if not cat_ids or cat_ids != list(range(1, len(cat_ids) + 1)):
            raise ValueError(f"{self.source}: category ids must be 1..C, got {cat_ids}")
        self.num_classes = len(cat_ids)
        self.image_dir = Path(image_dir)
        self.lr_dir = Path(lr_dir) if lr_dir is not None else None
        if lr_dir is not None and scale is None:
            raise ValueError(f"{self.source}: an offline LR folder needs the run's scale")
        self.scale = None if scale is None else int(scale)
        self.train, self.hflip_p, self.seed, self.epoch = train, float(hflip_p), seed, 0
        self.images: list[dict[str, Any]] = list(self.coco.get("images", []))
        self.image_ids = [int(im["id"]) for im in self.images]
        anns: dict[int, list[dict[str, Any]]] = {i: [] for i in self.image_ids}
        for a in self.coco.get("annotations", []):
            if a["image_id"] not in anns:
                raise ValueError(f"{self.source}: annotation {a.get('id')} names unknown image_id {a['image_id']}")
            if int(a["category_id"]) not in range(1, self.num_classes + 1):
                raise ValueError(f"{self.source}: annotation {a.get('id')} has category_id {a['category_id']}")
            anns[a["image_id"]].append(a)
        self._anns = anns

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Select the flips of ``epoch`` (and replace the flip seed when ``seed`` is given)."""
        self.epoch = int(epoch)
        if seed is not None:
            self.seed = int(seed)

    def will_flip(self, index: int) -> bool:
        """Whether sample ``index`` is flipped in the current epoch (deterministic in seed, epoch, index)."""
        if not self.train or self.hflip_p <= 0:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, index]).random() < self.hflip_p)

    def targets_of(self, index: int) -> tuple[Tensor, Tensor]:
        """Unflipped ``(boxes xyxy (N, 4) float32, labels (N,) int64)`` of sample ``index``."""
        boxes, labels = [], []
        for a in self._anns[self.image_ids[index]]:
            x, y, w, h = (float(v) for v in a["bbox"])
            if a.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(int(a["category_id"]) - 1)
        return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(labels, dtype=torch.int64))

    def __getitem__(self, index: int) -> Sample:
        info = self.images[index]
        hr_path = self.image_dir / info["file_name"]
        hr = _read_rgb(hr_path)
        height, width = hr.shape[:2]
        if ("width" in info and int(info["width"]) != width) or ("height" in info and int(info["height"]) != height):
            raise ValueError(f"{hr_path}: image is {width}x{height} but the json says "
                             f"{info.get('width')}x{info.get('height')}")
        boxes, labels = self.targets_of(index)
        flip = self.will_flip(index)
        target: dict[str, Any] = {"image_id": int(info["id"]), "size": (height, width), "flipped": flip}
        hr_t = normalise_uint8(hr)
        if self.lr_dir is not None:
            lr_path = self.lr_dir / Path(info["file_name"]).name
            lr = _read_rgb(lr_path)
            if lr.shape[:2] != (height // self.scale, width // self.scale):
                raise ValueError(f"{lr_path}: LR size {lr.shape[1]}x{lr.shape[0]} is not the HR size "
                                 f"{width}x{height} // {self.scale}")
            # The LR tile covers the HR tile's top-left scale * (H // scale) rows and columns (mod-crop): the SR
            # target, the boxes and the flip axis live on that grid (a no-op when the scale divides the tile).
            height, width = lr.shape[0] * self.scale, lr.shape[1] * self.scale
            hr_t = hr_t[:, :height, :width]
            boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                                 boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
            keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
            boxes, labels = boxes[keep], labels[keep]
            image, target["hr"] = normalise_uint8(lr), hr_t
        else:
            image = hr_t
        if flip:
            image = image.flip(-1)
            if "hr" in target:
                target["hr"] = target["hr"].flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        target["boxes"], target["labels"] = boxes, labels
        return image, target


def collate(batch: list[Sample]) -> tuple[Tensor, list[dict[str, Any]]]:
    """Stack same-size images into ``(B, 3, H, W)`` and keep the targets as a list (sizes must agree)."""
    shapes = {tuple(img.shape) for img, _ in batch}
    if len(shapes) != 1:
        ids = [t.get("image_id") for _, t in batch]
        raise ValueError(f"cannot stack images of different sizes {sorted(shapes)} (image ids {ids}); "
                         "tiles must share one size (no padding is applied, pad_size_divisor=1)")
    return torch.stack([img for img, _ in batch]), [t for _, t in batch]


class SeededRandomSampler(Sampler[int]):
    """A random permutation drawn from ``seed + epoch`` (same order after a resume; cf. DistributedSampler)."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` in a worker from its torch seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, workers: int = 0,
                 distributed: bool = False, drop_last: bool = False) -> DataLoader:
    """A deterministic DataLoader over ``dataset`` with :func:`collate`.

    Order is a function of (seed, epoch) only: :class:`SeededRandomSampler` (one process) or
    ``DistributedSampler(seed=seed)`` (one shard per rank; needs an initialised process group). The loader's
    generator (worker base seeds) is seeded too; :func:`set_loader_epoch` re-seeds everything per epoch.
    """
    if distributed:
        sampler: Sampler[int] = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = SeededRandomSampler(len(dataset), seed=seed)  # type: ignore[arg-type]
    else:
        sampler = SequentialSampler(dataset)  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      drop_last=drop_last, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available())


def set_loader_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make the sampler order, the flips and the worker seeds of ``loader`` those of ``epoch``."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch, seed=seed)
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 1_000_003 + epoch)


def targets_to(targets: list[dict[str, Any]], device: torch.device | str) -> list[dict[str, Any]]:
    """Copies of ``targets`` with every tensor moved to ``device`` (other values kept)."""
    return [{k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()}
            for t in targets]

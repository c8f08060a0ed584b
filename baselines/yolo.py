"""ultralytics YOLO detector: train through ultralytics' own trainer, predict to COCO detections on HR.

Offline and write-containment rules (see ``shared/docs/environment.md``):

* ``import benchcore`` first sets ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0`` and ``YOLO_CONFIG_DIR`` (under
  ``~/.cache/sdconet-bench``, with a local Arial.ttf), *before* ultralytics is imported, so its
  ``settings.json`` and font checks stay in that cache dir and nothing is downloaded.
* Models are built from yaml (``yolov8n.yaml``). ``init`` (``docs/weights.md``): ``scratch``; ``imagenet``, the
  backbone layers 0-8 of the same-scale ultralytics classification checkpoint (``yolov8n-cls.pt`` /
  ``yolov8s-cls.pt``, trained on ImageNet: ultralytics publishes no ImageNet detector backbone otherwise);
  ``coco``, the COCO detector of the same scale (``yolov8n.pt`` / ``yolov8s.pt``; the class rows of the head are
  left out when the class count differs); ``file``, any local ``.pt``. The file is checked against the model
  (:func:`check_yolo_init`) and handed to ultralytics as ``pretrained=<file>``, which transfers every tensor
  whose name and shape match, in a single process and under DDP alike. Nothing is downloaded.
* For the process, :func:`_contain_settings` switches off ultralytics' logger integrations (mlflow,
  clearml, ... would write ``./mlruns`` etc.) and anonymous event sync, and points ``runs_dir`` at
  ``out_dir`` (in memory only: the settings file is not rewritten).
* Runs go to ``out_dir/train`` (``project=out_dir, name="train", exist_ok=True``).
* ultralytics writes a ``labels/<split>.cache`` next to the label folder. To keep the exported dataset
  untouched, :func:`mirror_dataset` builds ``out_dir/dataset`` with per-file symlinks (hard links or copies
  where symlinks are not allowed) and a ``data.yaml`` pointing at it, so the cache lands in ``out_dir``.
* On CUDA with ``amp=True``, ultralytics' AMP self-check would download ``yolo26n.pt``; offline and
  without that file we skip the check (AMP stays on), see :func:`_no_amp_download`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

import benchcore  # noqa: F401  (offline defaults before ultralytics is imported)
from baselines.mapping import TileIndex, boxes_to_coco, scale_factors, yolo_class_map
from benchcore.atomic import atomic_write_text

_SPLITS = ("train", "val", "test")
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


def _contain_settings(out_dir: Path) -> None:
    """In-memory ultralytics settings: no integrations, no sync, runs under ``out_dir``."""
    from ultralytics.utils import SETTINGS  # noqa: PLC0415

    dict.update(SETTINGS, {k: False for k in _INTEGRATIONS}, sync=False, runs_dir=str(out_dir))


@contextlib.contextmanager
def _no_amp_download(device: str) -> Iterator[None]:
    """Skip ultralytics' AMP self-check (it downloads yolo26n.pt) when offline and the file is absent."""
    import ultralytics.engine.trainer as trainer_mod  # noqa: PLC0415
    from ultralytics.utils import ONLINE, WEIGHTS_DIR  # noqa: PLC0415

    if str(device) == "cpu" or ONLINE or (WEIGHTS_DIR / "yolo26n.pt").is_file():
        yield
        return
    original = trainer_mod.check_amp
    trainer_mod.check_amp = lambda model: True
    try:
        yield
    finally:
        trainer_mod.check_amp = original


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def mirror_dataset(data_yaml: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Mirror an ultralytics export (``docs/formats.md`` §5) under ``dest``; return the new ``data.yaml``.

    Each split must be an ``images/<part>`` folder next to ``labels/<part>``. Image and label files are
    linked one by one (a linked *folder* would be resolved by ultralytics back to the source).
    """
    src_yaml = Path(data_yaml)
    if not src_yaml.is_file():
        raise FileNotFoundError(f"data yaml not found: {src_yaml}")
    data = yaml.safe_load(src_yaml.read_text()) or {}
    for key in ("names",):
        if key not in data:
            raise ValueError(f"{src_yaml}: missing key {key!r}")
    root = Path(data.get("path") or src_yaml.parent)
    root = root if root.is_absolute() else (src_yaml.parent / root)
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    out: dict[str, Any] = {"path": str(dest.resolve()), "names": data["names"]}
    if "nc" in data:
        out["nc"] = data["nc"]
    done: set[Path] = set()
    for split in _SPLITS:
        if not data.get(split):
            continue
        images = root / str(data[split])
        if not images.is_dir() or images.parent.name != "images":
            raise ValueError(f"{src_yaml}: split {split!r} must be an images/<part> folder, got {images}")
        labels = images.parent.parent / "labels" / images.name
        out[split] = f"images/{images.name}"
        if images.resolve() in done:  # e.g. val: images/train
            continue
        done.add(images.resolve())
        for kind, folder in (("images", images), ("labels", labels)):
            target = dest / kind / images.name
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                if f.is_file():
                    _link(f.resolve(), target / f.name)
    if "train" not in out:
        raise ValueError(f"{src_yaml}: no 'train' split")
    out.setdefault("val", out["train"])
    new_yaml = dest / "data.yaml"
    atomic_write_text(new_yaml, yaml.safe_dump(out, sort_keys=False))
    return new_yaml


YOLO_INITS = ("scratch", "imagenet", "coco", "file")
#: ultralytics' task of the checkpoint each init expects.
_INIT_TASK = {"imagenet": "classify", "coco": "detect"}


def check_yolo_init(det_model: Any, weights: str | os.PathLike, init: str) -> dict[str, Any]:
    """Check that ``weights`` (an ultralytics ``.pt``) is the checkpoint ``init`` expects and fits ``det_model``
    (a ``DetectionModel``); return what ultralytics will transfer.

    ``imagenet``: a classification checkpoint whose backbone layers (``model.0`` .. ``model.{n-1}``, ``n`` the
    length of its yaml's backbone) all fit the detector's, i.e. the ``-cls`` model of the same scale. ``coco``: a
    detection checkpoint. ``file``: anything with at least one tensor that fits.

    Returns:
        ``{"init", "file", "task", "transferred" (tensor count), "layers" (module indices transferred)}``.

    Raises:
        FileNotFoundError / ValueError: a missing file, the wrong kind of checkpoint or a scale that does not fit.
    """
    from ultralytics.nn.tasks import load_checkpoint  # noqa: PLC0415

    if init not in YOLO_INITS or init == "scratch":
        raise ValueError(f"init {init!r} reads no file; expected one of {YOLO_INITS[1:]}")
    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(f"YOLO init {init!r}: weights file not found: {weights} (nothing is downloaded; the "
                                f"workflow stages it, docs/weights.md; on the command line --set yolo.weights=FILE)")
    src, _ = load_checkpoint(str(weights))
    task = {"ClassificationModel": "classify", "DetectionModel": "detect"}.get(type(src).__name__,
                                                                               getattr(src, "task", None))
    if init in _INIT_TASK and task != _INIT_TASK[init]:
        example = "yolov8n-cls.pt" if init == "imagenet" else "yolov8n.pt"
        raise ValueError(f"{weights}: a {task!r} checkpoint, but init {init!r} expects an ultralytics "
                         f"{_INIT_TASK[init]!r} checkpoint (e.g. {example})")
    src_sd, own = src.float().state_dict(), det_model.state_dict()
    fits = {k for k, v in src_sd.items() if k in own and own[k].shape == v.shape}
    if init == "imagenet":
        n = len(src.yaml["backbone"])
        wanted = {k for k in src_sd if k.startswith("model.") and int(k.split(".")[1]) < n}
        bad = sorted(wanted - fits)
        if bad:
            raise ValueError(f"{weights}: its ImageNet backbone does not fit this detector ({len(bad)} of "
                             f"{len(wanted)} tensors, e.g. {bad[0]}): use the -cls checkpoint of the same scale")
        fits = wanted
    if not fits:
        raise ValueError(f"{weights}: no tensor fits this YOLO model")
    layers = sorted({int(k.split(".")[1]) for k in fits if k.startswith("model.")})
    return {"init": init, "file": str(weights), "task": task, "transferred": len(fits), "layers": layers}


def train_yolo(data_yaml: str | os.PathLike, out_dir: str | os.PathLike, model: str = "yolov8n.yaml",
               epochs: int = 100, imgsz: int = 512, batch: int = 16, seed: int = 0, device: str = "cpu",
               weights: str | os.PathLike | None = None, resume: bool = False, workers: int = 0,
               val: bool = True, init: str = "scratch", **overrides: Any) -> Path:
    """Train ``model`` on ``data_yaml`` with ultralytics' trainer; return ``best.pt`` (else ``last.pt``).

    Everything is written under ``out_dir`` (``out_dir/train/weights/{best,last}.pt``, ``out_dir/dataset``).
    ``val=False`` skips per-epoch validation (ultralytics still validates after the last epoch).
    ``resume=True`` continues from ``out_dir/train/weights/last.pt`` when it exists (a finished run is
    returned as is). ``init`` / ``weights``: the initialisation (module docstring; ``weights`` is required unless
    ``init`` is ``scratch``). Extra ``overrides`` go to ``YOLO.train`` (e.g. ``lr0``, ``mosaic``).
    """
    if init == "scratch" and weights is not None:
        raise ValueError(f"init 'scratch' but a weights file is named ({weights}); use init 'file' to start from it")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _contain_settings(out)
    from ultralytics import YOLO  # noqa: PLC0415

    wdir = out / "train" / "weights"
    last, best = wdir / "last.pt", wdir / "best.pt"
    mirrored = out / "dataset" / "data.yaml"
    args = dict(data=str(mirrored), epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), seed=int(seed),
                device=device, workers=int(workers), project=str(out), name="train", exist_ok=True,
                plots=False, deterministic=True, amp=str(device) != "cpu", val=bool(val), verbose=False,
                **overrides)
    if resume and last.is_file():
        import torch  # noqa: PLC0415

        if torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1) == -1:
            return best if best.is_file() else last  # finished: nothing to resume
        if not mirrored.is_file():
            mirror_dataset(data_yaml, out / "dataset")
        with _no_amp_download(device):
            YOLO(str(last)).train(resume=str(last), data=str(mirrored), device=device, workers=int(workers),
                                  plots=False)
    else:
        mirror_dataset(data_yaml, out / "dataset")
        net = YOLO(model)
        if init != "scratch":
            check_yolo_init(net.model, weights, init)
            args["pretrained"] = str(Path(weights).resolve())  # ultralytics' own transfer (also under DDP)
        with _no_amp_download(device):
            net.train(**args)
    if not last.is_file():
        raise RuntimeError(f"ultralytics finished without writing {last}")
    return best if best.is_file() else last


def predict_yolo(weights: str | os.PathLike, image_dir: str | os.PathLike,
                 coco_json: Mapping[str, Any] | str | os.PathLike, scale_to_hr: float | None = None,
                 conf: float = 0.001, iou: float = 0.6, max_det: int = 300, imgsz: int | None = None,
                 device: str = "cpu", batch: int = 16) -> list[dict[str, Any]]:
    """COCO detections (HR grid) of a trained YOLO on every image of ``coco_json`` found in ``image_dir``.

    ``conf=0.001, iou=0.6, max_det=300`` are ultralytics' mAP-evaluation settings. Classes map to
    ``category_id = cls + 1`` after a name check against the json; boxes are scaled by ``scale_to_hr``
    (checked against the json sizes) or by the json/image size ratio when None, and clipped to the tile.
    ``imgsz`` defaults to the training size stored in the weights.
    """
    from ultralytics import YOLO  # noqa: PLC0415

    if not Path(weights).is_file():
        raise FileNotFoundError(f"YOLO weights not found: {weights}")
    _contain_settings(Path(weights).resolve().parent)
    net = YOLO(str(weights))
    index = TileIndex(coco_json)
    cls_to_cat = yolo_class_map(net.names, index.categories)
    if imgsz is None:
        imgsz = int((getattr(net, "ckpt", None) or {}).get("train_args", {}).get("imgsz", 640))
    records = sorted(index.coco["images"], key=lambda r: r["id"])
    files = [index.find_file(image_dir, r) for r in records]
    out: list[dict[str, Any]] = []
    for i0 in range(0, len(files), batch):
        chunk = files[i0:i0 + batch]
        results = net.predict(source=[str(f) for f in chunk], imgsz=imgsz, conf=conf, iou=iou, max_det=max_det,
                              device=device, verbose=False, save=False, stream=False)
        for rec, res in zip(records[i0:i0 + batch], results):
            h, w = res.orig_shape
            sx, sy = scale_factors(rec, (w, h), scale_to_hr)
            boxes = res.boxes
            cats = [cls_to_cat[int(c)] for c in boxes.cls.cpu().tolist()]
            out += boxes_to_coco(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().tolist(), cats, rec["id"], sx, sy,
                                 rec["width"], rec["height"])
    return out

"""Detection metrics on the HR pixel grid: COCO AP (pycocotools) and VOC mAP50 (numpy).

Conventions shared by every function here:

- Ground truth is a COCO-style dict (or a path to one): ``images`` [{id, ...}], ``categories``
  [{id, name}], ``annotations`` [{id, image_id, category_id, bbox: [x, y, w, h], area, iscrowd}].
  Missing ``iscrowd`` defaults to 0, missing ``area`` to ``w*h`` and missing ``id`` to a running index;
  the caller's dict is never mutated.
- Detections are ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` in **HR pixels**
  (use :func:`scale_boxes_to_hr` for boxes predicted on an LR grid): the COCO size bins use absolute
  areas (small < 32^2 <= medium < 96^2 <= large), so boxes on another grid land in the wrong bin.
- ``difficult`` / ``ignore``: COCO mode keeps pycocotools' behaviour, where only ``iscrowd=1`` makes a
  GT box ignored (pycocotools overwrites ``ignore`` with ``iscrowd`` and knows nothing of ``difficult``);
  set ``iscrowd=1`` on difficult boxes to ignore them there. VOC mode honours ``difficult`` as VOC does.
- Protocols of :func:`coco_evaluate` (:data:`PROTOCOLS`): ``"coco"`` scores every AP key at 100 detections
  (``maxDets = [1, 10, 100]``, the COCO standard). ``"mmdet"`` is mmdetection's ``CocoMetric`` default, the
  released SDCoNet code's scoring: ``maxDets = [100, 300, 1000]``, where pycocotools' ``summarize()`` reports
  AP at 100 detections but AP50, AP75, AP_s, AP_m, AP_l at 1,000 (every output of a 300-query detector) and
  AR at 100 / 300 / 1000. pycocotools caps detections per image **and category**, not per image.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

COCO_KEYS = ("AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l", "AR1", "AR10", "AR100", "AR_s", "AR_m", "AR_l")


def load_gt(gt: dict | str | Path) -> dict:
    """A normalised deep copy of a COCO ground-truth dict (or the JSON file at ``gt``)."""
    if isinstance(gt, (str, Path)):
        data = json.loads(Path(gt).read_text())
    elif isinstance(gt, dict):
        data = copy.deepcopy(gt)
    else:
        raise TypeError(f"gt must be a dict or a path, got {type(gt).__name__}")
    for key in ("images", "categories"):
        if key not in data:
            raise ValueError(f"ground truth has no '{key}' list")
    data.setdefault("annotations", [])
    used = {a["id"] for a in data["annotations"] if "id" in a}
    next_id = max(used, default=0) + 1
    for ann in data["annotations"]:
        if "id" not in ann:
            ann["id"] = next_id
            next_id += 1
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    return data


def _check_detections(gt: dict, detections: Iterable[dict]) -> list[dict]:
    """Validated copies of ``detections`` with plain-float boxes; ValueError names a bad id or key."""
    img_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    out = []
    for i, d in enumerate(detections):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            raise ValueError(f"detection {i} lacks key(s) {missing}")
        if d["image_id"] not in img_ids:
            raise ValueError(f"detection {i}: unknown image_id {d['image_id']!r} (not in ground truth)")
        if d["category_id"] not in cat_ids:
            raise ValueError(f"detection {i}: unknown category_id {d['category_id']!r} (not in ground truth)")
        bbox = [float(v) for v in d["bbox"]]
        if len(bbox) != 4:
            raise ValueError(f"detection {i}: bbox must be [x, y, w, h], got {d['bbox']!r}")
        out.append({"image_id": d["image_id"], "category_id": d["category_id"], "bbox": bbox,
                    "score": float(d["score"])})
    return out


def _category_names(gt: dict) -> dict[int, str]:
    names: dict[int, str] = {}
    seen: set[str] = set()
    for c in gt["categories"]:
        name = str(c.get("name", c["id"]))
        if name in seen:
            name = f"{name}#{c['id']}"
        seen.add(name)
        names[c["id"]] = name
    return names


#: Scoring protocols: name -> pycocotools ``maxDets`` (the COCO standard; mmdetection ``CocoMetric``'s
#: ``proposal_nums`` default, which the released SDCoNet code scores with).
PROTOCOLS: dict[str, tuple[int, int, int]] = {"coco": (1, 10, 100), "mmdet": (100, 300, 1000)}


def protocol_keys(protocol: str = "coco") -> tuple[str, ...]:
    """The metric keys of a protocol, in ``COCOeval.summarize()``'s ``stats`` order.

    ``coco``: :data:`COCO_KEYS`. ``mmdet``: the AR keys name their maxDets (``AR100, AR300, AR1000``); the
    size-binned ``AR_s`` / ``AR_m`` / ``AR_l`` are at 1000 there.
    """
    md = _max_dets(protocol)
    return (*COCO_KEYS[:6], *(f"AR{m}" for m in md), *COCO_KEYS[9:])


def _max_dets(protocol: str, max_dets: int = 100) -> tuple[int, int, int]:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    if protocol == "coco":
        return (1, 10, int(max_dets))
    if max_dets != 100:
        raise ValueError(f"protocol 'mmdet' has fixed maxDets {list(PROTOCOLS['mmdet'])}; max_dets={max_dets} "
                         "applies to the 'coco' protocol only")
    return PROTOCOLS["mmdet"]


def _spec(protocol: str, max_dets: int = 100) -> dict[str, tuple[str, float | None, str, int]]:
    """key -> (AP or AR, IoU threshold or None for .50:.95, area range, index into maxDets).

    As ``COCOeval._summarizeDets``: AP at the maxDets entry equal to 100 (the coco protocol: at ``max_dets``, the
    last entry), the other AP keys and the size-binned AR at the last entry, the three AR keys at each entry.
    """
    md = _max_dets(protocol, max_dets)
    ap_at = md.index(100) if protocol == "mmdet" else 2
    keys = protocol_keys(protocol)
    return {keys[0]: ("ap", None, "all", ap_at), keys[1]: ("ap", 0.5, "all", 2), keys[2]: ("ap", 0.75, "all", 2),
            keys[3]: ("ap", None, "small", 2), keys[4]: ("ap", None, "medium", 2), keys[5]: ("ap", None, "large", 2),
            keys[6]: ("ar", None, "all", 0), keys[7]: ("ar", None, "all", 1), keys[8]: ("ar", None, "all", 2),
            keys[9]: ("ar", None, "small", 2), keys[10]: ("ar", None, "medium", 2), keys[11]: ("ar", None, "large", 2)}


def _mean_valid(s: np.ndarray) -> float | None:
    """Mean over entries > -1 (pycocotools' "undefined"), None if there are none (as summarize's -1)."""
    v = s[s > -1]
    return float(np.mean(v)) if v.size else None


def _evaluate(gt: dict, dets: list[dict], max_dets: int, per_class: bool, quiet: bool,
              only: str | None = None, protocol: str = "coco") -> dict[str, Any]:
    """Score already normalised ``gt`` and validated ``dets`` (no copies; also used by the bootstrap).

    ``only`` restricts pycocotools to the area range (and IoU threshold) one key needs, which gives the
    same number several times faster; the result then holds that key alone.
    """
    from pycocotools.coco import COCO  # noqa: PLC0415
    from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

    spec = _spec(protocol, max_dets)
    if only is not None and only not in spec:
        raise ValueError(f"unknown metric {only!r} for protocol {protocol!r}; expected one of {list(spec)}")
    sink = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    with sink:
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        # Same fields as COCO.loadRes for boxes (area = w*h, iscrowd = 0, id = index + 1), built directly
        # because loadRes mutates its input and crashes on an empty list.
        res_anns = [dict(d, area=d["bbox"][2] * d["bbox"][3], id=i + 1, iscrowd=0) for i, d in enumerate(dets)]
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(gt["images"]), "categories": gt["categories"], "annotations": res_anns}
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        p = ev.params
        p.maxDets = list(_max_dets(protocol, max_dets))
        if only is not None:
            _, thr, area_lbl, _ = spec[only]
            keep = p.areaRngLbl.index(area_lbl)
            p.areaRng, p.areaRngLbl = [p.areaRng[keep]], [area_lbl]
            if thr is not None:
                p.iouThrs = np.array([thr])
        ev.evaluate()
        ev.accumulate()
    prec, rec = ev.eval["precision"], ev.eval["recall"]  # [T,R,K,A,M], [T,K,A,M]
    out: dict[str, Any] = {}
    for key, (kind, thr, area_lbl, m) in spec.items():
        if (only is not None and key != only) or area_lbl not in p.areaRngLbl:
            continue
        a = p.areaRngLbl.index(area_lbl)
        t = slice(None) if thr is None else [int(np.argmin(np.abs(p.iouThrs - thr)))]
        out[key] = _mean_valid(prec[t][:, :, :, a, m] if kind == "ap" else rec[t][:, :, a, m])
    if per_class and only is None:
        names = _category_names(gt)
        a = p.areaRngLbl.index("all")
        # the last maxDets: max_dets (coco), 1000 (mmdet, as mmdetection's classwise table)
        out["per_class"] = {names[cid]: _mean_valid(prec[:, :, k, a, 2]) for k, cid in enumerate(p.catIds)}
    if only is None:
        out["protocol"] = protocol
        out["max_dets"] = list(p.maxDets)
    out["num_images"] = len(gt["images"])
    out["num_detections"] = len(dets)
    return out


def coco_evaluate(gt: dict | str | Path, detections: list[dict], iou_type: str = "bbox", max_dets: int = 100,
                  per_class: bool = True, quiet: bool = True, protocol: str = "coco") -> dict[str, Any]:
    """COCO box metrics of ``detections`` against ``gt`` with pycocotools (HR pixel grid).

    Args:
        gt: COCO ground-truth dict or JSON path (see module docstring; not mutated).
        detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``; may be empty.
        iou_type: only ``"bbox"`` (horizontal boxes) is supported.
        max_dets: protocol ``coco`` only: detections kept per image and category for AP and the third AR
            (COCO: 100); ``AR1``/``AR10`` keep 1 and 10. ``AR100`` and the ``AR_*`` keys are at ``max_dets``.
        per_class: add ``per_class`` {category name: AP@[.5:.95]} (None for a class with no GT); at
            ``max_dets`` (coco) or at 1000 (mmdet, as mmdetection's ``classwise`` table).
        quiet: swallow pycocotools' prints.
        protocol: ``"coco"`` (every AP key at 100 detections) or ``"mmdet"`` (mmdetection ``CocoMetric``:
            maxDets 100 / 300 / 1000, AP at 100, AP50 / AP75 / AP_s / AP_m / AP_l at 1000); module docstring.

    Returns:
        The keys of :func:`protocol_keys` (``coco``: ``AP, AP50, AP75, AP_s, AP_m, AP_l, AR1, AR10, AR100, AR_s,
        AR_m, AR_l``; ``mmdet``: ``AR100, AR300, AR1000`` instead of ``AR1, AR10, AR100``) as floats in [0, 1],
        or None where pycocotools reports -1 (no GT in that size bin), plus ``protocol``, ``max_dets`` (the
        pycocotools ``maxDets``), ``num_images`` and ``num_detections``. Identical to ``COCOeval.summarize()``'s
        ``stats`` with the protocol's maxDets (coco: for ``max_dets=100``). Empty detections give 0.0 for every
        metric that has GT (None where the bin has none).

    Raises:
        ValueError: a detection names an image_id or category_id absent from ``gt``, or lacks a key; an unknown
            protocol; ``max_dets`` other than 100 with the mmdet protocol.
    """
    if iou_type != "bbox":
        raise ValueError(f"iou_type {iou_type!r} not supported (only 'bbox')")
    _max_dets(protocol, max_dets)
    data = load_gt(gt)
    dets = _check_detections(data, detections)
    return _evaluate(data, dets, max_dets=max_dets, per_class=per_class, quiet=quiet, protocol=protocol)


def scale_boxes_to_hr(detections: list[dict], scale: float) -> list[dict]:
    """Copies of ``detections`` whose ``bbox`` [x, y, w, h] is multiplied by ``scale`` (LR grid -> HR grid)."""
    return [dict(d, bbox=[float(v) * scale for v in d["bbox"]]) for d in detections]


def _iou_xywh(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x, y, w, h] box with N boxes, continuous coordinates (no VOC "+1" pixel)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """VOC AP from a precision/recall curve: 11-point (VOC07) or all-point interpolation (VOC2010+)."""
    if use_07_metric:
        return float(np.mean([np.max(prec[rec >= t]) if np.any(rec >= t) else 0.0
                              for t in np.linspace(0.0, 1.0, 11)]))
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def voc_map50(gt: dict | str | Path, detections: list[dict], iou: float = 0.5,
              use_07_metric: bool = False) -> dict[str, Any]:
    """VOC-style mAP at one IoU threshold, written by hand because pycocotools has no VOC mode.

    Follows the VOC devkit (``voc_eval``): per class, detections sorted by descending score are matched
    greedily to the unmatched GT box of the same image with the highest IoU; a match needs IoU > ``iou``
    (strict, as VOC). A detection whose best GT is ``difficult`` counts as neither TP nor FP, difficult
    boxes are left out of the positives, a second hit on a matched GT is a FP. AP uses all-point
    interpolation (VOC2010+) or the 11-point VOC07 metric (``use_07_metric=True``, DOTA's HBB metric).
    IoU uses continuous coordinates (no legacy "+1" pixel). ``iscrowd`` is treated like ``difficult``.

    Returns:
        ``{"mAP50": mean AP over classes with at least one non-difficult GT, "per_class": {name: AP | None}}``.
    """
    data = load_gt(gt)
    dets = _check_detections(data, detections)
    names = _category_names(data)
    per_class: dict[str, float | None] = {}
    for cid, name in names.items():
        gts: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        for ann in data["annotations"]:
            if ann["category_id"] == cid:
                boxes, diff = gts.get(ann["image_id"], (np.zeros((0, 4)), np.zeros(0, bool)))
                hard = bool(ann.get("difficult", 0)) or bool(ann.get("iscrowd", 0))
                gts[ann["image_id"]] = (np.vstack([boxes, np.asarray(ann["bbox"], float)]), np.append(diff, hard))
        npos = int(sum((~d).sum() for _, d in gts.values()))
        if npos == 0:
            per_class[name] = None
            continue
        matched = {k: np.zeros(len(v[1]), bool) for k, v in gts.items()}
        cdets = sorted((d for d in dets if d["category_id"] == cid), key=lambda d: -d["score"])
        tp, fp = np.zeros(len(cdets)), np.zeros(len(cdets))
        for i, d in enumerate(cdets):
            boxes, diff = gts.get(d["image_id"], (np.zeros((0, 4)), np.zeros(0, bool)))
            ious = _iou_xywh(np.asarray(d["bbox"]), boxes) if len(boxes) else np.zeros(0)
            j = int(np.argmax(ious)) if ious.size else -1
            if j >= 0 and ious[j] > iou:
                if diff[j]:
                    continue
                if not matched[d["image_id"]][j]:
                    tp[i] = 1
                    matched[d["image_id"]][j] = True
                else:
                    fp[i] = 1
            else:
                fp[i] = 1
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        rec = ctp / npos
        prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        per_class[name] = voc_ap(rec, prec, use_07_metric)
    valid = [v for v in per_class.values() if v is not None]
    return {"mAP50": float(np.mean(valid)) if valid else None, "per_class": per_class}

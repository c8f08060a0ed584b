"""Class lists in each dataset's own order. Category ids are 1-based positions in these tuples.

A ``source: coco`` dataset has no list here: its classes are the categories of its own json
(:func:`dataset_classes`, ``data_prep.parsers.coco``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from data_prep.errors import DataError

NWPU_CLASSES = (
    "airplane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
    "ground track field", "harbor", "bridge", "vehicle",
)
DOTA15_CLASSES = (
    "plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court",
    "ground-track-field", "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter",
    "roundabout", "soccer-ball-field", "swimming-pool", "container-crane",
)
HRRSD_CLASSES = (
    "airplane", "baseball diamond", "basketball court", "bridge", "crossroad", "ground track field",
    "harbor", "parking lot", "ship", "storage tank", "T junction", "tennis court", "vehicle",
)
DEMO_CLASSES = ("vehicle", "ship", "storage tank", "airplane")

CLASSES = {"nwpu": NWPU_CLASSES, "dota": DOTA15_CLASSES, "hrrsd": HRRSD_CLASSES, "demo": DEMO_CLASSES}


def categories(dataset: str) -> list[dict]:
    """COCO ``categories`` entries for ``dataset`` (stable ids 1..C in the dataset's own order)."""
    try:
        names = CLASSES[dataset]
    except KeyError:
        raise KeyError(f"unknown dataset {dataset!r}; expected one of {sorted(CLASSES)}") from None
    return [{"id": i + 1, "name": n, "supercategory": dataset} for i, n in enumerate(names)]


def dataset_classes(cfg: Mapping[str, Any], resolve: Callable[[str], str | Path] = Path) -> tuple[str, ...]:
    """Class names, in category-id order, of one configured dataset (a ``datasets.<id>`` config entry).

    Built-in sources use the lists above; ``source: coco`` reads the categories of the json given as
    ``annotations`` (sorted by id), after ``resolve`` has turned that config path into a file path.
    """
    source = cfg.get("source")
    if source == "coco":
        from data_prep.parsers.coco import coco_class_names  # noqa: PLC0415

        if not cfg.get("annotations"):
            raise DataError("a dataset with source 'coco' needs the config key 'annotations' (its COCO json)")
        path = Path(resolve(cfg["annotations"]))
        if not path.is_file():
            raise DataError(f"coco dataset: annotations {cfg['annotations']!r} not found (resolved to {path})")
        return coco_class_names(path)
    if source not in CLASSES:
        raise DataError(f"unknown dataset source {source!r}; expected one of {sorted([*CLASSES, 'coco'])}")
    return CLASSES[source]

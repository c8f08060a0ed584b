"""Class lists in each dataset's own order. Category ids are 1-based positions in these tuples."""
from __future__ import annotations

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

"""What each job processes: the resolved workflow config, each job's run specification, and the image counts.

The config is resolved as the Snakefile does (``--configfile`` replaces the demo default, ``--config key=value``
overrides, the schema fills defaults, config paths resolve against the repository); the specifications come from the
same builders the workflow calls (``sdconet.spec.build_spec``, ``baselines.spec.build_serial_spec`` /
``build_sr_spec``), so the plan reads the same epochs, iterations, batches, presets and image sizes the jobs will.

Image counts per dataset and part: the data stage's partition files when they exist under the results folder, else an
estimate from the config (source ``demo``: ``n_images`` scenes of ``size`` px; ``coco``: the annotation file's image
sizes) tiled with DOTA_devkit's windows, else the documented per-dataset tile counts (:data:`DOCUMENTED_TILES`).
Each count says which (``source``), and the plan prints it.
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from compare.plan.dag import REPO

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
DEFAULT_CONFIG = REPO / "config/config.yaml"

# Documented tile counts at 512/200 (../shared/docs/datasets.md, docs/data.md) and how the partition divides them.
DOCUMENTED_TILES: dict[str, dict[str, Any]] = {
    "nwpu": {"tiles": 3631, "note": "NWPU VHR-10-Split: 3,631 tiles (512/200 on the 650 positive images)"},
    "dota": {"tiles": 15883, "note": "DOTAv1.5-Split: 15,883 tiles (the official split; ours is 512/200 with "
                                     "DOTA_devkit semantics, same order of magnitude)",
             "parts": {"train": 0.755 * 0.9, "val": 0.755 * 0.1, "test": 0.245}},  # train 1,411 / val 458 images
    "hrrsd": {"tiles": 53056, "note": "HRSSD-Split: 53,056 tiles; ImageSets train 5,401 / val 5,417 / test 10,943",
              "parts": {"train": 5401 / 21761, "val": 5417 / 21761, "test": 10943 / 21761}},
}


@dataclass
class Images:
    """Tile counts of one dataset: ``train``, ``val``, ``test``, the tile ``side`` (px) and where they came from."""

    train: int
    val: int
    test: int
    side: int
    source: str

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


def _override(text: str) -> tuple[str, Any]:
    key, val = text.split("=", 1)
    return key, yaml.safe_load(val)


def load_config(configfile: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The workflow config as the Snakefile resolves it (schema defaults filled, config paths made absolute)."""
    from snakemake.utils import validate  # noqa: PLC0415

    path = Path(configfile) if configfile else DEFAULT_CONFIG
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for item in overrides:
        k, v = _override(item)
        config[k] = v
    validate(config, str(SCHEMA))
    for keys in (("experiments",), ("sdconet", "config"), ("baselines", "config"), ("report", "reference")):
        d = config
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = _repo_path(d.get(keys[-1]))
    return config


def _repo_path(path: str | None) -> str | None:
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    return str(REPO / path)


class Workload:
    """The run specifications and image counts of one resolved config (cached per argument set)."""

    def __init__(self, config: Mapping[str, Any]):
        from benchcore.experiments import load_experiments  # noqa: PLC0415
        from benchcore.runspec import degradation_of  # noqa: PLC0415

        self.config = config
        self.results = config["results_dir"]
        self.exp = load_experiments(config["experiments"]).set_index("id", drop=False)
        self.deg = {d: degradation_of(d, config["degradations"]) for d in config["degradations"]}
        self._specs: dict[tuple, dict[str, Any]] = {}
        self._images: dict[str, Images] = {}

    def method_spec(self, dataset: str, degradation: str, method: str, seed: int) -> dict[str, Any]:
        """A run's specification, as ``common.smk``'s ``method_spec`` builds it."""
        key = ("m", dataset, degradation, method, int(seed))
        if key not in self._specs:
            from baselines.spec import build_serial_spec  # noqa: PLC0415
            from sdconet.spec import build_spec  # noqa: PLC0415

            row = self.exp.loc[method].to_dict()
            common = dict(results=self.results, dataset=dataset, degradation=self.deg[degradation], row=row,
                          seed=int(seed), experiments=self.config["experiments"])
            if row["kind"] == "serial":
                spec = build_serial_spec(config_file=self.config["baselines"]["config"],
                                         sets=self.config["baselines"]["set"], **common)
            else:
                spec = build_spec(config_file=self.config["sdconet"]["config"], sets=self.config["sdconet"]["set"],
                                  rows=self.config["sdconet"]["rows"], num_classes=1, **common)
            self._specs[key] = spec
        return copy.deepcopy(self._specs[key])

    def sr_spec(self, dataset: str, degradation: str, sr_model: str, seed: int) -> dict[str, Any]:
        """An SR stage's specification (``build_sr_spec``)."""
        key = ("sr", dataset, degradation, sr_model, int(seed))
        if key not in self._specs:
            from baselines.spec import build_sr_spec  # noqa: PLC0415

            self._specs[key] = build_sr_spec(results=self.results, dataset=dataset, degradation=self.deg[degradation],
                                             sr_model=sr_model, seed=int(seed),
                                             config_file=self.config["baselines"]["config"],
                                             sets=self.config["baselines"]["set"])
        return copy.deepcopy(self._specs[key])

    def images(self, dataset: str) -> Images:
        """Tile counts of a dataset (see the module docstring for the order of sources)."""
        if dataset not in self._images:
            self._images[dataset] = dataset_images(dataset, self.config["datasets"][dataset], self.results)
        return self._images[dataset]


def tile_windows(width: int, height: int, tile: int, gap: int) -> int:
    """DOTA_devkit ImgSplit's window count: stride ``tile - gap``, the last window flush with the edge."""
    stride = max(1, tile - gap)

    def n(side: int) -> int:
        return 1 if side <= tile else 1 + math.ceil((side - tile) / stride)

    return n(width) * n(height)


def _split(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    tot = sum(ratios.get(p, 0.0) for p in ("train", "val", "test")) or 1.0
    train = round(n * ratios.get("train", 0.0) / tot)
    val = round(n * ratios.get("val", 0.0) / tot)
    return {"train": train, "val": val, "test": max(0, n - train - val)}


def dataset_images(name: str, cfg: Mapping[str, Any], results: str) -> Images:
    """Tile counts of one configured dataset: partition files, else the config, else the documented figures."""
    tile = cfg.get("tile") or {}
    side = int(tile.get("size", 512))
    part_dir = Path(results, "data", name, "partition")
    if all((part_dir / f"{p}.json").is_file() for p in ("train", "val", "test")):
        counts = {p: len(json.loads((part_dir / f"{p}.json").read_text(encoding="utf-8")).get("images") or [])
                  for p in ("train", "val", "test")}
        return Images(side=side, source=f"partition files {part_dir}", **counts)
    part = cfg.get("partition") or {}
    ratios = dict(part.get("ratios") or {"train": 0.6, "val": 0.2, "test": 0.2})
    for src, dst in (part.get("split_map") or {}).items():  # e.g. DOTA's val -> test
        ratios[dst], ratios[src] = ratios.get(src, 0.0), 0.0
    gap = int(tile.get("gap", 0))
    if cfg.get("source") == "demo":
        d = cfg.get("demo") or {}
        n = int(d.get("n_images", 10)) * tile_windows(int(d.get("size", 512)), int(d.get("size", 512)), side, gap)
        return Images(side=side, source=f"config: {d.get('n_images')} demo scenes of {d.get('size')} px tiled "
                                        f"{side}/{gap}, split by partition.ratios", **_split(n, ratios))
    if cfg.get("source") == "coco" and cfg.get("annotations") and Path(_repo_path(cfg["annotations"])).is_file():
        coco = json.loads(Path(_repo_path(cfg["annotations"])).read_text(encoding="utf-8"))
        n = sum(tile_windows(int(im["width"]), int(im["height"]), side, gap) for im in coco.get("images") or [])
        return Images(side=side, source=f"config: {cfg['annotations']} image sizes tiled {side}/{gap}",
                      **_split(n, ratios))
    doc = DOCUMENTED_TILES.get(cfg.get("source"))
    if doc is None:
        raise ValueError(f"dataset {name!r}: no partition files under {part_dir} and no documented tile count for "
                         f"source {cfg.get('source')!r}; run the data stage first (snakemake data)")
    counts = ({p: round(doc["tiles"] * f) for p, f in doc["parts"].items()} if "parts" in doc
              else _split(doc["tiles"], ratios))
    return Images(side=side, source=f"documented: {doc['note']}", **counts)

"""Shared fixtures. Real-data tests skip with a reason when the NWPU copy is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
NWPU_DIR = Path(os.environ.get("SDCONET_NWPU_DIR", REPO_ROOT.parent / "shared" / "data" / "nwpu_vhr10"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def nwpu_dir() -> Path:
    """The directory holding ``NWPU VHR-10 dataset/`` (and MANIFEST.sha256)."""
    if not (NWPU_DIR / "NWPU VHR-10 dataset" / "ground truth").is_dir():
        pytest.skip(f"real NWPU VHR-10 copy not found at {NWPU_DIR} (set SDCONET_NWPU_DIR)")
    return NWPU_DIR


@pytest.fixture(scope="session")
def nwpu_root(nwpu_dir: Path) -> Path:
    """The dataset root itself (``.../NWPU VHR-10 dataset``)."""
    return nwpu_dir / "NWPU VHR-10 dataset"


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny models on a shared 2-core machine stall under OpenMP
    oversubscription (tiny convolutions ran ~100x slower with 2 threads). Restored afterwards."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def run_workflow():
    """``run_workflow(work, config, target="all", timeout=900)``: write ``config`` (a dict) to ``work/user.yaml`` and
    run the repository's Snakefile on it in ``work`` with 2 cores; fails the test with the log tail unless it
    succeeds. Returns stdout + stderr."""
    import subprocess
    import sys

    import yaml

    def run(work: Path, config: dict, target: str = "all", timeout: int = 900) -> str:
        (work / "user.yaml").write_text(yaml.safe_dump(config))
        r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--cores", "2",
                            target, "--configfile", "user.yaml", "--directory", str(work)],
                           cwd=work, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
        return r.stdout + r.stderr

    return run


@pytest.fixture(scope="session")
def copy_sheet():
    """``copy_sheet(dest, set_cells={id: cell}, extra_rows=[{column: value}])``: the repository's experiments sheet
    written to ``dest`` with some rows' ``set`` cells replaced and rows appended (columns by name; "-" where a row
    leaves a column out). Returns ``dest``."""
    import csv

    def write(dest: Path, set_cells: dict | None = None, extra_rows: list | None = None) -> Path:
        with (REPO_ROOT / "config" / "experiments.tsv").open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        header = list(rows[0])
        if "set" not in header:
            header.insert(header.index("notes") if "notes" in header else len(header), "set")
        for row in rows:
            row["set"] = (set_cells or {}).get(row["id"], row.get("set") or "-")
        rows += [{h: extra.get(h, "-") for h in header} for extra in extra_rows or []]
        with dest.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=header, delimiter="\t", lineterminator="\n")
            w.writeheader()
            w.writerows({h: (r.get(h) if r.get(h) is not None else "") for h in header} for r in rows)
        return dest

    return write


@pytest.fixture(scope="session")
def make_demo_data():
    """``make_demo_data(root, seed=0, pairs=False) -> root/results/data/demo``: the data stage's folder for 4
    synthetic 256 px scenes, as the workflow lays it out: ``coco.json``, ``tiles/`` (128 px), ``partition/``
    (train/val/test 0.5/0.25/0.25) and ``bicubic_x2/lr`` (+ ``bicubic_x2/basicsr`` pairs with ``pairs``)."""
    def make(root: Path, seed: int = 0, pairs: bool = False) -> Path:
        from data_prep.convert import convert_dataset
        from data_prep.degrade import degrade_folder
        from data_prep.demo import generate_demo
        from data_prep.export import export_basicsr_pairs
        from data_prep.partition import partition_tiles
        from data_prep.split import split_dataset

        data = root / "results" / "data" / "demo"
        generate_demo(root / "raw", n_images=4, size=256, seed=seed)
        convert_dataset("demo", root / "raw", data / "coco.json")
        split_dataset(data / "coco.json", root / "raw", data / "tiles", tile=128, gap=0, workers=1, progress=False)
        partition_tiles(data / "tiles" / "annotations.json", data / "partition",
                        ratios={"train": 0.5, "val": 0.25, "test": 0.25})
        degrade_folder(data / "tiles" / "images", data / "bicubic_x2" / "lr", scale=2)
        if pairs:
            parts = {p: data / "partition" / f"{p}.json" for p in ("train", "val", "test")}
            export_basicsr_pairs(parts, data / "tiles" / "images", data / "bicubic_x2" / "lr",
                                 data / "bicubic_x2" / "basicsr")
        return data

    return make

"""Rule partition: train/val/test by source image."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.partition import partition_tiles  # noqa: E402

p = snakemake.params.part  # noqa: F821
partition_tiles(Path(snakemake.input.tiles) / "annotations.json",  # noqa: F821
                Path(snakemake.output.train).parent, mode=p.get("mode", "ratio"),  # noqa: F821
                ratios=p.get("ratios", {"train": 0.7, "val": 0.1, "test": 0.2}), seed=p.get("seed", 0),
                split_map=p.get("split_map") or None)

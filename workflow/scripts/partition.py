"""Rule partition: train/val/test by source image; warns (log and console) about near-empty parts."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.partition import MIN_SOURCE_IMAGES, partition_tiles  # noqa: E402

p = snakemake.params.part  # noqa: F821
summary = partition_tiles(Path(snakemake.input.tiles) / "annotations.json",  # noqa: F821
                          Path(snakemake.output.train).parent, mode=p.get("mode", "ratio"),  # noqa: F821
                          ratios=p.get("ratios", {"train": 0.7, "val": 0.1, "test": 0.2}), seed=p.get("seed", 0),
                          split_map=p.get("split_map") or None,
                          min_source_images=p.get("min_source_images", MIN_SOURCE_IMAGES))
for msg in summary["warnings"]:  # the log file has them; the console (the job's real stderr) too
    print(f"WARNING: {msg}", file=sys.__stderr__, flush=True)

"""Rule split_tiles: tile the converted images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.split import split_dataset  # noqa: E402

t = snakemake.params.tile  # noqa: F821
split_dataset(snakemake.input.coco, snakemake.params.root, snakemake.output[0],  # noqa: F821
              tile=t.get("size", 512), gap=t.get("gap", 200), keep_ratio=t.get("keep_ratio", 0.7),
              pad=t.get("pad", True), include_negative=t.get("include_negative", False),
              workers=snakemake.threads, progress=True, max_source_images=t.get("max_source_images"))  # noqa: F821

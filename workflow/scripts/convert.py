"""Rule convert: raw dataset (or a user's COCO json + images) -> the suite's COCO json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.convert import convert_coco, convert_dataset  # noqa: E402

p = snakemake.params  # noqa: F821
if p.source == "coco":
    convert_coco(p.annotations, p.root, snakemake.output[0], name=snakemake.wildcards.dataset)  # noqa: F821
else:
    convert_dataset(p.source, p.root, snakemake.output[0])  # noqa: F821

"""Rule convert: raw dataset -> COCO json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.convert import convert_dataset  # noqa: E402

convert_dataset(snakemake.params.source, snakemake.params.root, snakemake.output[0])  # noqa: F821

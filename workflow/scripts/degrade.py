"""Rule degrade: low-quality copies of the HR tiles."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.degrade import degrade_folder  # noqa: E402

d = snakemake.params.deg  # noqa: F821
degrade_folder(Path(snakemake.input.tiles) / "images", snakemake.output[0],  # noqa: F821
               scale=d.get("scale", 2), kernel=d.get("kernel", "torch-bicubic"), blur=d.get("blur", 0.0),
               noise=d.get("noise", 0.0), jpeg=d.get("jpeg"), seed=d.get("seed", 0),
               workers=snakemake.threads)  # noqa: F821

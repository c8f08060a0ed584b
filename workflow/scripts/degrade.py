"""Rule degrade: low-quality copies of the HR tiles."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.degrade import degrade_folder  # noqa: E402

d = snakemake.params.deg  # the resolved degradation (benchcore.runspec.degradation_of: every key present)  # noqa: F821
degrade_folder(Path(snakemake.input.tiles) / "images", snakemake.output[0],  # noqa: F821
               scale=d["scale"], kernel=d["kernel"], blur=d["blur"], noise=d["noise"], jpeg=d["jpeg"], seed=d["seed"],
               workers=snakemake.threads)  # noqa: F821

"""Rule export_basicsr: BasicSR paired HR/LR folders."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.export import export_basicsr_pairs  # noqa: E402

parts = {Path(p).stem: Path(p) for p in snakemake.input.parts}  # noqa: F821
export_basicsr_pairs(parts, Path(snakemake.input.tiles) / "images", Path(snakemake.input.lr),  # noqa: F821
                     Path(snakemake.output[0]))  # noqa: F821

"""Rules export_yolo_hr / export_yolo_lr: an ultralytics dataset over the given tile images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from data_prep.export import export_yolo  # noqa: E402

parts = {Path(p).stem: Path(p) for p in snakemake.input.parts}  # noqa: F821
export_yolo(parts, Path(snakemake.params.images), Path(snakemake.output[0]))  # noqa: F821

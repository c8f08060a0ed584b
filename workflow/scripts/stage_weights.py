"""Rule stage_weights: copy (weights.dir) or download (weights.allow_download) one published file, verify its
sha256 and write its manifest (benchcore.weights.stage_file)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from benchcore.weights import check_pins, stage_file  # noqa: E402

cfg = snakemake.config["weights"]  # noqa: F821
out = Path(snakemake.output.weights)  # noqa: F821
stage_file(out.name, out.parent, source_dir=cfg["dir"], allow_download=cfg["allow_download"],
           pins=check_pins(cfg["sha256"]))

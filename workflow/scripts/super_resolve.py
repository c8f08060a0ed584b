"""Rule super_resolve: every LR tile through the SR stage of its run_spec.json, with PSNR/SSIM vs HR."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from benchcore.runspec import load_spec  # noqa: E402
from baselines.spec import super_resolve_from_spec  # noqa: E402

super_resolve_from_spec(load_spec(snakemake.input.spec))  # noqa: F821

"""Rule report: every table, figure and the HTML page from the result files."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from compare.report.html import build_report  # noqa: E402

R = Path(snakemake.output[0]).parent  # noqa: F821
build_report(R, dict(snakemake.config), snakemake.input.experiments, snakemake.output[0],  # noqa: F821
             seeds=snakemake.params.seeds, reference_path=snakemake.params.reference,  # noqa: F821
             methods=snakemake.params.methods)  # noqa: F821

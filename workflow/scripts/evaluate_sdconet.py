"""Rule evaluate_sdconet: score the trained run of its run_spec.json on the test tiles (HR grid)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from benchcore.runspec import load_spec  # noqa: E402
from sdconet.spec import evaluate_from_spec  # noqa: E402

spec_file = snakemake.input.spec  # noqa: F821
evaluate_from_spec(load_spec(spec_file), spec_path=spec_file, n_boot=snakemake.params.n_boot,  # noqa: F821
                   protocol=snakemake.params.protocol)  # noqa: F821

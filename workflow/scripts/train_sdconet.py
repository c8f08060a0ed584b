"""Rule train_sdconet: train the run of its run_spec.json (resumable), then a completion marker."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from benchcore.atomic import atomic_write_json  # noqa: E402
from benchcore.runspec import load_spec  # noqa: E402
from sdconet.spec import train_from_spec  # noqa: E402

res = train_from_spec(load_spec(snakemake.input.spec), resume=True)  # noqa: F821
atomic_write_json(snakemake.output.done, {"spec": snakemake.input.spec, **res})  # noqa: F821

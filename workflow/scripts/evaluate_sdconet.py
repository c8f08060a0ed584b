"""Rule evaluate_sdconet: `python -m sdconet evaluate` on the test partition (HR grid)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from sdconet.cli import main  # noqa: E402

wc, p = snakemake.wildcards, snakemake.params  # noqa: F821
ckpt = Path(snakemake.input.done).parent / "last.pt"  # noqa: F821
argv = ["evaluate", "--checkpoint", str(ckpt), "--data", p.data, "--out", snakemake.output.metrics,  # noqa: F821
        "--split", "test", "--method", wc.method, "--dataset", wc.dataset, "--degradation", wc.degradation,
        "--seed", wc.seed]
if p.sr:
    argv.append("--sr")
rc = main(argv)
if rc:
    raise SystemExit(f"sdconet evaluate failed with exit code {rc} (see the log above)")

from benchcore.metrics.results import add_bootstrap  # noqa: E402

# 95 % CIs of AP / AP_s over test images (report: bootstrap replicates; 0 = off).
add_bootstrap(snakemake.output.metrics, Path(p.data) / "partition" / "test.json", n_boot=p.n_boot)  # noqa: F821

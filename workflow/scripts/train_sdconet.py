"""Rule train_sdconet: `python -m sdconet train --resume` for one method/seed, then a completion marker."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from sdconet.cli import main  # noqa: E402
from benchcore.atomic import atomic_write_json  # noqa: E402

wc, p = snakemake.wildcards, snakemake.params  # noqa: F821
out = Path(snakemake.output.done).parent  # noqa: F821
argv = ["train", "--config", p.cfg, "--data", p.data, "--out", str(out), "--resume", "--method", wc.method,
        "--set", f"train.seed={wc.seed}"]
argv += [x for k, v in p.sets.items() for x in ("--set", f"{k}={v}")]
if snakemake.input.lr:  # noqa: F821  (offline LR tiles: any degradation the model cannot make itself)
    argv += ["--lr-dir", snakemake.input.lr[0]]  # noqa: F821
rc = main(argv)
if rc:
    raise SystemExit(f"sdconet train failed with exit code {rc} (see the log above)")
atomic_write_json(snakemake.output.done, {"argv": argv, "checkpoint": str(out / "last.pt")})  # noqa: F821

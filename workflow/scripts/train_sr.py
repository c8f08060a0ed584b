"""Rule train_sr: a BasicSR architecture on the paired HR/LR training tiles (resumable)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from baselines.pipeline import read_config, section, sr_train_step  # noqa: E402
from benchcore.atomic import atomic_write_json  # noqa: E402

wc = snakemake.wildcards  # noqa: F821
cfg = {**section(read_config(snakemake.params.cfg), "sr", wc.sr_model), "seed": int(wc.seed)}  # noqa: F821
out = Path(snakemake.output.done).parent  # noqa: F821
res = sr_train_step(wc.sr_model, snakemake.input.pairs, out, cfg=cfg, resume=True)  # noqa: F821
atomic_write_json(snakemake.output.done, {"result": res, "model": str(out / "model.pth")})  # noqa: F821

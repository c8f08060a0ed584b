"""Rule super_resolve: every LR tile through one SR model (or interpolation), with PSNR/SSIM vs HR."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from baselines.pipeline import read_config, section, sr_step  # noqa: E402

wc, inp = snakemake.wildcards, snakemake.input  # noqa: F821
raw = read_config(snakemake.params.cfg)  # noqa: F821
ckpt = Path(inp.model[0]).parent / "model.pth" if inp.model else None
sr_step(wc.sr_model, inp.lr, snakemake.output[0], hr_dir=Path(inp.tiles) / "images", checkpoint=ckpt,  # noqa: F821
        cfg=section(raw, "sr_infer"), device=section(raw, "sr").get("device", "cpu"))

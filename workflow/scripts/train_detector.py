"""Rule train_detector: YOLO or Faster R-CNN on one pipeline's training tiles (resumable)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from baselines.pipeline import read_config, section, det_train_step  # noqa: E402
from benchcore.atomic import atomic_write_json  # noqa: E402

wc, p = snakemake.wildcards, snakemake.params  # noqa: F821
sec = "frcnn" if p.detector == "frcnn" else "yolo"
cfg = {**section(read_config(p.cfg), sec), "seed": int(wc.seed)}
out = Path(snakemake.output.done).parent  # noqa: F821
res = det_train_step(p.detector, snakemake.input.images, Path(snakemake.input.parts[0]).parent, out,  # noqa: F821
                     cfg=cfg, resume=True)
atomic_write_json(snakemake.output.done, res)  # noqa: F821

"""Rule evaluate_detector: detect on the test tiles, map to the HR grid, score, write metrics.json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

import json  # noqa: E402

from baselines.pipeline import det_eval_step, read_config, section  # noqa: E402

wc, p, inp = snakemake.wildcards, snakemake.params, snakemake.input  # noqa: F821
sec = "frcnn" if p.detector == "frcnn" else "yolo"
weights = json.loads(Path(inp.done).read_text())["weights"]
sr_metrics = Path(inp.images) / "sr_metrics.json" if p.sr else None
det_eval_step(p.detector, weights, inp.images, Path(inp.parts[0]).parent, snakemake.output.metrics,  # noqa: F821
              method=wc.method, dataset=wc.dataset, degradation=wc.degradation, seed=int(wc.seed),
              sr_metrics=sr_metrics, cfg=section(read_config(p.cfg), sec))

from benchcore.metrics.results import add_bootstrap  # noqa: E402

# 95 % CIs of AP / AP_s over test images (report: bootstrap replicates; 0 = off).
add_bootstrap(snakemake.output.metrics, Path(inp.parts[0]).parent / "test.json", n_boot=p.n_boot)  # noqa: F821

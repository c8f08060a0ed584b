"""Rule efficiency: params / FLOPs / latency of one method (compare.efficiency_runner)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from compare.efficiency_runner import measure_method, write_efficiency  # noqa: E402

e = snakemake.params.eff  # noqa: F821
for out in snakemake.output:  # noqa: F821
    method = Path(out).stem
    result = measure_method(method, snakemake.params.experiments,  # noqa: F821
                            num_classes=snakemake.params.num_classes, hr_size=e.get("hr_size", 512),  # noqa: F821
                            scale=e.get("scale", 2), preset=e.get("preset", "paper"),
                            device=e.get("device", "cpu"), warmup=e.get("warmup", 2), runs=e.get("runs", 10),
                            batch_sizes=(1, e.get("batch_size", 4)), counter=e.get("counter", "fvcore"))
    write_efficiency(out, result)
    print(f"{method}: {result['params']} {result['flops']}", flush=True)

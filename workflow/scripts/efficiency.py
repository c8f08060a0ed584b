"""Rule efficiency: params / FLOPs / latency / peak memory of every method (compare.efficiency_runner).

Each method is measured in a process of its own (measure_method_in_fresh_process: forked from benchcore.fork_server,
which has imported only torch and torchvision), pinned to this
job's threads, so that its peak memory is its own and not this process's peak so far.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (repo root)
from benchcore.smk import setup_job  # noqa: E402

setup_job(snakemake)  # noqa: F821

from compare.efficiency_runner import measure_method_in_fresh_process, write_efficiency  # noqa: E402

e = snakemake.params.eff  # schema-validated: every key present, defaults filled there  # noqa: F821
for out in snakemake.output:  # noqa: F821
    method = Path(out).stem
    result = measure_method_in_fresh_process(
        method, snakemake.params.experiments, num_classes=snakemake.params.num_classes,  # noqa: F821
        hr_size=e["hr_size"], scale=snakemake.params.scale, preset=e["preset"], device=e["device"],  # noqa: F821
        warmup=e["warmup"], runs=e["runs"], batch_sizes=(1, e["batch_size"]), counter=e["counter"],
        threads=snakemake.threads)  # noqa: F821
    write_efficiency(out, result)
    print(f"{method}: {result['params']} {result['flops']} peak {result['peak_mem_mb']:.0f} MiB "
          f"({result['peak_mem_kind']}, {result['peak_mem_process']} process)", flush=True)

"""Plan a run before making it: per rule and in total, the job count, GPU-hours and CPU-hours, and the wall time of a
local run packed onto ``--cores`` (``python -m compare.plan``; docs/plan.md).

* :mod:`compare.plan.dag`: the jobs of Snakemake's own forced dry run (rule, wildcards, threads, resources, files).
* :mod:`compare.plan.workload`: the resolved config, each job's run specification and the image counts.
* :mod:`compare.plan.costs`: the cost model (a calibration's throughputs x the workload), packing onto cores.
* :mod:`compare.calibrate`: the calibration that measures the throughputs (``python -m compare.calibrate``).
"""

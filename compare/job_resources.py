"""Per-rule cluster resources (``mem_mb``, ``runtime``) from what the jobs really used: Snakemake's benchmark files.

    python -m compare.job_resources RESULTS_DIR [--configfile FILE] [--mem-headroom 1.5] [--time-headroom 2]

Every rule with a ``benchmark:`` writes ``RESULTS_DIR/benchmarks/.../<name>.tsv`` (Snakemake's columns: ``s`` wall
seconds, ``h:m:s``, ``max_rss`` peak resident memory in MB, ...). Each file is matched to its rule through the
workflow's own forced dry run (:func:`compare.plan.dag.dry_run_jobs`, which lists every job's benchmark path), so
no table here can drift from the rules; pass the ``--configfile`` the results were made with. Per rule, the
largest ``max_rss`` and the longest ``s`` over its jobs, times a headroom and at least a floor, give the suggested
``mem_mb`` (plus the job's own Snakemake processes, see :class:`Headroom`) and ``runtime`` (minutes), printed as a
``set-resources:`` block for ``profiles/slurm/config.yaml``.

The figures are as good as the runs they come from: a demo run's jobs say nothing about paper-scale jobs
(docs/cluster.md says which numbers of the profile come from where).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from compare.report.collect import collect_job_costs


@dataclass(frozen=True)
class Headroom:
    """How measured peaks become requests: ``value * factor`` (+ ``mem_overhead_mb`` for memory) rounded up to
    ``step``, at least ``floor``.

    The benchmark file measures the rule's own code only. A SLURM job also runs two Snakemake processes: the plugin's
    job step and the rule's own, under ``srun``. Each parses the whole workflow, which imports torch; measured
    peak RSS is 742 MB each. SLURM counts them against ``--mem`` too, hence the 1500 MB overhead."""

    mem_factor: float = 1.5
    mem_overhead_mb: int = 1500
    mem_floor_mb: int = 1000
    mem_step_mb: int = 500
    time_factor: float = 2.0
    time_floor_min: int = 10  # covers the job's own Snakemake start-up, which the benchmark file does not time
    time_step_min: int = 5


def benchmark_rules(jobs: Iterable[object]) -> dict[str, str]:
    """{benchmark path below ``benchmarks/``: rule} of dry-run jobs (objects with ``rule`` and ``benchmark``)."""
    out = {}
    for job in jobs:
        path = getattr(job, "benchmark", None)
        if path and "benchmarks/" in Path(path).as_posix():
            out[Path(path).as_posix().split("benchmarks/", 1)[1]] = job.rule
    return out


def _check_results(results_dirs: Sequence[str | Path]) -> None:
    for results in results_dirs:
        if not (Path(results) / "benchmarks").is_dir():
            raise FileNotFoundError(f"{results}: no benchmarks/ folder (a results_dir of a finished run?)")


def job_costs(results_dirs: Sequence[str | Path], rule_of: Mapping[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """(one row per benchmark file: rule, wall_s, max_rss_mb, path; the files no rule of the workflow writes)."""
    _check_results(results_dirs)
    costs = pd.concat([collect_job_costs(results) for results in results_dirs], ignore_index=True)
    costs["rule"] = costs["path"].str.split("benchmarks/", n=1).str[1].map(rule_of)
    unmatched = sorted(costs.loc[costs["rule"].isna(), "path"])
    return costs.dropna(subset=["rule"])[["rule", "wall_s", "max_rss_mb", "path"]], unmatched


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def suggest(costs: pd.DataFrame, headroom: Headroom = Headroom()) -> pd.DataFrame:
    """Per rule (index): ``jobs``, the measured ``max_rss_mb`` and ``max_wall_s`` (maxima over its jobs) and the
    suggested ``mem_mb`` and ``runtime`` (minutes). A job too short for Snakemake to sample its memory
    (``max_rss`` NA) gets the overhead (and the floor) only."""
    per_rule = costs.groupby("rule").agg(jobs=("path", "size"), max_rss_mb=("max_rss_mb", "max"),
                                         max_wall_s=("wall_s", "max"))
    h = headroom
    per_rule["mem_mb"] = [max(h.mem_floor_mb, _round_up((rss if pd.notna(rss) else 0) * h.mem_factor
                                                        + h.mem_overhead_mb, h.mem_step_mb))
                          for rss in per_rule["max_rss_mb"]]
    per_rule["runtime"] = [max(h.time_floor_min, _round_up(s * h.time_factor / 60, h.time_step_min))
                           for s in per_rule["max_wall_s"]]
    return per_rule


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def to_yaml(table: pd.DataFrame, headroom: Headroom = Headroom(), source: str = "") -> str:
    """The suggestions as a profile ``set-resources:`` block, each value commented with what it comes from."""
    h = headroom
    lines = [f"# from {source}: peak max_rss x{h.mem_factor:g} + {h.mem_overhead_mb} MB for the job's Snakemake "
             f"processes (>= {h.mem_floor_mb} MB), longest wall time x{h.time_factor:g} (>= {h.time_floor_min} min)",
             "set-resources:"]
    for row in table.itertuples():
        rss = f"{row.max_rss_mb:.0f} MB" if pd.notna(row.max_rss_mb) else "not sampled"
        lines += [f"  {row.Index}:",
                  f"    mem_mb: {int(row.mem_mb)}  # peak {rss} over {int(row.jobs)} job(s)",
                  f"    runtime: {int(row.runtime)}  # longest {_hms(row.max_wall_s)}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from compare.plan.dag import dry_run_jobs  # noqa: PLC0415  (runs snakemake)

    ap = argparse.ArgumentParser(prog="python -m compare.job_resources", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results_dir(s) of finished runs (their benchmarks/ folders)")
    ap.add_argument("--configfile", help="the config the results were made with (default: the demo config)")
    ap.add_argument("--mem-headroom", type=float, default=Headroom.mem_factor)
    ap.add_argument("--time-headroom", type=float, default=Headroom.time_factor)
    ap.add_argument("--overhead-mb", type=int, default=Headroom.mem_overhead_mb,
                    help="added to every memory figure: the job's own Snakemake processes")
    ap.add_argument("--min-mem-mb", type=int, default=Headroom.mem_floor_mb)
    ap.add_argument("--min-runtime", type=int, default=Headroom.time_floor_min, help="minutes")
    args = ap.parse_args(argv)
    headroom = Headroom(mem_factor=args.mem_headroom, mem_overhead_mb=args.overhead_mb, mem_floor_mb=args.min_mem_mb,
                        time_factor=args.time_headroom, time_floor_min=args.min_runtime)
    try:
        _check_results(args.results)
        jobs, _ = dry_run_jobs(args.configfile, config=[f"results_dir={Path(args.results[0]).resolve()}"])
        costs, unmatched = job_costs(args.results, benchmark_rules(jobs))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if unmatched:
        print(f"warning: {len(unmatched)} benchmark file(s) match no job of the workflow under "
              f"{args.configfile or 'the default config'} (pass the --configfile of that run), e.g. {unmatched[0]}",
              file=sys.stderr)
    if costs.empty:
        print("error: no benchmark file matched a rule of the workflow", file=sys.stderr)
        return 1
    print(to_yaml(suggest(costs, headroom), headroom, source=" ".join(map(str, args.results))), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Why a workflow job failed on SLURM, in one line that names the rule and the resource to raise.

snakemake-executor-plugin-slurm 2.8 reports a job killed at its limit only as ``SLURM status is: 'TIMEOUT'``
(or ``'FAILED'`` after a memory kill), and only in ``sacct`` mode. The reason is in the SLURM log of the job,
which the plugin keeps for failed jobs under ``.snakemake/slurm_logs/rule_<name>/[<wildcards>/]<slurm id>.log``.
It holds slurmstepd's messages and the job's own Snakemake rule block, which lists its ``resources:``.
The Snakemake log of the run records which job went to which SLURM id and log:
``Job 3 has been submitted with SLURM jobid 8 (log: /abs/.snakemake/slurm_logs/rule_x/8.log).``

:func:`explain_failures` reads both and returns one line per job that SLURM killed. The workflow calls it from
its ``onerror`` handler (``workflow/rules/slurm_errors.smk``).

    rule train_sdconet (job 12, SLURM job 34): SLURM killed it at its time limit (runtime=1 min); raise runtime in
    the profile's set-resources, e.g. train_sdconet: {runtime: 120}
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# "Job 3 has been submitted with SLURM jobid 8 (log: /x/.snakemake/slurm_logs/rule_train/8.log)."
_SUBMITTED = re.compile(r"Job (?P<job>\d+) has been submitted with SLURM jobid (?P<slurm>\S+) \(log: (?P<log>.+)\)\.")
# slurmstepd's words. Time: "*** JOB 2 ON vm CANCELLED AT 2026-12-06T12:37:10 DUE TO TIME LIMIT ***".
_TIME = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT")
# Memory without cgroups (jobacct_gather OverMemoryKill): "StepId=3.0 exceeded memory limit (565100544 > 314572800)";
# with cgroups: "Detected 1 oom_kill event in StepId=3.batch. Some of the step tasks have been OOM Killed."
_MEM_BYTES = re.compile(r"exceeded memory limit \((?P<used>\d+) > (?P<limit>\d+)\)")
_MEM = re.compile(r"Exceeded (?:job|step) memory limit|oom[-_]kill event|OOM Killed|out of memory", re.IGNORECASE)
_CANCELLED = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+(?: DUE TO (?P<why>[A-Z ]+?))? \*\*\*")
# the job's rule block: "    resources: tmpdir=/tmp, mem_mb=300, mem=300 MB, ..., runtime=1"
_RESOURCES = re.compile(r"^\s*resources: (?P<list>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Submission:
    """One SLURM submission of a workflow job, as the Snakemake log records it."""

    job: int  # Snakemake's job id in this run (a retry keeps it)
    slurm_id: str
    log: Path  # the SLURM log file of this submission
    rule: str


@dataclass(frozen=True)
class Diagnosis:
    """What killed a job: ``kind`` is ``time``, ``memory``, ``cancelled`` (with ``why``: scancel, preemption, node
    failure, ...); ``used_mb`` is the peak memory slurmstepd measured (memory kills without cgroups only)."""

    kind: str
    why: str = ""
    used_mb: float | None = None


def submissions(snakemake_log: str) -> list[Submission]:
    """Every submission in the text of a Snakemake log, in order. The rule comes from the log path's
    ``rule_<name>`` (or ``group_<name>``) folder."""
    out = []
    for m in _SUBMITTED.finditer(snakemake_log):
        log = Path(m["log"])
        folder = next((p for p in reversed(log.parts[:-1]) if p.startswith(("rule_", "group_"))), "rule_?")
        out.append(Submission(int(m["job"]), m["slurm"], log, folder.split("_", 1)[1]))
    return out


def diagnose(slurm_log: str) -> Diagnosis | None:
    """What SLURM did to the job whose log text this is; None when SLURM did not kill it (the job's own error)."""
    if _TIME.search(slurm_log):
        return Diagnosis("time")
    used = _MEM_BYTES.search(slurm_log)
    if used:
        return Diagnosis("memory", used_mb=int(used["used"]) / 2**20)
    if _MEM.search(slurm_log):
        return Diagnosis("memory")
    cancelled = _CANCELLED.search(slurm_log)
    if cancelled:
        return Diagnosis("cancelled", why=(cancelled["why"] or "scancel").lower())
    return None


def _pairs(listing: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in listing.split(", ") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}


def requested_resources(slurm_log: str) -> dict[str, str]:
    """The ``resources:`` of the job's Snakemake rule block in its SLURM log (the last one: the job step's),
    as strings; empty when the log has none (a job killed before its Snakemake printed it)."""
    found = _RESOURCES.findall(slurm_log)
    return _pairs(found[-1]) if found else {}


def job_resources(snakemake_log: str) -> dict[int, dict[str, str]]:
    """{job id: its ``resources:``} from the rule blocks of the run's own Snakemake log (``jobid:`` comes first)."""
    out: dict[int, dict[str, str]] = {}
    job = None
    for line in snakemake_log.splitlines():
        stripped = line.strip()
        if stripped.startswith("jobid: ") and stripped[7:].isdigit():
            job = int(stripped[7:])
        elif stripped.startswith("resources: ") and job is not None:
            out[job] = _pairs(stripped[len("resources: "):])
            job = None
    return out


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def explain(sub: Submission, diag: Diagnosis, resources: dict[str, str]) -> str:
    """The one line for a killed job: rule, job ids, what SLURM did and which resource to raise, with a value."""
    head = f"rule {sub.rule} (job {sub.job}, SLURM job {sub.slurm_id})"
    if diag.kind == "time":
        runtime = resources.get("runtime")
        had = f" (runtime={runtime} min)" if runtime else ""
        new = _round_up(2 * int(runtime), 10) if runtime and runtime.isdigit() else 120
        return (f"{head}: SLURM killed it at its time limit{had}; raise runtime in the profile's set-resources, "
                f"e.g. {sub.rule}: {{runtime: {new}}}")
    if diag.kind == "memory":
        mem = resources.get("mem_mb")
        used = f"; it reached {diag.used_mb:.0f} MB" if diag.used_mb else ""
        had = f" (mem_mb={mem}{used})" if mem else (f" ({used[2:]})" if used else "")
        base = max(2 * int(mem) if mem and mem.isdigit() else 0, 1.5 * (diag.used_mb or 0), 1000)
        return (f"{head}: SLURM killed it for exceeding its memory request{had}; raise mem_mb in the profile's "
                f"set-resources, e.g. {sub.rule}: {{mem_mb: {_round_up(base, 500)}}}")
    return f"{head}: SLURM cancelled it ({diag.why}), not a resource limit; rerun the workflow to resume it"


def explain_failures(snakemake_logs: str | Path | Iterable[str | Path]) -> list[str]:
    """One line per job of the run that SLURM killed (time, memory) or cancelled, from the run's Snakemake log(s):
    the last submission of each job whose SLURM log still exists (the plugin deletes those of successful jobs).
    The requested resources come from the job's SLURM log, else from its rule block in the Snakemake log.
    A log file that does not exist is skipped (a run that failed before its log was opened)."""
    paths = [snakemake_logs] if isinstance(snakemake_logs, (str, Path)) else list(snakemake_logs)
    last: dict[int, Submission] = {}
    resources: dict[int, dict[str, str]] = {}
    for path in map(Path, paths):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            resources.update(job_resources(text))
            for sub in submissions(text):
                last[sub.job] = sub
    lines = []
    for sub in last.values():
        if not sub.log.is_file():
            continue
        text = sub.log.read_text(encoding="utf-8", errors="replace")
        diag = diagnose(text)
        if diag is not None:
            lines.append(explain(sub, diag, requested_resources(text) or resources.get(sub.job, {})))
    return lines

"""The jobs of a configuration, exactly as Snakemake schedules them: a forced dry run, parsed.

``snakemake all -n --forceall --cores N --configfile FILE`` prints every job (rule, wildcards, threads, resources,
input and output files) and its own per-rule ``Job stats`` table; :func:`dry_run_jobs` returns both, so the plan's
job counts are Snakemake's and the test can check that they agree.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[2]
_HEAD = re.compile(r"^(local)?rule (\w+):$")


@dataclass
class Job:
    """One job of the dry run: ``rule``, ``jobid``, ``wildcards`` {name: value}, ``threads``, ``resources``
    {name: value}, ``inputs`` / ``outputs`` (paths as printed), ``local`` (a localrule: runs in Snakemake's
    own process), ``benchmark`` (its ``benchmark:`` file, where Snakemake records what it cost)."""

    rule: str
    jobid: int = -1
    wildcards: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    local: bool = False
    benchmark: str | None = None

    @property
    def gpu(self) -> bool:
        """Whether the rule declares a GPU (``resources: gpu=N``, N > 0)."""
        try:
            return float(self.resources.get("gpu", 0)) > 0
        except (TypeError, ValueError):
            return False


def _value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(", "):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def parse_dry_run(text: str) -> tuple[list[Job], dict[str, int]]:
    """(jobs, Snakemake's ``Job stats`` {rule: count}) of a dry run's printed output."""
    jobs: list[Job] = []
    stats: dict[str, int] = {}
    cur: Job | None = None
    in_stats = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("Job stats:"):
            in_stats, stats = True, {}  # printed twice; the last table wins (identical)
            cur = None
            continue
        if in_stats:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
                stats[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                in_stats = False
            continue
        m = _HEAD.match(line)
        if m:
            cur = Job(rule=m.group(2), local=bool(m.group(1)))
            jobs.append(cur)
            continue
        if cur is None or not line.startswith("    ") or ": " not in line:
            if not line.startswith("    "):
                cur = None if not line.startswith("[") else cur
            continue
        key, val = line.strip().split(": ", 1)
        if key == "jobid":
            cur.jobid = int(val)
        elif key == "wildcards":
            cur.wildcards = _pairs(val)
        elif key == "threads":
            cur.threads = int(val)
        elif key == "resources":
            cur.resources = {k: _value(v) for k, v in _pairs(val).items()}
        elif key == "benchmark":
            cur.benchmark = val
        elif key == "input":
            cur.inputs = val.split(", ")
        elif key == "output":
            cur.outputs = val.split(", ")
    return jobs, stats


def dry_run_command(configfile: str | None, cores: int, config: Sequence[str] = (), target: str = "all",
                    snakemake: str | None = None) -> list[str]:
    """The forced dry run's command line (run in the repository root)."""
    exe = snakemake or str(Path(sys.executable).with_name("snakemake"))
    cmd = [exe, target, "-n", "--forceall", "--cores", str(cores)]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    if config:
        cmd += ["--config", *config]
    return cmd


def dry_run_jobs(configfile: str | None, cores: int = 1, config: Sequence[str] = (), target: str = "all",
                 cwd: str | Path = REPO) -> tuple[list[Job], dict[str, int]]:
    """Run the forced dry run and parse it; raise ``RuntimeError`` with Snakemake's last lines when it fails."""
    cmd = dry_run_command(configfile, cores, config, target)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    text = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError(f"snakemake dry run failed ({' '.join(cmd)}):\n{tail}")
    jobs, stats = parse_dry_run(text)
    if not stats:
        raise RuntimeError(f"no 'Job stats' table in the dry run's output ({' '.join(cmd)})")
    return jobs, stats


def dependencies(jobs: Sequence[Job]) -> dict[int, set[int]]:
    """{jobid: jobids it needs}: an input path that is another job's output (files, or folders and what is under
    them)."""
    producer = {out: j.jobid for j in jobs for out in j.outputs}
    deps: dict[int, set[int]] = {}
    for j in jobs:
        need = set()
        for path in j.inputs:
            p = path
            while p and p not in producer and "/" in p:  # a file inside a produced directory
                p = p.rsplit("/", 1)[0]
            if p in producer and producer[p] != j.jobid:
                need.add(producer[p])
        deps[j.jobid] = need
    return deps

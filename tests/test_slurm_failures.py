"""benchcore.slurm_failures: one line per SLURM-killed job, from logs as Slurm 22.05 and the SLURM plugin 2.8 write
them (the excerpts below are copied from real runs on the local one-node SLURM, profiles/slurm/local)."""
from __future__ import annotations

from pathlib import Path

from benchcore.slurm_failures import Diagnosis, Submission, diagnose, explain, explain_failures, job_resources
from benchcore.slurm_failures import requested_resources, submissions

TIME_LOG = """\
[Sun Dec  6 12:35:50 2026]
rule sleepy:
    output: a.txt
    jobid: 0
    reason: Forced execution
    resources: tmpdir=<TBD>, disk_mb=50000, disk=50 GB, disk_mib=47684, mem_mb=200, mem=200 MB, mem_mib=191, runtime=1
srun: cluster configuration lacks support for cpu binding
[Sun Dec  6 12:35:53 2026]
localrule sleepy:
    output: a.txt
    jobid: 0
    reason: Forced execution
    resources: tmpdir=/tmp, disk_mb=50000, disk=50 GB, disk_mib=47684, mem_mb=200, mem=200 MB, mem_mib=191, runtime=1
slurmstepd-vm: error: *** JOB 2 ON vm CANCELLED AT 2026-12-06T12:37:10 DUE TO TIME LIMIT ***
slurmstepd-vm: error: *** STEP 2.0 ON vm CANCELLED AT 2026-12-06T12:37:10 DUE TO TIME LIMIT ***
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
"""

MEM_LOG = """\
localrule hog:
    output: b.txt
    jobid: 0
    reason: Forced execution
    resources: tmpdir=/tmp, disk_mb=50000, disk=50 GB, disk_mib=47684, mem_mb=300, mem=300 MB, mem_mib=287, runtime=5
slurmstepd-vm: error: StepId=3.0 exceeded memory limit (565100544 > 314572800), being killed
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
slurmstepd-vm: error: *** STEP 3.0 ON vm CANCELLED AT 2026-12-06T12:36:01 ***
slurmstepd-vm: error: Exceeded job memory limit
srun: error: vm: task 0: Killed
"""

CGROUP_OOM = ("slurmstepd: error: Detected 1 oom_kill event in StepId=77.batch. Some of the step tasks have been "
              "OOM Killed.\n")
SCANCEL_LOG = "slurmstepd-vm: error: *** JOB 12 ON vm CANCELLED AT 2026-12-06T13:01:02 ***\n"
OWN_ERROR = "Traceback (most recent call last):\nValueError: bad config\n"


def test_diagnose_reads_slurmstepd_messages():
    assert diagnose(TIME_LOG) == Diagnosis("time")
    mem = diagnose(MEM_LOG)
    assert mem.kind == "memory" and round(mem.used_mb) == 539
    assert diagnose(CGROUP_OOM) == Diagnosis("memory")
    assert diagnose(SCANCEL_LOG) == Diagnosis("cancelled", why="scancel")
    assert diagnose("*** JOB 5 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO PREEMPTION ***") == \
        Diagnosis("cancelled", why="preemption")
    assert diagnose(OWN_ERROR) is None


def test_requested_resources_from_the_rule_block():
    res = requested_resources(TIME_LOG)
    assert res["runtime"] == "1" and res["mem_mb"] == "200" and res["tmpdir"] == "/tmp"  # the job step's block
    assert requested_resources(OWN_ERROR) == {}


def test_submissions_parse_the_plugin_lines():
    log = ("Job 3 has been submitted with SLURM jobid 1 (log: /w/.snakemake/slurm_logs/rule_gpuok/1.log).\n"
           "Job 12 has been submitted with SLURM jobid 34 (log: /w/.snakemake/slurm_logs/rule_train_sdconet/"
           "dataset_demo/34.log).\n")
    assert submissions(log) == [
        Submission(3, "1", Path("/w/.snakemake/slurm_logs/rule_gpuok/1.log"), "gpuok"),
        Submission(12, "34", Path("/w/.snakemake/slurm_logs/rule_train_sdconet/dataset_demo/34.log"), "train_sdconet"),
    ]


def test_explain_names_rule_resource_and_a_value():
    sub = Submission(12, "34", Path("x.log"), "train_sdconet")
    assert explain(sub, Diagnosis("time"), {"runtime": "1"}) == (
        "rule train_sdconet (job 12, SLURM job 34): SLURM killed it at its time limit (runtime=1 min); raise runtime "
        "in the profile's set-resources, e.g. train_sdconet: {runtime: 10}")
    line = explain(sub, Diagnosis("memory", used_mb=539.0), {"mem_mb": "300"})
    assert line == ("rule train_sdconet (job 12, SLURM job 34): SLURM killed it for exceeding its memory request "
                    "(mem_mb=300; it reached 539 MB); raise mem_mb in the profile's set-resources, e.g. "
                    "train_sdconet: {mem_mb: 1000}")
    assert "mem_mb: 16000" in explain(sub, Diagnosis("memory"), {"mem_mb": "8000"})
    assert "(scancel), not a resource limit" in explain(sub, Diagnosis("cancelled", why="scancel"), {})


def test_explain_failures_uses_the_last_attempt_of_each_job(tmp_path):
    logs = tmp_path / ".snakemake" / "slurm_logs"
    (logs / "rule_sleepy").mkdir(parents=True)
    (logs / "rule_hog").mkdir()
    (logs / "rule_sleepy" / "2.log").write_text(TIME_LOG)
    (logs / "rule_sleepy" / "5.log").write_text(SCANCEL_LOG)
    (logs / "rule_hog" / "3.log").write_text(MEM_LOG)
    main = tmp_path / "run.snakemake.log"
    main.write_text(
        f"Job 1 has been submitted with SLURM jobid 2 (log: {logs}/rule_sleepy/2.log).\n"
        f"Job 2 has been submitted with SLURM jobid 3 (log: {logs}/rule_hog/3.log).\n"
        f"Job 4 has been submitted with SLURM jobid 4 (log: {logs}/rule_ok/4.log).\n"  # succeeded: log deleted
        f"Job 2 has been submitted with SLURM jobid 6 (log: {logs}/rule_hog/6.log).\n")  # retry of 2, succeeded
    # job 2's retry succeeded (its log is gone): only job 1 is reported
    assert explain_failures([str(main)]) == [
        "rule sleepy (job 1, SLURM job 2): SLURM killed it at its time limit (runtime=1 min); raise runtime in the "
        "profile's set-resources, e.g. sleepy: {runtime: 10}"]
    assert explain_failures(tmp_path / "missing.log") == []


def test_a_job_killed_before_its_rule_block_takes_resources_from_the_run_log(tmp_path):
    """A memory request below what Snakemake itself needs: the job dies while its Snakemake parses the workflow,
    so its SLURM log has no resources line (a real case: convert at mem_mb=300)."""
    slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_convert" / "demo" / "2.log"
    slurm_log.parent.mkdir(parents=True)
    slurm_log.write_text("slurmstepd-vm: error: StepId=2.0 exceeded memory limit (615514112 > 314572800), being "
                         "killed\nslurmstepd-vm: error: Exceeded job memory limit\n")
    run_log = tmp_path / "run.log"
    run_log.write_text("[Sun Dec  6 13:40:01 2026]\nrule convert:\n    output: results/data/demo/coco.json\n"
                       "    jobid: 0\n    reason: Missing output files\n    wildcards: dataset=demo\n"
                       "    resources: tmpdir=<TBD>, mem_mb=300, mem=300 MB, mem_mib=287, runtime=30\n"
                       f"Job 0 has been submitted with SLURM jobid 2 (log: {slurm_log}).\n")
    assert job_resources(run_log.read_text()) == {0: {"tmpdir": "<TBD>", "mem_mb": "300", "mem": "300 MB",
                                                      "mem_mib": "287", "runtime": "30"}}
    [line] = explain_failures(run_log)
    assert line.startswith("rule convert (job 0, SLURM job 2): SLURM killed it for exceeding its memory request "
                           "(mem_mb=300; it reached 587 MB)")

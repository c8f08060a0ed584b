"""Fault behaviour of cluster runs, through a real SLURM (profiles/slurm with snakemake-executor-plugin-slurm).

The ``slurm`` tests need a SLURM whose node takes jobs, e.g. the throw-away one-node SLURM of
``sudo profiles/slurm/local/start.sh``. Without one they skip, and ``pytest -q`` stays fast. ``.ci/slurm_demo.sh``
runs them with ``-m slurm`` while its SLURM is up (about 2 min on 2 cores):

* A training job cancelled with scancel in the middle of an epoch is resubmitted (``--retries 1``). It resumes
  from its last epoch checkpoint and ends with the same weights as an uninterrupted local run of the same rule.
  The demo data comes from $SDCONET_SLURM_REFERENCE (a finished default demo; .ci/slurm_demo.sh sets it), else a
  local data stage makes it.
* A job over its time limit, and one over its memory request, each fail with a line that names the rule and the
  resource to raise (``workflow/rules/slurm_errors.smk`` -> ``benchcore.slurm_failures``).

The last test needs no SLURM. It checks that the network-using steps are local rules, which run on the submit
host: a compute node may have no network.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchcore.slurm_failures import diagnose, submissions

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = str(REPO / "profiles" / "slurm")
# The plugin polls every init seconds, growing by 10 s while nothing finishes; start small.
FAST = ["--slurm-init-seconds-before-status-checks", "2"]
EPOCHS = 5  # room to cancel after epoch 1 and resume; the demo config's other training settings are kept


def _slurm_ready() -> str:
    """Empty when a SLURM node takes jobs, else why not."""
    start = "start one with sudo profiles/slurm/local/start.sh"
    if shutil.which("sinfo") is None:
        return f"no SLURM here (sinfo not found); {start}"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return f"no SLURM controller answers (sinfo timed out); {start}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return f"no SLURM controller answers (sinfo: {last}); {start}"
    if not re.search(r"^(idle|mix)", out.stdout, re.MULTILINE):
        return f"no idle SLURM node (sinfo says {out.stdout.split()})"
    return ""


_WHY = _slurm_ready()
needs_slurm = pytest.mark.skipif(bool(_WHY), reason=_WHY or "SLURM ready")


def _start(cmd: list[str], **kw) -> subprocess.Popen:
    """Popen whose SIGINT works even when this pytest runs in the background of a script, which ignores SIGINT
    for it and its children. On SIGINT the SLURM plugin cancels its jobs."""
    return subprocess.Popen(cmd, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a snakemake that is still running: SIGINT (its SLURM jobs are cancelled), then SIGKILL after 60 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- (b) resource limits: a tiny workflow with the project's onerror handler ------------------------------------
LIMITS_SNAKEFILE = f"""\
include: "{REPO}/workflow/rules/slurm_errors.smk"


rule all:
    input:
        "over_time.txt",
        "over_memory.txt",
        "witness.txt",


rule over_time:
    output:
        "over_time.txt",
    resources:
        runtime=1,
        mem_mb=500,
    shell:
        "sleep 300 && touch {{output}}"


rule over_memory:
    output:
        "over_memory.txt",
    resources:
        runtime=5,
        mem_mb=400,
    shell:
        "python3 -c 'import time; b = [bytearray(50 << 20) for _ in range(30) if not time.sleep(0.1)]' && touch {{output}}"


# Succeeds as soon as over_time has left the queue, so that the plugin sees a success in the same status check as
# over_time's failure. A success resets the plugin's polling interval; a failure lets it grow by 10 s. Snakemake then
# exits about 50 s sooner, instead of finishing the last interval of about 52 s first.
rule witness:
    output:
        "witness.txt",
    resources:
        runtime=5,
        mem_mb=300,
    shell:
        "sleep 5; while squeue -h -o %k | grep -qx rule_over_time; do sleep 0.5; done; touch {{output}}"
"""


@pytest.fixture(scope="module")
def limits_run(tmp_path_factory):
    """Starts the limits workflow in the background; ``.result()`` waits for it and returns (rc, output).
    When the limit tests are selected too, test (a) starts it first, so that the minute-long time limit runs while
    (a) trains."""
    wd = tmp_path_factory.mktemp("limits")
    (wd / "Snakefile").write_text(LIMITS_SNAKEFILE)
    out = open(wd / "run.log", "w")
    proc = _start([SNAKEMAKE, "--profile", PROFILE, "--jobs", "3", "--retries", "0", "--keep-going", *FAST],
                  cwd=wd, stdout=out, stderr=subprocess.STDOUT, text=True)

    class Run:
        def result(self):
            try:
                rc = proc.wait(timeout=400)
            finally:
                if proc.poll() is None:
                    proc.kill()
                out.close()
            return rc, (wd / "run.log").read_text()

    run = Run()
    yield run
    _stop(proc)


# ---- (a) scancel mid-epoch, retry, resume --------------------------------------------------------------------------
def _smk(wd: Path, target: Path) -> list[str]:
    """Snakemake on the project's workflow in working dir ``wd`` (its results, logs and .snakemake stay there)."""
    return [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(wd), str(target.relative_to(wd)),
            "--configfile", str(wd / "config.yaml")]


def _two_workdirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(reference working dir, SLURM working dir, the run folder below either), both holding the demo's data and
    a config: the default demo config as it is now, SDCoNet only, EPOCHS epochs. The data is copied from
    $SDCONET_SLURM_REFERENCE (the results_dir of a finished default demo; .ci/slurm_demo.sh sets it) when that has
    it, else made here by a local run."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(results_dir="results", methods=["sdconet"])
    cfg["sdconet"]["set"] = {**(cfg["sdconet"].get("set") or {}), "train.epochs": EPOCHS}
    ds = next(iter(cfg["datasets"]))
    deg = cfg.get("main_degradation") or next(iter(cfg["degradations"]))
    run = Path("results", ds, deg, "sdconet", f"seed{cfg['seeds'][0]}")
    ref_wd, slurm_wd = tmp_path / "reference", tmp_path / "slurm"
    for wd in (ref_wd, slurm_wd):
        wd.mkdir()
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    data = Path(os.environ.get("SDCONET_SLURM_REFERENCE", "none"), "data", ds)
    if not (data / "partition").is_dir():  # no finished demo to copy from: its data stage, locally
        local = subprocess.run([*_smk(ref_wd, ref_wd / run / "run_spec.json"), "--cores", "2"], capture_output=True,
                               text=True)
        assert local.returncode == 0, local.stderr[-3000:]
        data = ref_wd / "results" / "data" / ds
    for wd in (ref_wd, slurm_wd):
        if not (wd / "results" / "data" / ds).is_dir():
            shutil.copytree(data, wd / "results" / "data" / ds)  # copy2 keeps mtimes: nothing upstream reruns
    return ref_wd, slurm_wd, run


def _state_dict(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.slurm
@pytest.mark.timeout(600)
@needs_slurm
def test_cancelled_training_is_resubmitted_and_resumes(tmp_path, request):
    import torch

    if any("limit_failure" in item.name for item in request.session.items):
        request.getfixturevalue("limits_run")  # start the limit tests' workflow now: it runs while this one trains
    ref_wd, wd, run = _two_workdirs(tmp_path)
    target = wd / run / "train" / "complete.json"
    train = target.parent
    # the uninterrupted reference: the same rule, locally, beside the SLURM run (one thread each)
    ref_log = ref_wd / "local.log"
    log = wd / "slurm.log"
    with open(ref_log, "w") as ref_fh, open(log, "w") as fh:
        reference = _start([*_smk(ref_wd, ref_wd / run / "train" / "complete.json"), "--cores", "1"],
                           stdout=ref_fh, stderr=subprocess.STDOUT)
        proc = _start([*_smk(wd, target), "--profile", PROFILE, "--jobs", "1", "--retries", "1", *FAST], cwd=wd,
                      stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 300
            # cancel once epoch 1's checkpoint is written, i.e. in the middle of epoch 2 (keep_last leaves one file)
            while not [p for p in train.glob("epoch_*.pt") if int(p.stem.split("_")[1]) >= 1]:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.time() < deadline, "no epoch checkpoint in 300 s"
                time.sleep(0.2)
            time.sleep(0.5)
            first = [s for s in submissions(log.read_text()) if s.rule == "train_sdconet"]
            assert first, log.read_text()[-3000:]
            subprocess.run(["scancel", first[-1].slurm_id], check=True)
            rc = proc.wait(timeout=400)
            ref_rc = reference.wait(timeout=400)
        finally:
            _stop(proc)
            _stop(reference)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert ref_rc == 0, ref_log.read_text()[-3000:]

    subs = [s for s in submissions(text) if s.rule == "train_sdconet"]
    assert len(subs) == 2 and subs[0].job == subs[1].job, text  # one job, submitted twice
    assert diagnose(subs[0].log.read_text()).kind == "cancelled"  # the first attempt's SLURM log (kept: it failed)
    done = json.loads((train / "complete.json").read_text())
    assert 0 < done["epochs_run"] < EPOCHS, done  # the retry ran only the epochs after its checkpoint
    rule_log = wd / "logs" / "sdconet" / run.relative_to("results") / "train.log"
    first_epoch = int(re.search(r"epoch (\d+): ", rule_log.read_text())[1])  # the retry's log (it rewrites it)
    assert first_epoch == EPOCHS - done["epochs_run"] > 0
    lines = [json.loads(ln) for ln in (train / "train_log.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == list(range(EPOCHS))
    ref, got = _state_dict(ref_wd / run / "train" / "last.pt"), _state_dict(train / "last.pt")
    assert got.keys() == ref.keys()
    differ = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"


# ---- (b) the limits ------------------------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.timeout(600)
@needs_slurm
def test_time_limit_failure_names_rule_and_runtime(limits_run):
    rc, text = limits_run.result()
    assert rc != 0
    line = re.search(r"^rule over_time \(job \d+, SLURM job \d+\): .*$", text, re.MULTILINE)
    assert line, text[-4000:]
    assert "SLURM killed it at its time limit (runtime=1 min); raise runtime in the profile's set-resources, " \
           "e.g. over_time: {runtime: 10}" in line[0]


@pytest.mark.slurm
@pytest.mark.timeout(600)
@needs_slurm
def test_memory_limit_failure_names_rule_and_mem_mb(limits_run):
    rc, text = limits_run.result()
    assert rc != 0
    line = re.search(r"^rule over_memory \(job \d+, SLURM job \d+\): .*$", text, re.MULTILINE)
    assert line, text[-4000:]
    assert "SLURM killed it for exceeding its memory request (mem_mb=400; it reached" in line[0]
    assert "raise mem_mb in the profile's set-resources, e.g. over_memory: {mem_mb:" in line[0]


# ---- (c) network steps are local rules (no SLURM needed) ------------------------------------------------------------
@pytest.fixture(scope="module")
def local_rules():
    """The workflow's local rules, read through Snakemake's API in a fresh process (it changes global state)."""
    code = ("from pathlib import Path\n"
            "from snakemake.api import SnakemakeApi\n"
            "from snakemake.settings.types import (ConfigSettings, DeploymentSettings, OutputSettings,\n"
            "    ResourceSettings, StorageSettings, WorkflowSettings)\n"
            "with SnakemakeApi(OutputSettings()) as api:\n"
            "    wf = api.workflow(snakefile=Path('Snakefile'), resource_settings=ResourceSettings(),\n"
            "        config_settings=ConfigSettings(), storage_settings=StorageSettings(),\n"
            "        workflow_settings=WorkflowSettings(), deployment_settings=DeploymentSettings())\n"
            "    w = wf._workflow  # no public accessor for a rule's local status in Snakemake 9\n"
            "    print(' '.join(sorted(r.name for r in w.rules if r.name in w._localrules or r.norun)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split("\n")[-2].split())


def test_weight_staging_is_a_local_rule(local_rules):
    assert {"stage_weights", "run_spec", "sr_run_spec"} <= local_rules
    assert "train_sdconet" not in local_rules  # the check itself sees submitted rules as such


def test_dataset_fetch_is_a_local_rule(local_rules):
    assert "fetch_raw" in local_rules

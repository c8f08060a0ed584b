#!/usr/bin/env bash
# CI stage "cluster execution": the SLURM profile on a real, throw-away, one-node SLURM (docs/cluster.md).
#   .ci/slurm_demo.sh [REFERENCE_RESULTS]     # default: results, the finished default demo of .ci/run
# Needs root: it starts SLURM with profiles/slurm/local/start.sh, installing the packages if needed, and stops it
# on exit. It expects .venv to exist.
#  1. It runs a reduced demo DAG through `snakemake --profile profiles/slurm`: the data stage, one SDCoNet row and one
#     cheap baseline, up to their metrics.json. The run uses its own working directory, results_slurm/, for its
#     results, logs and .snakemake.
#  2. It checks that every job of a non-local rule went through sbatch, and that both methods' metrics and
#     detections equal the reference run's (same config, seeds and threads).
#  3. Beside the demo, it runs the fault tests: pytest -m slurm tests/test_slurm_faults.py (scancel then resume,
#     time and memory limits).
# It prints the stage's wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
REF=${1:-results}
WORK=results_slurm
METHODS=(sdconet_no_sr frcnn_lr)  # one SDCoNet row and one baseline, the cheapest of the default demo
PY=.venv/bin/python
SMK=.venv/bin/snakemake

# What the default config names (the demo's settings change; nothing below hard-codes them).
read -r DS DEG SEED < <($PY - <<'EOF'
import yaml
c = yaml.safe_load(open("config/config.yaml"))
print(next(iter(c["datasets"])), c.get("main_degradation") or next(iter(c["degradations"])), c["seeds"][0])
EOF
)
targets() { for m in "${METHODS[@]}"; do echo "$1/$DS/$DEG/$m/seed$SEED/metrics.json"; done; }
methods_cfg="methods=[$(IFS=,; echo "${METHODS[*]}")]"

echo "== reference: $REF (the local run of the same config) =="
for t in $(targets "$REF"); do [ -f "$t" ] || { echo "missing $t: run the default demo first" >&2; exit 1; }; done
# shellcheck disable=SC2046
if ! $SMK -n $(targets "$REF") --configfile config/config.yaml --config "results_dir=$REF" "$methods_cfg" 2>&1 \
    | grep -q "Nothing to be done"; then
  echo "$REF is out of date for ${METHODS[*]} (snakemake -n would rerun jobs): run the default demo first" >&2
  exit 1
fi

echo "== local SLURM =="
faults_pid=""
cleanup() {
  # The fault tests' own process group: pytest and the snakemake runs it started (stop.sh cancels their jobs).
  [ -z "$faults_pid" ] || kill -- "-$faults_pid" 2>/dev/null || true
  profiles/slurm/local/stop.sh
}
trap cleanup EXIT
profiles/slurm/local/start.sh

echo "== reduced demo through --profile profiles/slurm ($WORK) =="
rm -rf "$WORK" && mkdir -p "$WORK"
# The fault tests run beside the demo: their jobs are small (a 5-epoch training, a sleep, a memory hog) and mostly
# wait, for the polling or for the one-minute time limit. The resume test copies the reference's demo data.
SDCONET_SLURM_REFERENCE="$(realpath "$REF")" setsid $PY -m pytest -q -m slurm -p no:cacheprovider \
  tests/test_slurm_faults.py > "$WORK/fault_tests.out" 2>&1 &
faults_pid=$!
dag_start=$(date +%s)
# SIGINT on timeout: the plugin then cancels its SLURM jobs (SIGTERM would wait for them).
# shellcheck disable=SC2046
timeout -s INT -k 30 600 $SMK --snakefile Snakefile --directory "$WORK" $(targets results) \
  --profile profiles/slurm --jobs 2 --slurm-init-seconds-before-status-checks 2 \
  --configfile "$PWD/config/config.yaml" --config results_dir=results "$methods_cfg" > "$WORK/snakemake.out" 2>&1 \
  || { tail -n 40 "$WORK/snakemake.out" >&2; echo "the SLURM demo run failed; log: $WORK/snakemake.out" >&2; exit 1; }
echo "reduced demo DAG through SLURM took $(( $(date +%s) - dag_start )) s"

echo "== checks =="
# shellcheck disable=SC2046
$PY - "$WORK/snakemake.out" "$REF" "$WORK/results" $(for m in "${METHODS[@]}"; do echo "$DS/$DEG/$m/seed$SEED"; done) <<'EOF'
"""(a) every job of a non-local rule was submitted with sbatch; (b) metrics and detections equal the reference's."""
import json
import math
import sys
from pathlib import Path

from benchcore.slurm_failures import submissions
from compare.plan.dag import parse_dry_run

log, ref, got, runs = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
text = log.read_text()
jobs, _ = parse_dry_run(text)  # the run prints the same job blocks as a dry run: "rule x:" / "localrule x:"
remote = {j.jobid: j.rule for j in jobs if not j.local}
local = sorted({j.rule for j in jobs if j.local})
subs = {s.job: s for s in submissions(text)}
problems = []
if not remote:
    problems.append("no job ran as a SLURM job")
if set(remote) != set(subs):
    problems.append(f"jobs of non-local rules {sorted(remote.items())} vs jobs submitted with sbatch {sorted(subs)}")
bad_rule = {j: (remote.get(j), s.rule) for j, s in subs.items() if remote.get(j) != s.rule}
if bad_rule:
    problems.append(f"submission log folders name other rules: {bad_rule}")
print(f"(a) {len(remote)} jobs of non-local rules, {len(subs)} submitted with sbatch "
      f"(SLURM job ids {', '.join(sorted((s.slurm_id for s in subs.values()), key=int))}); "
      f"local rules: {', '.join(local)}")


def same(a, b, where, tol=1e-9):
    """Differences between two JSON values: numbers to tol (relative or absolute), everything else exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in same(a[k], b[k], f"{where}.{k}", tol)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{where}[{i}]", tol)]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=tol, abs_tol=tol) else [f"{where}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


for run in runs:
    r, g = json.loads((ref / run / "metrics.json").read_text()), json.loads((got / run / "metrics.json").read_text())
    diffs = [d for key in ("detection", "sr") for d in same(r.get(key), g.get(key), key)]
    diffs += same(json.loads((ref / run / "detections.json").read_text()),
                  json.loads((got / run / "detections.json").read_text()), "detections")
    det = g["detection"]
    print(f"(b) {run}: AP {det['AP']:.6f}, AP50 {det['AP50']:.6f}, {det['num_detections']} detections"
          + (f", SR PSNR {g['sr']['psnr']:.6f}" if g.get("sr") else "")
          + (" == reference" if not diffs else f": {len(diffs)} differences from the reference"))
    problems += [f"{run}: {d}" for d in diffs[:10]]
if problems:
    sys.exit("SLURM demo checks failed:\n  " + "\n  ".join(problems))
EOF

echo "== fault tests through SLURM (run beside the demo) =="
wait "$faults_pid" || { faults_pid=""; cat "$WORK/fault_tests.out" >&2; echo "the SLURM fault tests failed" >&2; exit 1; }
faults_pid=""
grep -E "passed|failed|error" "$WORK/fault_tests.out" | tail -n 1

echo "SLURM stage took $(( $(date +%s) - start )) s (start/stop of SLURM, reduced demo, checks, fault tests)"

#!/usr/bin/env bash
# Issue 13's GPU figures (about 11 min on an H100/H200, 13 with a baseline tree, in two calls: see GPU_STEPS below; run
# from the repo root on a lent CUDA machine, $OUT collects the files). Each step is isolated (a failure is printed and the next step runs) and time-boxed.
#   1. benchmarks/gpu_checks.py on SDCoNet (paper preset, 512 HR): training images/s at batch 2 and 16 (the released
#      total batch) with the SR branch frozen / on, fp32 vs bf16 vs fp16, peak memory per batch size (whole step
#      and after the forward); inference ms and images/s at batch 1 / 8 / 32; the same under channels-last, with
#      cuDNN autotuning off (the fp32 SR-on peak: 20.1 GiB against 2.3 GiB under AMP, is it autotuning
#      workspace?), under the engine's deterministic kernels, torch.compile (inference) and CUDA-graph replay
#      (inference); the host syncs of one training step by source line.
#   2. the plan's images/s calibration of config/paper.yaml's models on this GPU (docs/plan.md), at the paper's sides.
#   3. the serial baselines' training loops (EDSR SR, Faster R-CNN) with the losses read every step vs once per log
#      line (benchmarks/bench_baseline_loops.py).
#   4. when a baseline tree is carried in .baseline/ (see below), its bf16 training rows at batch 2 and 16 and the
#      host-sync census on it, so that what the host-sync removal bought is measured on the same card in the same
#      run. Prepare it (and carry .baseline):
#        rm -rf .baseline && mkdir .baseline && git archive 49484e6 | tar -x -C .baseline && echo 49484e6 > .baseline/.git_ref
#   5. last (it may run out of time): training at batch 16 in bf16 with the static parts compiled (inductor), against
#      the eager rows of the same process.
# Not here: DDP at 2 per GPU (needs several GPUs), the job calibration (needs the paper's pretrained weights).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 YOLO_OFFLINE=1
PY=${PY:-python3}
# GPU_STEPS picks steps by number: the run tool allows 600 s per call, so on a lent machine run
#   GPU_STEPS="1 3 5" bash benchmarks/gpu_issue13.sh   (<= 600 s), then, if device time is left, GPU_STEPS="2 4".
want() { [[ " ${GPU_STEPS:-1 2 3 4 5} " == *" $1 "* ]]; }
step() { echo "=== $1"; shift; local t0=$(date +%s); "$@" || echo "FAILED ($?): $*"; echo "--- $(( $(date +%s) - t0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
want 1 && step "SDCoNet throughput, memory, variants, host syncs" timeout 330 $PY benchmarks/gpu_checks.py --device cuda \
  --models sdconet --train-batches 2 16 --infer-batches 1 8 32 --dtypes fp32 bf16 fp16 --steps 5 --runs 20 \
  --warmup 2 --variants channels_last no_cudnn_benchmark deterministic compile cuda_graph --sync-census --json "$OUT/gpu_checks13.json"
want 2 && step "plan calibration, config/paper.yaml, cuda" timeout 150 $PY -m compare.calibrate --configfile config/paper.yaml \
  --device cuda --out "$OUT/calibration-gpu.json"
want 3 && step "baseline loops: loss read every step vs per log line" timeout 120 $PY benchmarks/bench_baseline_loops.py \
  --device cuda --sr edsr --sr-iters 60 --sr-batch 16 --frcnn-steps 40 --frcnn-batch 4 --log-every 1 10 \
  --json "$OUT/baseline_loops.json"
if want 4 && [ -d .baseline/benchmarks ]; then
  step "baseline tree ($(cat .baseline/.git_ref 2>/dev/null || echo .baseline)): bf16 training, host syncs" timeout 120 \
    $PY .baseline/benchmarks/gpu_checks.py --device cuda --models sdconet --train-batches 2 16 --infer-batches 1 \
    --dtypes bf16 --steps 5 --runs 5 --warmup 2 --sync-census --json "$OUT/gpu_checks13_baseline.json"
fi
want 5 && step "compile_train: Swin encoder, neck and SR decoder compiled (inductor), bf16, batch 16" timeout 150 \
  $PY benchmarks/gpu_checks.py --device cuda --models sdconet --train-batches 16 --infer-batches 1 --dtypes bf16 \
  --steps 5 --runs 5 --warmup 2 --variants compile_train --json "$OUT/gpu_checks13_compile_train.json"

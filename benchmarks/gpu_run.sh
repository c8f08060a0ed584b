#!/usr/bin/env bash
# The session's one prepared GPU check (run on a lent CUDA machine from the repo root; $OUT collects files).
#   GPU_QUICK=1 runs only: the deformable-attention kernel check (benchmarks/bench_msda.py), the SDCoNet vs serial
#   benchmark (benchmarks/bench_sdconet.py) and a 2-epoch AMP training run through the CLI.
#   1. the user's path on CUDA: data CLI -> `python -m sdconet train` (paper preset, AMP, routing phase switch)
#      -> resume -> `python -m sdconet evaluate --run`
#   2. benchmarks/gpu_checks.py: train images/s and inference latency, fp32 vs fp16/bf16 AMP, SDCoNet vs serial
#   3. benchmarks/bench_baselines.py on CUDA: SR ms/tile and detector images/s
# Each step is isolated: a failure is printed and the next step still runs.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 YOLO_OFFLINE=1
step() { echo "=== $1"; shift; local t0=$(date +%s); "$@" || echo "FAILED ($?): $*"; echo "--- $(( $(date +%s) - t0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'tv', torchvision.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
D=/tmp/gpu_demo
step "deformable attention kernels" python3 benchmarks/bench_msda.py --device cuda --json "$OUT/bench_msda.json"
step "SDCoNet vs serial (fp32)" python3 benchmarks/bench_sdconet.py --devices cuda --runs 10 --warmup 3 --no-flops --json "$OUT/bench_sdconet.json"
step "demo data (6 scenes, 512 tiles)" bash -c "python3 -m data_prep demo --out $D/raw --n 8 --size 512 >/dev/null && \
  python3 -m data_prep convert --dataset demo --root $D/raw --out $D/coco.json >/dev/null && \
  python3 -m data_prep split --coco $D/coco.json --image-root $D/raw --tile 512 --gap 0 --out $D/data/tiles >/dev/null && \
  python3 -m data_prep partition --tiles $D/data/tiles/annotations.json --out $D/data/partition --ratios train=0.5,val=0.25,test=0.25 >/dev/null && echo ok"
step "train 2 epochs, paper preset, AMP, SR unfrozen at epoch 1" python3 -m sdconet train --config config/sdconet/paper.yaml \
  --data $D/data --out $D/run --device cuda --set train.epochs=2 --set train.unfreeze_epoch=1 --set train.amp=true --set train.progress=false
cp $D/run/train/train_log.jsonl "$OUT/train_log.jsonl" 2>/dev/null
[ "${GPU_QUICK:-0}" = 1 ] && exit 0
step "resume to epoch 3" python3 -m sdconet train --config config/sdconet/paper.yaml --data $D/data --out $D/run --device cuda \
  --resume --set train.epochs=3 --set train.unfreeze_epoch=1 --set train.amp=true --set train.progress=false
cp $D/run/train/train_log.jsonl "$OUT/train_log.jsonl" 2>/dev/null
step "evaluate with SR" python3 -m sdconet evaluate --run $D/run --out "$OUT/metrics.json" --device cuda
step "AMP throughput / latency" python3 benchmarks/gpu_checks.py --device cuda --json "$OUT/gpu_checks.json"
step "baselines on CUDA" python3 benchmarks/bench_baselines.py --devices cuda --runs 20 --warmup 5 --json "$OUT/bench_baselines.json"

"""GPU throughput and latency of SDCoNet vs the serial two-stage variant: fp32 vs AMP (fp16, bf16).

Training: images/s of full steps (forward, backward, clip 0.1, AdamW step) at the paper preset, with the SR
branch frozen (routing phase 1) and trained (phase 2), at each ``--train-batches`` size (issue 13: the released
total batch is 16), with the peak allocated memory of the whole step and after the forward alone. Inference:
median / p90 ms per batch (predict path, SR decoder skipped) at each ``--infer-batches`` size, and peak memory.
Random weights, random boxes (8 per image, so the denoising groups are realistic).

``--variants`` adds rows of the same measurements under a change, so that what each change buys is measured on the
same card in the same run: ``channels_last`` (model and input in channels-last memory format), ``no_cudnn_benchmark``
(cuDNN autotuning off: does the fp32 SR-on peak come from autotuning workspaces? These are also the training engine's
kernels with ``train.deterministic: false``), ``deterministic`` (the engine's default kernels: PyTorch's deterministic
algorithms, autotuning off), ``compile`` (``torch.compile`` of
the inference forward; bf16 only, or the first ``--dtypes``), ``compile_train`` (training rows, SR on, with the
Swin encoder, neck and SR decoder compiled in place, :func:`compiled_static_parts`; bf16 only, or the first dtype).
``cuda_graph`` (inference replayed from a CUDA graph per batch size and dtype, with its largest difference from the
eager detections; CUDA only, skipped elsewhere). ``--sync-census`` counts the host synchronisations of one fp32
training step by source line (``torch.cuda.set_sync_debug_mode``), the list to work down for "no host sync in the
loss / matcher / denoising".

Prints one JSON line per measurement and writes them all with ``--json``. Runs on CPU too (``--device cpu --preset
tiny``) so the script itself is testable (``tests/test_gpu_checks_cpu.py``).

    python benchmarks/gpu_checks.py --device cuda --json gpu.json
    python benchmarks/gpu_checks.py --device cuda --models sdconet --train-batches 2 16 --infer-batches 1 8 32 \
        --variants channels_last no_cudnn_benchmark compile --sync-census --json gpu13.json
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench_sdconet import _timed  # noqa: E402  (the timing loop every benchmark here shares)
from sdconet.models.build import build_model  # noqa: E402
from sdconet.models.config import preset  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _targets(batch: int, hr: int, n: int, gen: torch.Generator, device: torch.device) -> list[dict]:
    out = []
    for _ in range(batch):
        xy = torch.rand(n, 2, generator=gen) * (hr - 48)
        wh = 8 + torch.rand(n, 2, generator=gen) * 40
        out.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                    "labels": torch.randint(0, 10, (n,), generator=gen).to(device)})
    return out


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def train_speed(model: torch.nn.Module, device: torch.device, batch: int, hr: int, dtype: str, sr: bool,
                steps: int, warmup: int, channels_last: bool = False) -> dict[str, Any]:
    model.train()
    model.set_sr_trainable(sr)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, hr, hr, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    tg = _targets(batch, hr, 8, gen, device)
    times, finite, fwd_peak = [], True, None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
            losses = model(x, tg)
        if fwd_peak is None:
            fwd_peak = _peak_mb(device)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        finite &= bool(torch.isfinite(loss))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"kind": "train", "batch": batch, "dtype": dtype, "sr_on": sr, "step_s": med,
            "images_per_s": batch / med, "finite": finite, "loss_sr": "loss_sr" in losses,
            "peak_mem_mb": _peak_mb(device), "peak_after_forward_mb": fwd_peak}


@torch.no_grad()
def infer_latency(model: torch.nn.Module, device: torch.device, batch: int, hr: int, dtype: str,
                  runs: int, warmup: int, channels_last: bool = False, forward: Any = None) -> dict[str, Any]:
    model.eval()
    forward = forward or model
    x = torch.randn(batch, 3, hr, hr, generator=torch.Generator().manual_seed(1)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    last: list[Any] = []

    def call() -> None:
        with torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
            last[:] = [forward(x)]

    times = _timed(call, str(device), warmup, runs)
    return _infer_row(batch, dtype, times, device, detections_per_image=int(last[0][0]["boxes"].shape[0]))


def _infer_row(batch: int, dtype: str, times: list[float], device: torch.device, **extra: Any) -> dict[str, Any]:
    """An inference row: median / p90 ms per batch, ms per image, images/s, peak memory, plus ``extra``."""
    times = sorted(times)
    med = statistics.median(times)
    return {"kind": "infer", "batch": batch, "dtype": dtype, "median_ms": 1e3 * med,
            "p90_ms": 1e3 * times[min(len(times) - 1, int(0.9 * len(times)))], "ms_per_image": 1e3 * med / batch,
            "images_per_s": batch / med, **extra, "peak_mem_mb": _peak_mb(device)}


@torch.no_grad()
def graphed_infer_latency(model: torch.nn.Module, device: torch.device, batch: int, hr: int, dtype: str, runs: int,
                          warmup: int) -> dict[str, Any]:
    """Inference replayed from a CUDA graph captured at this batch size and dtype (CUDA only; the evaluation forward
    makes no host read and, after its first call, no host copy: ``tests/test_model_host_sync.py``). Times the input
    copy into the captured buffer plus the replay, and reports how far its detections are from the eager forward's
    on the same input."""
    model.eval()
    x = torch.randn(batch, 3, hr, hr, generator=torch.Generator().manual_seed(1)).to(device)
    static_x = x.clone()

    def autocast() -> Any:  # no autocast weight cache inside a capture (PyTorch's CUDA-graph notes)
        return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32", cache_enabled=False)

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), autocast():
        for _ in range(3):  # lazy initialisation, cuDNN autotuning and the kept constants happen here
            model(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), autocast():
        static_out = model(static_x)
    with autocast():
        eager = model(x)
    graph.replay()
    _sync(device)
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for a, b in zip(static_out, eager)
               for k in ("boxes", "scores"))
    labels_equal = all(torch.equal(a["labels"], b["labels"]) for a, b in zip(static_out, eager))

    def call() -> None:
        static_x.copy_(x)
        graph.replay()

    times = _timed(call, str(device), warmup, runs)
    return _infer_row(batch, dtype, times, device, max_abs_diff_vs_eager=diff, labels_equal_eager=labels_equal)


def sync_census(model: torch.nn.Module, device: torch.device, batch: int, hr: int) -> dict[str, Any]:
    """Host synchronisations of one fp32 training step (forward, backward), counted by the first ``sdconet/`` source
    line of each warning's stack (``torch.cuda.set_sync_debug_mode("warn")``); CUDA only."""
    import traceback  # noqa: PLC0415

    model.train()
    model.set_sr_trainable(True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, hr, hr, generator=gen).to(device)
    tg = _targets(batch, hr, 8, gen, device)
    model(x, tg)  # warm: lazy initialisation is not counted
    where: collections.Counter[str] = collections.Counter()

    def record(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        frames = [f for f in traceback.extract_stack() if "/sdconet/" in f.filename]
        site = (re.sub(r"^.*/(sdconet/)", r"\1", frames[-1].filename) + f":{frames[-1].lineno}") if frames else filename
        where[site] += 1

    torch.cuda.synchronize(device)
    old = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            losses = model(x, tg)
            sum(v for k, v in losses.items() if "loss" in k).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = old
    model.zero_grad(set_to_none=True)
    return {"kind": "sync_census", "batch": batch, "total": sum(where.values()), "by_site": dict(where.most_common())}


STATIC_PARTS = ("backbone", "neck", "sr_decoder")


@contextlib.contextmanager
def compiled_static_parts(model: torch.nn.Module, backend: str):
    """The Swin encoder, the neck and the SR decoder compiled in place (``nn.Module.compile``: parameter names and
    checkpoints unchanged) for training rows; their shapes are fixed by the tile size, while the detection branch's
    follow the boxes (denoising groups, matching). Undone on exit."""
    for name in STATIC_PARTS:
        getattr(model, name).compile(backend=backend, dynamic=False)
    try:
        yield
    finally:
        for name in STATIC_PARTS:
            getattr(model, name)._compiled_call_impl = None
        torch._dynamo.reset()


@contextlib.contextmanager
def _variant(name: str):
    """Settings a variant changes for its rows (restored after). ``deterministic``: the training engine's default
    kernels (``sdconet.engine.algorithms(True)``: deterministic algorithms, cuDNN autotuning off);
    ``no_cudnn_benchmark`` is the engine with ``train.deterministic: false``."""
    from sdconet.engine import algorithms  # noqa: PLC0415

    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = name not in ("no_cudnn_benchmark", "deterministic")
    try:
        with algorithms(True) if name == "deterministic" else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cudnn.benchmark = old


def _guarded(rows: list[dict[str, Any]], base: dict[str, Any], fn: Any) -> None:
    try:
        row = fn()
    except Exception as exc:  # noqa: BLE001  (report and go on: one failure must not hide the rest)
        row = {"error": repr(exc)[:300]}
    rows.append({**base, **row})
    print(json.dumps(rows[-1]), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--hr-size", type=int, default=512)
    ap.add_argument("--models", nargs="+", default=["sdconet", "serial"], choices=["sdconet", "serial"])
    ap.add_argument("--train-batches", type=int, nargs="+", default=[2])
    ap.add_argument("--infer-batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16"])
    ap.add_argument("--variants", nargs="*", default=[],
                    choices=["channels_last", "no_cudnn_benchmark", "deterministic", "compile", "compile_train",
                             "cuda_graph"],
                    help="extra rows (SDCoNet, SR on / inference) under each change; see the module docstring")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend of the compile variants (aot_eager: a quick CPU check of the wiring)")
    ap.add_argument("--sync-census", action="store_true", help="count host syncs of one training step (CUDA)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "preset": a.preset, "hr_size": a.hr_size, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    print(json.dumps(info), flush=True)
    for name, shared in (("SDCoNet", True), ("serial two-stage", False)):
        if ("sdconet" if shared else "serial") not in a.models:
            continue
        torch.manual_seed(0)
        model = build_model(preset(a.preset, scale=2, num_classes=10, shared_encoder=shared)).to(device)
        base = {"model": name, "variant": "eager"}
        for dtype in a.dtypes:
            for batch in a.train_batches:
                for sr in (False, True):
                    _guarded(rows, base, lambda: train_speed(model, device, batch, a.hr_size, dtype, sr, a.steps,
                                                             a.warmup))
            for batch in a.infer_batches:
                _guarded(rows, base, lambda: infer_latency(model, device, batch, a.hr_size, dtype, a.runs, a.warmup))
        if shared:
            for variant in a.variants:
                vbase = {"model": name, "variant": variant}
                cl = variant == "channels_last"
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                if variant == "cuda_graph":
                    if device.type != "cuda":
                        print(json.dumps({"variant": variant, "skipped": "CUDA graphs need a CUDA device"}), flush=True)
                        continue
                    for dtype in a.dtypes:
                        for batch in a.infer_batches:
                            _guarded(rows, vbase, lambda: graphed_infer_latency(model, device, batch, a.hr_size, dtype,
                                                                                a.runs, a.warmup))
                    continue
                if variant == "compile_train":
                    with compiled_static_parts(model, a.compile_backend):
                        for dtype in [d for d in a.dtypes if d == "bf16"] or a.dtypes[:1]:
                            for batch in a.train_batches:
                                _guarded(rows, vbase, lambda: train_speed(model, device, batch, a.hr_size, dtype, True,
                                                                          a.steps, a.warmup))
                    continue
                with _variant(variant):
                    fwd = torch.compile(model, backend=a.compile_backend) if variant == "compile" else None
                    # compile: one dtype (bf16 when asked), each batch size is a compilation of its own
                    dtypes = ([d for d in a.dtypes if d == "bf16"] or a.dtypes[:1]) if fwd else a.dtypes
                    for dtype in dtypes:
                        if variant != "compile":
                            for batch in a.train_batches:
                                _guarded(rows, vbase, lambda: train_speed(model, device, batch, a.hr_size, dtype, True,
                                                                          a.steps, a.warmup, channels_last=cl))
                        for batch in a.infer_batches:
                            _guarded(rows, vbase, lambda: infer_latency(model, device, batch, a.hr_size, dtype, a.runs,
                                                                        a.warmup, channels_last=cl, forward=fwd))
                if cl:
                    model = model.to(memory_format=torch.contiguous_format)
            if a.sync_census and device.type == "cuda":
                _guarded(rows, base, lambda: sync_census(model, device, a.train_batches[0], a.hr_size))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if a.json:
        a.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

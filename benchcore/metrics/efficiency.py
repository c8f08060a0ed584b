"""Efficiency metrics: parameters, FLOPs, latency and peak memory.

FLOP conventions (see ``shared/docs/environment.md``): fvcore's ``FlopCountAnalysis`` counts one
multiply-add as one "flop", i.e. its total is **MACs** (ResNet-50 at 224: 4.11 G; Swin-T: 4.51 G),
and it skips operators it has no handle for (listed in ``unsupported_ops``). ``torch.utils.flop_counter``
counts true FLOPs = 2 x MACs. :func:`count_flops` always returns both ``gmac`` and ``gflops`` (= 2 x gmac)
and names the counter that produced them; tables should quote one of them consistently.
"""
from __future__ import annotations

import math
import resource
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Mapping

import torch
from torch import nn

from benchcore.provenance import device_string


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (shared tensors counted once; ``trainable_only``: requires_grad)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(named_modules: Mapping[str, nn.Module], trainable_only: bool = False) -> dict[str, int]:
    """Parameter count per named component, e.g. ``{"encoder": ..., "sr_decoder": ..., "detector_head": ...}``.

    Counts are per component; a tensor shared by two components is counted in both.
    """
    return {name: count_parameters(m, trainable_only) for name, m in named_modules.items()}


def _as_tuple(inputs: Any) -> tuple:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def count_flops(model: nn.Module, inputs: tuple | torch.Tensor, counter: str = "fvcore") -> dict[str, Any]:
    """Theoretical compute of one forward pass of ``model(*inputs)`` in eval mode, without gradients.

    Args:
        model: the module; its train/eval mode is restored afterwards.
        inputs: positional inputs (a tensor or a tuple); the batch size in them is counted, so pass batch 1
            for a per-image figure.
        counter: ``"fvcore"`` (total = multiply-adds; ``unsupported_ops`` lists skipped operators and their
            call counts) or ``"torch"`` (``torch.utils.flop_counter.FlopCounterMode``, total = FLOPs = 2 x MACs;
            it skips operators without a formula silently, so ``unsupported_ops`` is empty).

    Returns:
        ``{"gmac": float, "gflops": float (= 2 * gmac), "counter": str, "unsupported_ops": {op: count}}``.
    """
    inputs = _as_tuple(inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if counter == "fvcore":
                with warnings.catch_warnings():  # fvcore.nn scripts its losses with the deprecated torch.jit.script
                    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
                    from fvcore.nn import FlopCountAnalysis  # noqa: PLC0415

                fca = FlopCountAnalysis(model, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                macs = float(fca.total())
                unsupported = {str(k): int(v) for k, v in fca.unsupported_ops().items()}
            elif counter == "torch":
                from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

                mode = FlopCounterMode(display=False)
                with mode:
                    model(*inputs)
                macs = mode.get_total_flops() / 2.0
                unsupported = {}
            else:
                raise ValueError(f"counter must be 'fvcore' or 'torch', got {counter!r}")
    finally:
        model.train(was_training)
    return {"gmac": macs / 1e9, "gflops": 2.0 * macs / 1e9, "counter": counter, "unsupported_ops": unsupported}


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def measure_latency(fn: nn.Module | Callable[..., Any], inputs: tuple | torch.Tensor, device: str | torch.device = "cpu",
                    warmup: int = 3, runs: int = 10, batch_size: int = 1) -> dict[str, Any]:
    """Wall-clock latency of ``fn(*inputs)`` under ``torch.no_grad`` (``time.perf_counter``).

    A module is moved to ``device`` and put in eval mode (its mode is restored afterwards); tensors in
    ``inputs`` (also inside lists/tuples/dicts) are moved to ``device``. On CUDA every run is bracketed
    by ``torch.cuda.synchronize``.

    Args:
        batch_size: images per call, for ``throughput_per_s`` (= batch_size * 1000 / median_ms).

    Returns:
        ``median_ms, p90_ms, mean_ms, min_ms, throughput_per_s, runs, warmup, batch_size, device`` (via
        ``provenance.device_string``), ``peak_mem_mb`` and ``peak_mem_kind``: on CUDA the peak of
        ``torch.cuda.max_memory_allocated`` during the timed runs (``"cuda_max_allocated"``); on CPU the
        process's peak RSS (``ru_maxrss``, ``"cpu_process_peak_rss"``, a process-wide upper bound), with
        ``peak_mem_delta_mb`` = how much that peak grew during the measurement.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    inputs = _to_device(_as_tuple(inputs), dev)
    was_training = None
    if isinstance(fn, nn.Module):
        was_training = fn.training
        fn.to(dev).eval()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    times: list[float] = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                fn(*inputs)
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            rss_before = _peak_rss_mb()
            for _ in range(runs):
                sync()
                t0 = time.perf_counter()
                fn(*inputs)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        if was_training is not None:
            fn.train(was_training)
    ordered = sorted(times)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest-rank percentile
    median = statistics.median(times)
    out: dict[str, Any] = {
        "median_ms": median, "p90_ms": p90, "mean_ms": statistics.fmean(times), "min_ms": ordered[0],
        "throughput_per_s": batch_size * 1e3 / median if median > 0 else float("inf"),
        "runs": runs, "warmup": warmup, "batch_size": batch_size, "device": device_string(dev),
    }
    if cuda:
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["peak_mem_kind"] = "cuda_max_allocated"
    else:
        peak = _peak_rss_mb()
        out.update(peak_mem_mb=peak, peak_mem_delta_mb=max(0.0, peak - rss_before), peak_mem_kind="cpu_process_peak_rss")
    return out

"""Efficiency metrics: parameters, FLOPs, latency and peak memory.

Peak memory is per call of :func:`measure_latency` (the high-water mark is reset before its calls), but on the
CPU it is the resident set of the whole process: whatever the process already holds (libraries, other models,
memory the allocator kept from earlier work) is in it. :func:`run_in_fresh_process` runs a measurement in a new
Python process of its own, so that what it reports belongs to that measurement alone.

FLOP conventions (see ``shared/docs/environment.md``): fvcore's ``FlopCountAnalysis`` counts one
multiply-add as one "flop", i.e. its total is **MACs** (ResNet-50 at 224: 4.11 G; Swin-T: 4.51 G),
and it skips operators it has no handle for (listed in ``unsupported_ops``). ``torch.utils.flop_counter``
counts true FLOPs = 2 x MACs. :func:`count_flops` always returns both ``gmac`` and ``gflops`` (= 2 x gmac)
and names the counter that produced them; tables should quote one of them consistently.
"""
from __future__ import annotations

import math
import pickle
import resource
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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


_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_status_mb(field: str) -> float | None:
    """``VmHWM`` / ``VmRSS`` of this process from ``/proc/self/status`` in MiB (None where there is no /proc)."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (``VmHWM``) to its current RSS (Linux >= 4.0); False if impossible."""
    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _proc_status_mb("VmHWM") is not None


def _process_peak_rss_mb() -> float:
    """Peak resident set size of this process since it started (ru_maxrss: KiB on Linux, bytes on macOS)."""
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
    """Wall-clock latency of ``fn(*inputs)`` under ``torch.no_grad`` (``time.perf_counter``), and its peak memory.

    A module is moved to ``device`` and put in eval mode (its mode is restored afterwards); tensors in
    ``inputs`` (also inside lists/tuples/dicts) are moved to ``device``. On CUDA every run is bracketed
    by ``torch.cuda.synchronize``.

    Args:
        batch_size: images per call, for ``throughput_per_s`` (= batch_size * 1000 / median_ms).

    Returns:
        ``median_ms, p90_ms, mean_ms, min_ms, throughput_per_s, runs, warmup, batch_size, device`` (via
        ``provenance.device_string``) and the peak memory of the calls (warm-up and timed), in MiB:

        * ``peak_mem_mb``, by ``peak_mem_kind``:
          ``"cuda_max_allocated"``: ``torch.cuda.max_memory_allocated`` during the calls (its peak is reset
          before them): tensors held through the caching allocator (weights, inputs, activations), without the
          CUDA context or the allocator's unused cache.
          ``"cpu_peak_rss"`` (Linux): the peak resident set size of the process during the calls, the kernel's
          high-water mark (``VmHWM``) reset to the current RSS just before them. It counts everything resident
          in the process (interpreter, imported libraries, the model's weights, anything else it holds) plus
          what the calls add; it is one method's figure only in a process that measures nothing else
          (:func:`run_in_fresh_process`).
          ``"cpu_process_peak_rss"`` (no resettable high-water mark, e.g. macOS): ``ru_maxrss``, the process's
          peak since it started, an upper bound that earlier work in the process inflates.
        * ``peak_mem_delta_mb``: ``peak_mem_mb`` minus the memory in use just before the calls (CUDA: allocated
          tensors; ``cpu_peak_rss``: the RSS; ``cpu_process_peak_rss``: the process peak so far), i.e. what
          the calls added on top: activations, workspaces, allocator growth.
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
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
                kind, before = "cuda_max_allocated", torch.cuda.memory_allocated(dev) / 2**20
            elif _reset_peak_rss():
                kind, before = "cpu_peak_rss", _proc_status_mb("VmRSS")
            else:
                kind, before = "cpu_process_peak_rss", _process_peak_rss_mb()
            for _ in range(warmup):
                fn(*inputs)
            sync()
            for _ in range(runs):
                sync()
                t0 = time.perf_counter()
                fn(*inputs)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
            if cuda:
                peak = torch.cuda.max_memory_allocated(dev) / 2**20
            else:
                peak = _proc_status_mb("VmHWM") if kind == "cpu_peak_rss" else _process_peak_rss_mb()
    finally:
        if was_training is not None:
            fn.train(was_training)
    ordered = sorted(times)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest-rank percentile
    median = statistics.median(times)
    return {
        "median_ms": median, "p90_ms": p90, "mean_ms": statistics.fmean(times), "min_ms": ordered[0],
        "throughput_per_s": batch_size * 1e3 / median if median > 0 else float("inf"),
        "runs": runs, "warmup": warmup, "batch_size": batch_size, "device": device_string(dev),
        "peak_mem_mb": peak, "peak_mem_delta_mb": max(0.0, peak - before), "peak_mem_kind": kind,
    }


# ------------------------------------------------------------------------------------------- fresh process
def _run_pickled_call(call_path: str, result_path: str) -> None:
    """Child side of :func:`run_in_fresh_process` (run by :mod:`benchcore.fork_server`'s child):
    ``fn(*args, **kwargs)`` -> ``("ok", value)`` or
    ``("error", exception, traceback text)`` pickled to ``result_path``."""
    with open(call_path, "rb") as f:
        pickle.load(f)  # the import path, applied by the bootstrap
        fn, args, kwargs = pickle.load(f)
    try:
        out: tuple = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001  (handed to the caller, which re-raises it)
        out = ("error", exc, traceback.format_exc())
    try:
        payload = pickle.dumps(out)
    except Exception as exc:  # noqa: BLE001  (an unpicklable result or exception)
        text = out[2] if out[0] == "error" else f"result of {fn!r} cannot be pickled: {exc!r}"
        payload = pickle.dumps(("error", RuntimeError(text.strip().splitlines()[-1]), text))
    Path(result_path).write_bytes(payload)


def run_in_fresh_process(fn: Callable[..., Any], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                         threads: int | None = None, timeout: float | None = None) -> Any:
    """``fn(*args, **kwargs)`` in a new process that runs nothing else.

    For measurements whose peak memory must be their own: a process's peak RSS includes everything it
    holds, and memory once used (imported libraries, caches, freed blocks the allocator keeps) is not given
    back, so a second measurement in the same process inherits the first one's footprint. The process is forked
    from :data:`benchcore.fork_server.SERVER`, an interpreter that has only imported torch and torchvision (which
    every measured method loads), so the imports are paid once per caller rather than once per call.

    Args:
        fn: an importable top-level function (it is pickled by reference); ``args``/``kwargs`` and its return
            value must be picklable.
        threads: intra-op threads of the child (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
            ``OPENBLAS_NUM_THREADS`` and ``torch.set_num_threads``, via :func:`benchcore.smk.limit_threads`);
            default: this process's ``torch.get_num_threads()``.
        timeout: seconds before the child is killed (``subprocess.TimeoutExpired``); None: no limit.

    Returns:
        ``fn``'s return value. The child has this process's working directory, environment (as of the server's
        start) and ``sys.path``; its stdout and stderr are passed on to this process's ``sys.stdout`` /
        ``sys.stderr`` when it ends.

    Raises:
        The exception ``fn`` raised (the child's traceback attached as a note), or ``RuntimeError`` naming the
        exit status and the end of stderr when the child died without a result (e.g. killed for memory).
    """
    from benchcore.fork_server import SERVER  # noqa: PLC0415

    n = int(threads) if threads is not None else torch.get_num_threads()
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    with tempfile.TemporaryDirectory(prefix="fresh_process_") as tmp:
        call, result, log = Path(tmp) / "call.pkl", Path(tmp) / "result.pkl", Path(tmp) / "child"
        with call.open("wb") as f:
            pickle.dump(list(sys.path), f)
            pickle.dump((fn, tuple(args), dict(kwargs or {})), f)
        code = SERVER.run(str(call), str(result), n, str(log), timeout)
        out, err = (Path(f"{log}{ext}") for ext in (".out", ".err"))
        stderr = err.read_text(errors="replace") if err.is_file() else ""
        sys.stdout.write(out.read_text(errors="replace") if out.is_file() else "")
        sys.stderr.write(stderr)
        if not result.is_file():
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{getattr(fn, '__qualname__', fn)!r} in a fresh process: the child exited with "
                               f"status {code} and no result; end of its stderr:\n{tail}")
        ret = pickle.loads(result.read_bytes())
    if ret[0] == "ok":
        return ret[1]
    exc = ret[1]
    exc.add_note(f"raised in a fresh process (run_in_fresh_process); its traceback:\n{ret[2]}")
    raise exc

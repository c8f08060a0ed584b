"""Multi-scale deformable attention kernels: this project's vs ultralytics' (= mmcv's pure-PyTorch reference).

For the paper-preset shapes (batch 2, 8 heads x 32 channels, 4 levels x 4 points, LR 256 -> levels 32/16/8/4),
at the saliency-aware encoder's 1,360 queries and the DINO decoder's 500 (300 + 200 denoising) queries, prints
median ms of the forward pass without autograd (inference) and of forward + backward (training), and the
largest difference of the output and of the three gradients between the two kernels (float32).

    .venv/bin/python benchmarks/bench_msda.py [--device cpu|cuda] [--runs 20] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from ultralytics.nn.modules.utils import multi_scale_deformable_attn_pytorch as reference  # noqa: E402

from sdconet.models.deform_attn import multi_scale_deformable_attn  # noqa: E402

from bench_sdconet import _timed  # noqa: E402  (same folder: the shared warm-up + synchronised timing loop)

SHAPES = [(32, 32), (16, 16), (8, 8), (4, 4)]


def _ours(value: torch.Tensor, loc: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return multi_scale_deformable_attn(value, SHAPES, loc, w)


def _ref(value: torch.Tensor, loc: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    b, q, h, lv, p, _ = loc.shape
    return reference(value, SHAPES, loc.reshape(b, q, h, lv * p, 2), w.reshape(b, q, h, lv * p))


def _median_ms(fn: Callable[[], Any], device: str, warmup: int, runs: int) -> float:
    return 1e3 * statistics.median(_timed(fn, device, warmup, runs))


def bench(queries: int, a: argparse.Namespace) -> list[dict[str, Any]]:
    """Both kernels at one query count: timings and the differences of output and gradients."""
    g = torch.Generator().manual_seed(0)
    n_v = sum(h * w for h, w in SHAPES)
    value = torch.randn(a.batch, n_v, 8, 32, generator=g).to(a.device)
    loc = (torch.rand(a.batch, queries, 8, 4, 4, 2, generator=g) * 1.2 - 0.1).to(a.device)  # some off the map
    w = torch.randn(a.batch, queries, 8, 4, 4, generator=g).softmax(-1).to(a.device)
    grad = torch.randn(a.batch, queries, 256, generator=g).to(a.device)
    results, rows = {}, []
    for name, fn in (("ultralytics/mmcv reference", _ref), ("sdconet", _ours)):
        leaves = [t.clone().requires_grad_() for t in (value, loc, w)]

        def train_step(fn: Callable = fn, leaves: list = leaves) -> None:
            for t in leaves:
                t.grad = None
            fn(*leaves).backward(grad)

        def infer(fn: Callable = fn) -> None:
            with torch.no_grad():
                fn(value, loc, w)

        train_step()
        results[name] = [fn(value, loc, w).detach()] + [t.grad.detach().clone() for t in leaves]
        rows.append({"kernel": name, "queries": queries, "batch": a.batch, "device": a.device,
                     "forward_ms": _median_ms(infer, a.device, a.warmup, a.runs),
                     "forward_backward_ms": _median_ms(train_step, a.device, a.warmup, a.runs)})
    diffs = {k: float((x - y).abs().max()) for k, x, y in
             zip(("output", "d_value", "d_locations", "d_weights"), *results.values())}
    rows[-1]["max_abs_diff_vs_reference"] = diffs
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print one line per kernel and query count (and write them with ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    rows = []
    for queries in (1360, 500):
        for r in bench(queries, a):
            rows.append(r)
            extra = f"  max |diff| {r['max_abs_diff_vs_reference']}" if "max_abs_diff_vs_reference" in r else ""
            print(f"{r['kernel']:28s} {a.device} batch {a.batch} queries {queries:5d}: forward {r['forward_ms']:7.2f} ms, "
                  f"forward+backward {r['forward_backward_ms']:7.2f} ms{extra}", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"device_name": torch.cuda.get_device_name() if a.device.startswith("cuda")
                                      else "cpu", "threads": torch.get_num_threads(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

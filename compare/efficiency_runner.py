"""One efficiency measurement per method id of ``config/experiments.tsv``: parameters, FLOPs, latency, memory.

Writes the report's ``RESULTS/efficiency/{method}.json`` (read by :func:`compare.report.collect.efficiency_row`)::

    python -m compare.efficiency_runner --method frcnn_edsr --experiments config/experiments.tsv --num-classes 10 \
        --hr-size 512 --preset paper --out results/efficiency/frcnn_edsr.json [--device cuda] [--counter torch]

What is measured (spec Appendix A conventions; weights are random, which changes no count and no timing):

* Input: one HR tile's LR counterpart (B, 3, hr/scale, hr/scale) for ``lr``/``sr`` rows and SDCoNet rows (fed
  as an offline LR tile, ``lr.on_the_fly=False``), the HR tile (B, 3, hr, hr) for ``hr`` rows.
* Serial rows: the SR network (or ``F.interpolate`` for bicubic / nearest: 0 parameters, FLOPs counted as 0) then
  the detector on its output at HR size. YOLO = ultralytics ``DetectionModel`` from yaml with ``nc`` (Conv+BN fused
  for FLOPs and latency as ultralytics' predictor does; the latency includes its NMS at the mAP settings, FLOPs
  do not); Faster R-CNN = eval-mode torchvision model on a list of images (its NMS / RoIAlign are listed in
  ``unsupported_ops``: counters skip them).
* Params: ``total`` = everything the method trains, ``inference`` = what runs at test time (serial: SR network
  + detector), ``training_only = total - inference`` (SDCoNet: SR decoder + neck SR conv, from
  :func:`sdconet.summary.parameter_summary`). ``components`` splits them.
* FLOPs (inference path, batch 1): fvcore multiply-adds (GMAC) by default, ``torch`` = FlopCounterMode / 2.
  Fused attention (``F.scaled_dot_product_attention``) is counted as its two matmuls (a custom fvcore handle;
  the math backend under the torch counter): both counters skip it otherwise.
* Latency: :func:`benchcore.metrics.efficiency.measure_latency` at batch 1 and at ``max(batch_sizes)``, before
  any FLOP counting (so that nothing the counters leave in memory is in the memory figure).
* Peak memory (``peak_mem_mb``, MiB; the larger of the two batch sizes' figures, ``peak_mem_kind`` says which
  kind): on CUDA the peak of ``torch.cuda.max_memory_allocated`` during the inference calls (tensors: weights,
  inputs, activations). On the CPU the peak resident set size of the measuring process during the inference calls
  (Linux ``VmHWM``, reset just before them): the interpreter and the libraries this method imports, its weights
  and its activations. A process never gives all memory back, so this is the method's own figure only when the
  process measured nothing else: ``peak_mem_process`` is ``"own"`` for :func:`measure_method_in_fresh_process`
  (what the workflow runs, one new process per method) and the command line (one method per process),
  ``"shared"`` when :func:`measure_method` is called inside a process that may hold other work.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchcore.metrics.efficiency import count_flops, count_parameters, measure_latency, run_in_fresh_process
from benchcore.atomic import atomic_write_json

WEIGHTS_NOTE = "random initialisation (parameter counts, FLOPs and timings do not depend on trained values)"
YOLO_NMS = {"conf_thres": 0.001, "iou_thres": 0.6, "max_det": 300}


# ----------------------------------------------------------------------------------------------------- FLOPs
def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle: ``scaled_dot_product_attention(q, k, v)`` = QK^T + AV multiply-adds."""
    from fvcore.nn.jit_handles import get_shape  # noqa: PLC0415

    q, k, v = (get_shape(i) for i in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


@contextlib.contextmanager
def _params_frozen(module: nn.Module) -> Iterator[None]:
    """requires_grad off while counting (FlopCounterMode's module tracker fails on leaf parameters returned
    as outputs under no_grad); restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def count_gmac(module: nn.Module, inputs: tuple | torch.Tensor, counter: str = "fvcore") -> dict[str, Any]:
    """:func:`benchcore.metrics.efficiency.count_flops` with fused attention counted (see the module docstring).

    Deformable attention samples through ``grid_sample`` while counting (neither counter counts it, as on the
    official code), not through the CPU kernel's dense interpolation matrix for small levels, whose matrix
    product would be counted as model FLOPs.
    """
    from sdconet.models.deform_attn import sampling_by_grid_sample  # noqa: PLC0415

    with sampling_by_grid_sample():
        return _count_gmac(module, inputs, counter)


def _count_gmac(module: nn.Module, inputs: tuple | torch.Tensor, counter: str) -> dict[str, Any]:
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if counter == "torch":
        from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415

        with _params_frozen(module), sdpa_kernel([SDPBackend.MATH]):
            return count_flops(module, inputs, "torch")
    if counter != "fvcore":
        raise ValueError(f"counter must be 'fvcore' or 'torch', got {counter!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis  # noqa: PLC0415

        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                fca = FlopCountAnalysis(module, inputs).set_op_handle(
                    "aten::scaled_dot_product_attention", _sdpa_macs)
                fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                macs = float(fca.total())
                unsupported = {str(k): int(v) for k, v in fca.unsupported_ops().items()}
        finally:
            module.train(was_training)
    return {"gmac": macs / 1e9, "gflops": 2 * macs / 1e9, "counter": "fvcore", "unsupported_ops": unsupported}


# ----------------------------------------------------------------------------------------------------- modules
class Interpolate(nn.Module):
    """The bicubic / nearest "SR" of the interpolation baselines as a torch op (PIL in the pipeline itself)."""

    def __init__(self, scale: int, mode: str):
        super().__init__()
        self.scale, self.mode = int(scale), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp_(0, 1)


class FrcnnForward(nn.Module):
    """Eval-mode torchvision detector on a batch tensor (as a list of images) -> flat tuple of output tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        return tuple(t for o in self.model(list(x)) for t in (o["boxes"], o["scores"], o["labels"]))


class YoloForward(nn.Module):
    """ultralytics ``DetectionModel`` forward (raw predictions), optionally followed by its NMS."""

    def __init__(self, model: nn.Module, nms: bool):
        super().__init__()
        self.model, self.nms = model, nms

    def forward(self, x: torch.Tensor) -> Any:  # noqa: D102
        out = self.model(x)
        pred = out[0] if isinstance(out, (tuple, list)) else out
        if not self.nms:
            return pred
        from ultralytics.utils.nms import non_max_suppression  # noqa: PLC0415

        return tuple(non_max_suppression(pred, nc=len(self.model.names), **YOLO_NMS))


class Serial(nn.Module):
    """``detector(sr(x))`` (``sr`` None: the detector alone)."""

    def __init__(self, sr: nn.Module | None, detector: nn.Module):
        super().__init__()
        self.sr, self.detector = sr, detector

    def forward(self, x: torch.Tensor) -> Any:  # noqa: D102
        return self.detector(self.sr(x) if self.sr is not None else x)


@dataclass
class Stage:
    """One FLOP-counted part of the inference path: ``module`` on a (1, 3, side, side) input; ``gmac`` preset
    (e.g. 0 for interpolation) skips counting."""

    name: str
    module: nn.Module
    side: int
    gmac: float | None = None


@dataclass
class MethodModels:
    """What :func:`measure_method` measures for one method."""

    pipeline: nn.Module
    input_side: int
    stages: list[Stage]
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def build_detector(detector: str, num_classes: int, side: int, preset: str = "paper"
                   ) -> tuple[nn.Module, nn.Module, int, list[str]]:
    """(latency module, FLOP module, trained parameter count, notes) of a serial baseline detector on ``side`` px."""
    if detector == "frcnn":
        from baselines.frcnn import build_frcnn  # noqa: PLC0415

        model = build_frcnn(num_classes, side, preset).eval()
        fwd = FrcnnForward(model)
        return fwd, fwd, count_parameters(model), [
            f"Faster R-CNN ({'R50-FPN' if preset == 'paper' else 'tiny R18-FPN'}) eval path incl. its transform, "
            "RPN/RoI NMS and box decoding; counters skip NMS and RoIAlign (see unsupported_ops)"]
    if detector not in ("yolov8n", "yolov8s"):
        raise ValueError(f"unknown detector {detector!r}")
    import sdconet  # noqa: F401, PLC0415  (offline defaults before ultralytics)
    import torchvision  # noqa: F401, PLC0415  (ultralytics' NMS uses torchvision.ops.nms only once it is imported,
    # as in its predictor; otherwise a Python-loop NMS with a 2 s time limit)
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415

    model = DetectionModel(f"{detector}.yaml", nc=num_classes, verbose=False).eval()
    n = count_parameters(model)
    fused = copy.deepcopy(model).fuse(verbose=False).eval()
    notes = [f"{detector} from yaml (nc={num_classes}; preset ignored), Conv+BN fused as at prediction; latency "
             f"includes ultralytics NMS {YOLO_NMS}, FLOPs exclude it; letterbox/pre-processing excluded"]
    return YoloForward(fused, nms=True), YoloForward(fused, nms=False), n, notes


def build_serial(row: dict[str, str], num_classes: int, hr_size: int, scale: int, preset: str) -> MethodModels:
    """Models of a ``serial`` experiments row (detector on HR, on LR, or on the output of an SR step)."""
    lr = hr_size // scale
    inp, sr_name = row["input"], row["sr_model"]
    det_side = lr if inp == "lr" else hr_size
    det_lat, det_flop, det_params, notes = build_detector(row["detector"], num_classes, det_side, preset)
    sr: nn.Module | None = None
    stages: list[Stage] = []
    sr_params = 0
    if inp == "sr":
        if sr_name in ("bicubic", "nearest"):
            sr = Interpolate(scale, sr_name)
            stages.append(Stage(f"sr_{sr_name}", sr, lr, gmac=0.0))
            notes.append(f"{sr_name} interpolation: 0 parameters, its FLOPs counted as 0 (resampling, not network "
                         f"multiply-adds); timed as torch F.interpolate (the pipeline itself uses PIL)")
        else:
            from baselines.sr_models import build_sr_model  # noqa: PLC0415

            sr = build_sr_model(sr_name, scale, preset).eval()
            sr_params = count_parameters(sr)
            stages.append(Stage(f"sr_{sr_name}", sr, lr))
    elif sr_name not in ("none", "-", ""):
        raise ValueError(f"method {row['id']}: input {inp!r} with sr_model {sr_name!r}")
    stages.append(Stage(f"detector_{row['detector']}", det_flop, det_side))
    total = sr_params + det_params
    params = {"total": total, "inference": total, "training_only": 0,
              "components": {"sr": sr_params, "detector": det_params}}
    return MethodModels(Serial(sr, det_lat), hr_size if inp == "hr" else lr, stages, params, notes)


def build_sdconet(method_id: str, experiments_path: str | Path, num_classes: int, hr_size: int, scale: int,
                  preset: str) -> MethodModels:
    """An SDCoNet / ablation row built through the model assembly, fed the LR tile (``lr.on_the_fly=False``), or
    the HR tile for an ``input: hr`` row."""
    from sdconet.methods import input_scale, method_overrides  # noqa: PLC0415
    from sdconet.models.build import build_model, resolve_config  # noqa: PLC0415
    from sdconet.models.config import preset as model_preset  # noqa: PLC0415
    from sdconet.summary import parameter_summary  # noqa: PLC0415

    depth = model_preset(preset, scale=scale).enc_layers
    scale = input_scale(method_id, scale, experiments_path)  # 1 for an HR-input row: it is fed the HR tile
    overrides = method_overrides(method_id, experiments_path, enc_layers=depth)
    overrides.update({"model.num_classes": num_classes, "model.lr.on_the_fly": False, "model.lr.scale": scale,
                      "model.swin.pretrained": None})  # lr.scale is also the SR decoder's upscale
    doc = {"model": {"preset": preset}, "train": {"epochs": 1, "batch_size": 1}}
    cfg, _ = resolve_config(doc, overrides, source=f"{method_id} ({preset} preset)")
    model = build_model(cfg).eval()
    summary = parameter_summary(model)
    s = summary["totals"]
    params = {"total": s["total"], "inference": s["inference_path"], "training_only": s["total"] - s["inference_path"],
              "unused": s["unused"], "components": summary["components"]}
    tile = "HR" if scale == 1 else "LR"
    notes = [f"{type(model).__name__} ({preset} preset) predict path on the {tile} tile; the SR decoder (and the "
             f"neck's SR conv) do not run at inference"]
    return MethodModels(model, hr_size // scale, [Stage(method_id, model, hr_size // scale)], params, notes)


def build_method(method_id: str, experiments_path: str | Path, num_classes: int, hr_size: int = 512, *, scale: int,
                 preset: str = "paper") -> tuple[dict[str, str], MethodModels]:
    """(experiments row, models) of ``method_id``."""
    from benchcore.experiments import load_experiments  # noqa: PLC0415

    rows = {r["id"]: r for r in load_experiments(experiments_path).to_dict(orient="records")}
    if method_id not in rows:
        raise ValueError(f"unknown method id {method_id!r} in {experiments_path}; known: {', '.join(rows)}")
    if preset not in ("paper", "tiny"):
        raise ValueError(f"preset must be 'paper' or 'tiny', got {preset!r}")
    if hr_size % scale:
        raise ValueError(f"hr_size {hr_size} must be divisible by scale {scale}")
    row = {k: str(v) for k, v in rows[method_id].items()}
    if row["detector"] == "sdconet":
        return row, build_sdconet(method_id, experiments_path, num_classes, hr_size, scale, preset)
    return row, build_serial(row, num_classes, hr_size, scale, preset)


# ----------------------------------------------------------------------------------------------------- measure
def _latency(res: dict[str, Any]) -> dict[str, Any]:
    keys = ("batch_size", "median_ms", "p90_ms", "mean_ms", "min_ms", "throughput_per_s", "runs", "warmup",
            "peak_mem_mb", "peak_mem_delta_mb", "peak_mem_kind")
    return {k: res[k] for k in keys if k in res}


def measure_method(method_id: str, experiments_path: str | Path, num_classes: int, hr_size: int = 512,
                   *, scale: int, preset: str = "paper", device: str = "cpu", warmup: int = 2, runs: int = 5,
                   batch_sizes: Sequence[int] = (1, 4), counter: str = "fvcore") -> dict[str, Any]:
    """Efficiency of one method in the report's format (see the module docstring), measured in this process.

    Its CPU peak memory includes whatever this process already holds (``peak_mem_process: "shared"``); use
    :func:`measure_method_in_fresh_process` for a figure that is this method's alone.
    """
    from benchcore.provenance import device_string, provenance  # noqa: PLC0415

    torch.manual_seed(0)  # the random initialisation (no count or timing depends on it)
    row, mm = build_method(method_id, experiments_path, num_classes, hr_size, scale=scale, preset=preset)
    side = mm.input_side
    bs1 = measure_latency(mm.pipeline, torch.rand(1, 3, side, side), device, warmup, runs, batch_size=1)
    big = max(int(b) for b in batch_sizes)
    bsn = (measure_latency(mm.pipeline, torch.rand(big, 3, side, side), device, warmup, runs, batch_size=big)
           if big > 1 else None)
    mm.pipeline.to("cpu")  # the FLOP counters run on the CPU (stage modules are parts of the pipeline)
    by_stage: dict[str, float] = {}
    unsupported: dict[str, int] = {}
    for st in mm.stages:
        if st.gmac is None:
            res = count_gmac(st.module, torch.rand(1, 3, st.side, st.side), counter)
            st.gmac = res["gmac"]
            for op, n in res["unsupported_ops"].items():
                unsupported[op] = unsupported.get(op, 0) + n
        by_stage[st.name] = st.gmac
    gmac = sum(by_stage.values())
    config = {"method": method_id, "row": row, "num_classes": num_classes, "hr_size": hr_size, "scale": scale,
              "preset": preset, "counter": counter, "warmup": warmup, "runs": runs, "batch_sizes": list(batch_sizes)}
    return {
        "method": method_id, "kind": row["kind"], "display": row["display"], "input_size": [side, side],
        "hr_size": hr_size, "scale": scale, "preset": preset, "num_classes": num_classes, "params": mm.params,
        "flops": {"gmac": gmac, "gflops": 2 * gmac, "counter": counter, "batch_size": 1, "by_stage": by_stage,
                  "unsupported_ops": unsupported,
                  "convention": "fvcore: 1 multiply-add = 1; torch: FlopCounterMode FLOPs / 2" if counter == "fvcore"
                  else "torch.utils.flop_counter FLOPs / 2 (SDPA via the math backend)"},
        "latency": {"bs1": _latency(bs1), "bsN": _latency(bsn) if bsn else None},
        "peak_mem_mb": max(r["peak_mem_mb"] for r in (bs1, bsn) if r), "peak_mem_kind": bs1["peak_mem_kind"],
        "peak_mem_process": "shared",
        "device": device_string(torch.device(device)), "weights": WEIGHTS_NOTE, "notes": mm.notes,
        "provenance": provenance(config=config, device=torch.device(device)),
    }


def _measure_method_alone(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`measure_method` in a process that measures nothing else (``peak_mem_process: "own"``)."""
    res = measure_method(*args, **kwargs)
    res["peak_mem_process"] = "own"
    return res


def measure_method_in_fresh_process(method_id: str, experiments_path: str | Path, num_classes: int,
                                    hr_size: int = 512, *, scale: int, preset: str = "paper", device: str = "cpu",
                                    warmup: int = 2, runs: int = 5, batch_sizes: Sequence[int] = (1, 4),
                                    counter: str = "fvcore", threads: int | None = None) -> dict[str, Any]:
    """:func:`measure_method` in a process of its own (forked from :mod:`benchcore.fork_server`), so that its
    peak memory is this method's.

    ``threads``: the child's intra-op threads (default: this process's ``torch.get_num_threads()``); see
    :func:`benchcore.metrics.efficiency.run_in_fresh_process`, which also says how errors come back.
    """
    return run_in_fresh_process(_measure_method_alone, (method_id, str(experiments_path), num_classes),
                                {"hr_size": hr_size, "scale": scale, "preset": preset, "device": device,
                                 "warmup": warmup, "runs": runs, "batch_sizes": tuple(batch_sizes),
                                 "counter": counter}, threads=threads)


def write_efficiency(path: str | Path, result: dict[str, Any]) -> Path:
    """Validate ``result`` against the report's schema and write it atomically (file stem must be the method)."""
    import jsonschema  # noqa: PLC0415

    from compare.report.collect import EFFICIENCY_SCHEMA  # noqa: PLC0415

    path = Path(path)
    if result.get("method") != path.stem:
        raise ValueError(f"{path}: the file name must be the method id {result.get('method')!r}.json")
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(EFFICIENCY_SCHEMA).iter_errors(result))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ValueError(f"{path}: invalid efficiency result, key '{where}': {err.message}")
    return atomic_write_json(path, result)


def main(argv: Sequence[str] | None = None, own_process: bool = False) -> int:
    """CLI: measure one method and write its efficiency JSON (``error: ...`` and status 2 on bad input).

    ``own_process``: this process measures only this method (``python -m``), recorded as ``peak_mem_process``.
    """
    p = argparse.ArgumentParser(prog="python -m compare.efficiency_runner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True)
    p.add_argument("--experiments", default="config/experiments.tsv", type=Path)
    p.add_argument("--num-classes", required=True, type=int)
    p.add_argument("--hr-size", type=int, default=512)
    p.add_argument("--scale", type=int, required=True, help="HR / LR scale of the input (the degradation's)")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper")
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--counter", choices=["fvcore", "torch"], default="fvcore")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    try:
        measure = _measure_method_alone if own_process else measure_method
        res = measure(a.method, a.experiments, a.num_classes, a.hr_size, scale=a.scale, preset=a.preset,
                      device=a.device, warmup=a.warmup, runs=a.runs, batch_sizes=a.batch_sizes, counter=a.counter)
        write_efficiency(a.out, res)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lat = res["latency"]["bs1"]
    print(json.dumps({"out": str(a.out), "params": {k: res["params"][k] for k in ("total", "inference")},
                      "gmac": round(res["flops"]["gmac"], 3), "latency_bs1_ms": round(lat["median_ms"], 2),
                      "device": res["device"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(own_process=True))

"""Calibration for the plan: per-image training and inference throughput of every model the configuration's jobs run,
and the start-up cost of a job's process, measured on this machine (``python -m compare.calibrate``; docs/plan.md).

What is measured, for each distinct model of the configuration's run specifications (same code the jobs build):

* ``sdconet/<variant>/<preset>@<side>``: SDCoNet (variants ``sdconet`` = SR branch on, ``no_sr``, ``separate``):
  training images/s (forward + backward + the engine's AdamW step, SR branch trainable) and inference images/s (the
  eval predict path, batch 1) on ``side`` px HR tiles with 2 random boxes each (the offline LR tiles, and the HR tile
  for the SR loss, when the specification reads them: ``model.lr.on_the_fly`` false);
* ``yolov8n@<side>`` / ``yolov8s@<side>``: ultralytics DetectionModel, training step (v8 detection loss + SGD) and
  fused eval forward;
* ``frcnn/<preset>@<side>``: torchvision Faster R-CNN (the suite's builder), training step and eval forward;
* ``sr/<model>/<preset>/x<scale>@<lr_patch>``: BasicSR network, training patches/s (L1 + Adam) and inference LR
  tiles/s at ``sr_infer@<lr_side>``;
* ``overhead``: seconds a job's fresh Python process takes before it computes (``import`` of its package, torch,
  ultralytics for the baselines), measured as a subprocess.

On the CPU every measurement uses ``--threads`` torch threads (default 1, the rules' ``threads``) and a training batch
of at most 2 (CPU throughput is nearly flat in the batch); on CUDA the specifications' own batches (capped at 16).
``--max-side N`` measures larger image sides at N px and lets the plan scale by pixel count (the stored CPU file:
256, so that the paper presets' 512 px figures take minutes instead of an hour on 2 cores).
The result is a JSON file that records the device name, torch version, date, git SHA, the command and every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from benchcore.atomic import atomic_write_json
from benchcore.provenance import device_string, git_sha, library_versions

REPO = Path(__file__).resolve().parents[1]

OVERHEAD_IMPORTS = {
    "python": "import json, yaml",
    "sdconet": "import torch, torchvision, sdconet.spec",
    "baselines": "import torch, torchvision, ultralytics, baselines.spec",
}


def _sync(device: str) -> None:
    import torch  # noqa: PLC0415

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, warmup: int, runs: int) -> float:
    """Fastest of ``runs`` timings of ``fn`` after ``warmup`` calls (the least disturbed by other processes)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def random_targets(n: int, side: int, num_classes: int, device: str, boxes: int = 2,
                   generator: Any = None) -> list[dict[str, Any]]:
    """``n`` detection targets of ``boxes`` random xyxy boxes (8..side/2 px inside a ``side`` square) and labels
    0..num_classes-1, drawn from ``generator`` (default: a new one seeded 0). Also used by
    ``benchmarks/bench_sdconet.py``."""
    import torch  # noqa: PLC0415

    g = generator if generator is not None else torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        wh = 8 + torch.rand(boxes, 2, generator=g) * (side / 2 - 8)
        xy = torch.rand(boxes, 2, generator=g) * (side - wh)
        out.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                    "labels": torch.randint(0, num_classes, (boxes,), generator=g).to(device)})
    return out


def sdconet_train_step(model: Any, images: Any, targets: list[dict[str, Any]], optim: Any,
                       amp_dtype: Any = None) -> Callable[[], None]:
    """One SDCoNet training step as a closure: the loss terms summed, gradients cleared, backward, optimizer step
    (what both the calibration and ``benchmarks/bench_sdconet.py`` time); under CUDA autocast to ``amp_dtype``
    when given, with the engine's loss scaling for float16."""
    import torch  # noqa: PLC0415

    from sdconet.routing import is_loss_term  # noqa: PLC0415

    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def step() -> None:
        with torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
            losses = model(images, targets)
        loss = sum(v for k, v in losses.items() if is_loss_term(k))
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()

    return step


def measure_sdconet(model_cfg: dict[str, Any], side: int, batch: int, device: str, warmup: int, runs: int,
                    train: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Training and inference images/s of an SDCoNet model config (a run spec's ``settings.model``). Training is
    timed under the run's precision and kernels, ``train`` (``amp``, ``amp_dtype``, ``deterministic``; None: the
    training defaults), as the engine applies them (:func:`sdconet.engine.autocast_dtype`,
    :func:`sdconet.engine.algorithms`); inference in fp32, as the test-set evaluation runs."""
    import torch  # noqa: PLC0415

    from sdconet.engine import algorithms, autocast_dtype  # noqa: PLC0415
    from sdconet.models.build import build_model  # noqa: PLC0415
    from sdconet.models.config import from_dict  # noqa: PLC0415
    from sdconet.train_config import TrainConfig, build_optimizer  # noqa: PLC0415

    cfg = dict(model_cfg)
    cfg["swin"] = {**cfg["swin"], "pretrained": None}
    torch.manual_seed(0)
    model = build_model(from_dict(cfg)).to(device)
    targets = random_targets(batch, side, int(cfg.get("num_classes") or 1), device)
    if cfg["lr"].get("on_the_fly", True):  # HR tiles in, the LR made inside the model
        images = torch.randn(batch, 3, side, side, device=device)
    else:  # offline LR tiles in, the HR tile in the targets for the SR loss
        lr_side = side // int(cfg["lr"]["scale"])
        images = torch.randn(batch, 3, lr_side, lr_side, device=device)
        for t in targets:
            t["hr"] = torch.rand(3, side, side, device=device)
    model.train()
    if hasattr(model, "set_sr_trainable"):
        model.set_sr_trainable(True)
    tc = TrainConfig(epochs=1, batch_size=batch, lr=1e-5, **dict(train or {}))
    optim = build_optimizer(model, tc)
    with algorithms(tc.deterministic):
        step = sdconet_train_step(model, images, targets, optim, autocast_dtype(tc, torch.device(device)))
        train_s = timed(step, device, warmup, runs)
    model.eval()
    x1 = images[:1]
    with torch.no_grad():
        infer_s = timed(lambda: model(x1), device, warmup, runs)
    return {"train_ips": batch / train_s, "infer_ips": 1.0 / infer_s, "batch": batch}


def measure_yolo(name: str, side: int, batch: int, device: str, warmup: int, runs: int, num_classes: int = 10
                 ) -> dict[str, float]:
    """Training and inference images/s of ``yolov8n`` / ``yolov8s`` (ultralytics DetectionModel)."""
    import copy  # noqa: PLC0415

    import sdconet  # noqa: F401, PLC0415  (offline defaults before ultralytics)
    import torch  # noqa: PLC0415
    import torchvision  # noqa: F401, PLC0415
    from ultralytics.cfg import get_cfg  # noqa: PLC0415
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415

    side = -(-int(side) // 32) * 32  # ultralytics rounds the image size up to a multiple of its stride (32)
    torch.manual_seed(0)
    model = DetectionModel(f"{name}.yaml", nc=num_classes, verbose=False).to(device)
    model.args = get_cfg()
    images = torch.rand(batch, 3, side, side, device=device)
    n_box = 2 * batch
    g = torch.Generator().manual_seed(0)
    yb = {"img": images, "batch_idx": torch.arange(batch).repeat_interleave(2).float().to(device),
          "cls": torch.randint(0, num_classes, (n_box, 1), generator=g).float().to(device),
          "bboxes": (0.25 + 0.5 * torch.rand(n_box, 4, generator=g)).clamp(0.05, 0.95).to(device)}
    yb["bboxes"][:, 2:] *= 0.3
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        loss, _ = model.loss(yb)
        optim.zero_grad(set_to_none=True)
        loss.sum().backward()
        optim.step()

    train_s = timed(step, device, warmup, runs)
    fused = copy.deepcopy(model).fuse(verbose=False).eval()
    with torch.no_grad():
        infer_s = timed(lambda: fused(images[:1]), device, warmup, runs)
    return {"train_ips": batch / train_s, "infer_ips": 1.0 / infer_s, "batch": batch}


def measure_frcnn(preset: str, side: int, batch: int, device: str, warmup: int, runs: int, num_classes: int = 10
                  ) -> dict[str, float]:
    """Training and inference images/s of the suite's Faster R-CNN (``baselines.frcnn.build_frcnn``)."""
    import torch  # noqa: PLC0415

    from baselines.frcnn import build_frcnn  # noqa: PLC0415

    torch.manual_seed(0)
    model = build_frcnn(num_classes, side, preset).to(device)
    images = [torch.rand(3, side, side, device=device) for _ in range(batch)]
    targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in random_targets(batch, side, num_classes, device)]
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        loss = sum(model(images, targets).values())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    train_s = timed(step, device, warmup, runs)
    model.eval()
    with torch.no_grad():
        infer_s = timed(lambda: model(images[:1]), device, warmup, runs)
    return {"train_ips": batch / train_s, "infer_ips": 1.0 / infer_s, "batch": batch}


def measure_sr(name: str, preset: str, scale: int, patch: int, batch: int, lr_side: int, device: str, warmup: int,
               runs: int) -> dict[str, float]:
    """Training patches/s (LR ``patch`` px, L1 + Adam) and inference LR tiles/s (``lr_side`` px) of an SR network."""
    import torch  # noqa: PLC0415

    from baselines.sr_models import build_sr_model  # noqa: PLC0415

    torch.manual_seed(0)
    model = build_sr_model(name, scale, preset).to(device)
    lq = torch.rand(batch, 3, patch, patch, device=device)
    gt = torch.rand(batch, 3, patch * scale, patch * scale, device=device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = torch.nn.functional.l1_loss(model(lq), gt)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    train_s = timed(step, device, warmup, runs)
    model.eval()
    x = torch.rand(1, 3, lr_side, lr_side, device=device)
    with torch.no_grad():
        infer_s = timed(lambda: model(x), device, warmup, runs)
    return {"train_ips": batch / train_s, "infer_ips": 1.0 / infer_s, "batch": batch}


def measure_overhead(runs: int = 3) -> dict[str, float]:
    """Seconds a fresh Python process takes to import what a job of each kind imports (fastest of ``runs``)."""
    out = {}
    for key, code in OVERHEAD_IMPORTS.items():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        out[key] = min(times)
    return out


def cap_sides(needs: dict[str, dict[str, Any]], max_side: int | None) -> dict[str, dict[str, Any]]:
    """``needs`` with every image side above ``max_side`` measured at ``max_side`` instead (key ``model@max_side``;
    the plan scales it by pixel count). SR needs keep their patch; their inference LR side is capped the same way."""
    if not max_side:
        return dict(needs)
    out: dict[str, dict[str, Any]] = {}
    for key, need in needs.items():
        need = dict(need)
        if need["kind"] == "sr":
            need["lr_side"] = min(int(need["lr_side"]), max_side)
        elif int(need["side"]) > max_side:
            need["side"] = max_side
            key = f"{key.rsplit('@', 1)[0]}@{max_side}"
        out.setdefault(key, need)
    return out


def calibrate(needs: dict[str, dict[str, Any]], device: str = "cpu", threads: int = 1, warmup: int = 1,
              runs: int = 2, log: Callable[[str], None] = print, max_side: int | None = None,
              done: dict[str, Any] | None = None, save: Callable[[dict[str, Any]], None] | None = None
              ) -> dict[str, Any]:
    """Measure every entry of ``needs`` ({key: what to build}, :func:`compare.plan.costs.calibration_needs`) and the
    process overhead; returns the calibration document. ``max_side``: :func:`cap_sides`; ``done``: figures measured
    before (``--resume``), kept and not measured again; ``save``: called with the partial document after each
    figure, so that a long calibration that stops keeps what it measured."""
    import torch  # noqa: PLC0415

    needs = cap_sides(needs, max_side)

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    if device == "cpu":
        torch.set_num_threads(threads)
    t_all = time.perf_counter()
    figures: dict[str, Any] = dict(done or {})

    def document(overhead: dict[str, float] | None) -> dict[str, Any]:
        return {"calibration_version": 1, "measured": True, "complete": overhead is not None, "device": device,
                "device_name": device_string(device), "threads": threads if device == "cpu" else None,
                "warmup": warmup, "runs": runs, "max_side": max_side, "date": _dt.date.today().isoformat(),
                "git_sha": git_sha(REPO), "versions": library_versions(),
                "command": " ".join([Path(sys.executable).name, "-m", "compare.calibrate", *sys.argv[1:]]),
                "duration_s": round(time.perf_counter() - t_all, 1), "figures": figures, "overhead_s": overhead or {}}

    for key, need in sorted(needs.items()):
        if key in figures:
            continue
        batch = min(int(need.get("batch") or 1), 2 if device == "cpu" else 16)
        t0 = time.perf_counter()
        kind = need["kind"]
        if kind == "sdconet":
            fig = measure_sdconet(need["model"], need["side"], batch, device, warmup, runs, need.get("train"))
        elif kind == "yolo":
            fig = measure_yolo(need["name"], need["side"], batch, device, warmup, runs)
        elif kind == "frcnn":
            fig = measure_frcnn(need["preset"], need["side"], batch, device, warmup, runs)
        elif kind == "sr":
            fig = measure_sr(need["name"], need["preset"], need["scale"], need["patch"], batch, need["lr_side"],
                             device, warmup, runs)
        else:
            raise ValueError(f"unknown calibration kind {kind!r} ({key})")
        figures[key] = {**fig, "side": need.get("side") or need.get("patch"), "kind": kind,
                        "lr_side": need.get("lr_side"),
                        "measure_s": round(time.perf_counter() - t0, 2)}
        log(f"  {key}: train {fig['train_ips']:.3g} img/s, infer {fig['infer_ips']:.3g} img/s "
            f"({time.perf_counter() - t0:.0f} s)")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        if save:
            save(document(None))
    overhead = measure_overhead()
    log("  overhead: " + ", ".join(f"{k} {v:.2f} s" for k, v in overhead.items()))
    return document(overhead)


def load_calibration(path: str | Path) -> dict[str, Any]:
    """Read a calibration file written by :func:`calibrate` (checks its version and that it was measured)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("calibration_version") != 1 or "figures" not in doc or "overhead_s" not in doc:
        raise ValueError(f"{path}: not a calibration file (calibration_version 1 with figures and overhead_s)")
    if doc.get("complete") is False:
        raise ValueError(f"{path}: an unfinished calibration (finish it: python -m compare.calibrate ... --resume)")
    return doc


def main(argv: list[str] | None = None) -> int:
    """``python -m compare.calibrate --configfile FILE [--device cpu|cuda] [--out FILE.json]``."""
    from compare.plan.costs import calibration_needs  # noqa: PLC0415
    from compare.plan.dag import dry_run_jobs  # noqa: PLC0415
    from compare.plan.workload import Workload, load_config  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", default=None,
                   help="workflow config(s) whose models to measure (repeat to merge the needs of several)")
    p.add_argument("--config", nargs="*", default=[], help="key=value overrides, as snakemake --config")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, the rules' threads)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--max-side", type=int, default=None,
                   help="measure larger image sides at this side and scale by pixel count (e.g. 256 on a CPU)")
    p.add_argument("--out", type=Path, required=True, help="calibration JSON to write")
    p.add_argument("--resume", action="store_true",
                   help="keep the figures already in --out (an unfinished run's) and measure only the rest")
    p.add_argument("--jobs", action="store_true",
                   help="also run the job calibration: the first --configfile's workflow, twice, on tiny synthetic "
                        "data (compare/plan/job_calibration.py; minutes)")
    p.add_argument("--cores", type=int, default=1, help="--cores of the job calibration's workflow runs (default 1)")
    a = p.parse_args(argv)
    needs: dict[str, dict[str, Any]] = {}
    for cf in a.configfile or [None]:
        wl = Workload(load_config(cf, a.config))
        jobs, _ = dry_run_jobs(cf, 1, a.config)
        needs.update(calibration_needs(jobs, wl, a.device))
    print(f"calibrating {len(needs)} models on {a.device}", file=sys.stderr)
    done = {}
    if a.resume and a.out.is_file():
        prev = json.loads(a.out.read_text(encoding="utf-8"))
        if prev.get("device") != a.device:
            raise SystemExit(f"--resume: {a.out} was measured on {prev.get('device')}, not {a.device}")
        done = prev.get("figures") or {}
        print(f"resuming: {len(done)} figures kept from {a.out}", file=sys.stderr)

    def save(doc: dict[str, Any]) -> None:
        atomic_write_json(a.out, {**doc, "configfiles": a.configfile})

    doc = calibrate(needs, a.device, a.threads, a.warmup, a.runs, log=lambda s: print(s, file=sys.stderr),
                    max_side=a.max_side, done=done, save=save)
    doc["configfiles"] = a.configfile
    if a.jobs:
        from compare.plan.job_calibration import calibrate_jobs  # noqa: PLC0415

        doc.update(calibrate_jobs((a.configfile or [None])[0], doc, a.config, a.cores,
                                  log=lambda s: print(s, file=sys.stderr)))
    elif a.resume and a.out.is_file():  # keep a job calibration already in the file
        prev = json.loads(a.out.read_text(encoding="utf-8"))
        doc.update({k: prev[k] for k in ("job_costs", "job_calibration") if k in prev})
    atomic_write_json(a.out, doc)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

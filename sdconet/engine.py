"""The training loop (spec section 5): AdamW groups, MultiStep + warm-up, clipping, AMP, routing, DDP, resume.

Model contract (train mode): ``model(images, targets, epoch=epoch)`` returns a dict of named, already weighted
scalar losses (``loss_sr`` only in routing phase 2); ``model.param_groups_spec()`` -> ``{"backbone": [...],
"sr": [...], "other": [...]}``; ``model.shared_parameters()``; ``model.set_sr_trainable(flag)`` and
``model.sr_enabled``. Targets are those of :class:`sdconet.data.TileDataset`, moved to the device.

Per epoch: routing phase applied, one pass over the shuffled data (order and flips depend on seed and epoch
only), validation on rank 0 (its RNG use is isolated), one JSON line appended to ``out_dir/train_log.jsonl``,
then ``epoch_XXX.pt`` + ``last.pt``. ``resume=True`` continues from ``last.pt`` and on CPU gives weights
bit-identical to an uninterrupted run. Launch DDP with ``torchrun`` (RANK/WORLD_SIZE/MASTER_* in the env).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sdconet.checkpoint import capture_rng_state, latest_checkpoint, load_checkpoint, restore_rng_state
from sdconet.checkpoint import save_epoch_checkpoint
from sdconet.data import build_loader, set_loader_epoch, targets_to
from sdconet.evaluate import evaluate
from sdconet.routing import RoutingSchedule, is_loss_term, routed_backward
from sdconet.train_config import TrainConfig, build_optimizer, build_scheduler
from benchcore.atomic import atomic_write_text
from benchcore.provenance import git_sha

LOG_NAME = "train_log.jsonl"
_RESUME_IGNORED = {"epochs", "workers", "log_every", "eval_every", "device", "keep_last", "eval_sr", "progress",
                   "deterministic"}
log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss term (or gradient norm) stopped the run; names the epoch, iteration and term(s)."""

    def __init__(self, epoch: int, iteration: int, terms: dict[str, float], note: str = "") -> None:
        self.epoch, self.iteration, self.terms = epoch, iteration, terms
        shown = ", ".join(f"{k}={v}" for k, v in terms.items())
        super().__init__(f"non-finite value at epoch {epoch}, iteration {iteration}: {shown}. {note}".strip())


@dataclass(frozen=True)
class DistInfo:
    """Process-group facts of this process."""

    enabled: bool
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False


def init_distributed(distributed: bool, device_spec: str) -> DistInfo:
    """Join (or create, from torchrun's env) the process group: nccl on CUDA, gloo on CPU."""
    if not distributed:
        return DistInfo(False)
    owns = False
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"distributed=True needs torchrun's environment; missing {missing}")
        cuda = device_spec != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local)
        # rank 0 validates alone while the others wait in the next collective: allow a long timeout
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=90))
        owns = True
    return DistInfo(True, dist.get_rank(), dist.get_world_size(), local, owns)


def resolve_device(spec: str | None, dd: DistInfo) -> torch.device:
    """"auto" (or None) -> CUDA when available (``cuda:LOCAL_RANK`` under DDP), else CPU; "cuda" -> that GPU."""
    if spec is None or spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        return torch.device("cuda", dd.local_rank if dd.enabled else torch.cuda.current_device())
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _gather(obj: Any, dd: DistInfo) -> list[Any]:
    if not dd.enabled:
        return [obj]
    out: list[Any] = [None] * dd.world
    dist.all_gather_object(out, obj)
    return out


def _check_finite(terms: dict[str, float], epoch: int, it: int, dd: DistInfo, device: torch.device,
                  note: str) -> None:
    """Raise :class:`NonFiniteLossError` on every rank when any rank has a NaN/inf loss term."""
    bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
    any_bad = bool(bad)
    if dd.enabled:  # every rank must stop together, or the others hang in the next all-reduce
        flag = torch.tensor([float(any_bad)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        any_bad = bool(flag.item() > 0)
    if any_bad:
        raise NonFiniteLossError(epoch, it, bad or {"<on another rank>": math.nan}, note)


def _truncate_log(path: Path, start_epoch: int) -> None:
    """Keep only the log lines of epochs before ``start_epoch`` (a resume re-runs the later ones)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] < start_epoch]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str, allow_nan=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def train(model: nn.Module, train_set: Any, val_set: Any | None, cfg: TrainConfig, out_dir: str | Path,
          resume: bool = False, distributed: bool = False) -> dict[str, Any]:
    """Train ``model`` for ``cfg.epochs`` epochs; returns ``{"history", "global_step", "last_checkpoint", ...}``.

    Args:
        model: a model following the module contract (its initial weights are the caller's).
        train_set: a :class:`sdconet.data.TileDataset` (``train=True``).
        val_set: dataset with a ``coco`` dict (evaluated on rank 0 every ``cfg.eval_every`` epochs) or None.
        cfg: the :class:`TrainConfig`.
        out_dir: checkpoints and ``train_log.jsonl`` (written by rank 0 only).
        resume: continue from ``out_dir/last.pt`` when it exists.
        distributed: DDP from torchrun's environment (or an already initialised process group).

    Raises:
        NonFiniteLossError: a loss term or the gradient norm was NaN/inf (nothing is saved for that epoch).
    """
    out_dir = Path(out_dir)
    dd = init_distributed(distributed, cfg.device)
    try:
        with algorithms(cfg.deterministic):
            return _run(model, train_set, val_set, cfg, out_dir, resume, dd)
    finally:
        if dd.owns_group:
            dist.destroy_process_group()


@contextlib.contextmanager
def algorithms(deterministic: bool) -> Iterator[None]:
    """The kernels a run trains with (``train.deterministic``): cuDNN autotuning off, and PyTorch's deterministic
    algorithms (warn-only where an op has none) when ``deterministic``; the previous state is restored after.
    The calibration of the plan measures under the same context, so its figures are what the run will do."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark)
    if deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]


def _set_aside_if_stale(ckpt: Path, cfg: TrainConfig, out_dir: Path, rank: int) -> bool:
    """True (and the run's checkpoints moved to ``out_dir/stale-<time>/``) when ``ckpt`` was made under other
    settings: a key outside :data:`_RESUME_IGNORED` differs, or it holds more epochs than ``cfg.epochs`` asks for.
    Resuming it would train (or keep) a different experiment than the one configured, so the run starts over;
    nothing is deleted."""
    meta = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
    now = cfg.to_dict()
    diff = {k: (v, now.get(k)) for k, v in (meta.get("config") or {}).items()
            if k not in _RESUME_IGNORED and now.get(k) != v}
    too_long = int(meta["epoch"]) + 1 > cfg.epochs
    if not diff and not too_long:
        return False
    why = (f"settings changed (saved, now): {diff}" if diff else
           f"it holds {int(meta['epoch']) + 1} epochs, the run asks for {cfg.epochs}")
    del meta
    if dist.is_initialized():
        dist.barrier()  # every rank has read the checkpoint before rank 0 moves it
    if rank == 0:
        dest = out_dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.mkdir(parents=True, exist_ok=True)
        for f in [*out_dir.glob("epoch_*.pt"), out_dir / "last.pt", out_dir / LOG_NAME]:
            if f.is_file():
                f.rename(dest / f.name)
        log.warning("not resuming %s: %s; starting from epoch 0 (old checkpoints moved to %s)", ckpt, why, dest)
    return True


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype a run trains (and validates) under autocast, or None for float32: ``train.amp`` with
    ``train.amp_dtype`` on CUDA; AMP is ignored on the CPU."""
    if not (cfg.amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16


def _run(model: nn.Module, train_set: Any, val_set: Any | None, cfg: TrainConfig, out_dir: Path,
         resume: bool, dd: DistInfo) -> dict[str, Any]:
    device = resolve_device(cfg.device, dd)
    amp_dtype = autocast_dtype(cfg, device)
    seed_everything(cfg.seed + dd.rank)
    core = model.to(device)
    optimizer = build_optimizer(core, cfg)
    loader = build_loader(train_set, cfg.batch_size, True, cfg.seed, cfg.workers, dd.enabled)
    if len(loader) == 0:
        raise ValueError("the training set is empty")
    scheduler = build_scheduler(optimizer, cfg, math.ceil(len(loader) / cfg.accumulate))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)  # bfloat16 needs no loss scaling
    routing = RoutingSchedule(cfg.routing, cfg.unfreeze_epoch)
    net: nn.Module = core
    if dd.enabled:
        core.set_sr_trainable(True)  # DDP only registers parameters that require grad when it is built
        net = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
    start_epoch, step, last_ckpt = 0, 0, None
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None and _set_aside_if_stale(ckpt, cfg, out_dir, dd.rank):
        ckpt = None
    if ckpt is not None:
        state = load_checkpoint(ckpt, core, optimizer, scheduler, scaler, rank=dd.rank, map_location="cpu")
        start_epoch, step, last_ckpt = state["epoch"] + 1, state["global_step"], ckpt
    elif resume:
        log.info("resume requested but %s has no checkpoint; starting from epoch 0", out_dir)
    sha = git_sha() if dd.rank == 0 else ""
    if dd.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_log(out_dir / LOG_NAME, start_epoch)
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch, cfg.epochs):
        phase = routing.apply(net, epoch)
        set_loader_epoch(loader, epoch, cfg.seed)
        note = f"Nothing was saved for epoch {epoch}; last good checkpoint: {last_ckpt or 'none'}."
        record, step = _train_epoch(net, core, loader, optimizer, scheduler, scaler, cfg, epoch, step, routing,
                                    dd, device, amp_dtype, note)
        record.update(phase=phase, routing=cfg.routing, global_step=step)
        if val_set is not None and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            if dd.rank == 0:
                saved = capture_rng_state()
                res = evaluate(core, val_set, val_set.coco, device, batch_size=cfg.batch_size,
                               sr=cfg.eval_sr and phase == 2, workers=cfg.workers, amp_dtype=amp_dtype)
                restore_rng_state(saved)
                record["val"] = {"detection": res["detection"], "sr": res["sr"]}
        rng_states = _gather(capture_rng_state(), dd)
        if dd.rank == 0:
            _append_log(out_dir / LOG_NAME, record)
            log.info("epoch %d: %s", epoch, {k: record[k] for k in ("phase", "loss", "time_s", "images_per_s")})
            last_ckpt = save_epoch_checkpoint(out_dir, core, optimizer, scheduler, scaler, epoch, cfg.to_dict(),
                                              {"val": record.get("val")}, keep_last=cfg.keep_last,
                                              global_step=step, rng_states=rng_states, sha=sha)
        if dd.enabled:
            dist.barrier()
        last_ckpt = out_dir / "last.pt"
        history.append(record)
    return {"history": history, "global_step": step, "start_epoch": start_epoch, "out_dir": str(out_dir),
            "last_checkpoint": str(last_ckpt) if last_ckpt is not None else None}


def _train_epoch(net: nn.Module, core: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: Any, cfg: TrainConfig, epoch: int, step: int, routing: RoutingSchedule, dd: DistInfo,
                 device: torch.device, amp_dtype: torch.dtype | None, note: str) -> tuple[dict[str, Any], int]:
    """One pass over ``loader``; returns the epoch's log record (losses averaged over ranks) and the step."""
    net.train()
    project = routing.projects(epoch)
    shared = list(core.shared_parameters()) if project else []
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n, acc = len(loader), cfg.accumulate
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    n_img, conflicts, norms = 0, 0, []
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, total=n, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
               disable=not (cfg.progress and dd.rank == 0))
    for it, (images, targets) in enumerate(bar):
        group = min(acc, n - (it // acc) * acc)
        last = (it % acc) + 1 == group
        images, targets = images.to(device, non_blocking=True), targets_to(targets, device)
        sync_ctx = net.no_sync() if dd.enabled and (project or not last) else contextlib.nullcontext()
        amp_ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with sync_ctx:
            with amp_ctx:
                losses: dict[str, Tensor] = net(images, targets, epoch=epoch)
            names = list(losses)
            values = torch.stack([torch.as_tensor(losses[k]).detach().float().reshape(()).to(device)
                                  for k in names]).cpu().tolist()
            terms = [(k, v) for k, v in zip(names, values) if is_loss_term(k)]
            _check_finite(dict(terms), epoch, it, dd, device, note)
            if project:
                info = routed_backward({k: v / group for k, v in losses.items()}, shared, scaler, params=params,
                                       sync=dd.enabled)
                conflicts += int(info["projected"])
            else:
                scaler.scale(sum(v for k, v in losses.items() if is_loss_term(k)) / group).backward()
        for k, v in zip(names, values):
            sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
        n_img += images.shape[0]
        if last:
            if scaler.is_enabled():
                scaler.unscale_(optimizer)
            with_grad = [p for p in params if p.grad is not None]
            norm = (torch.nn.utils.clip_grad_norm_(with_grad, cfg.clip_grad or math.inf) if with_grad
                    else torch.zeros(()))
            norms.append(float(norm))
            if not scaler.is_enabled() and not math.isfinite(norms[-1]):  # fp32 / bfloat16: nothing skips it
                raise NonFiniteLossError(epoch, it, {"grad_norm": norms[-1]}, note)
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
        if (it + 1) % cfg.log_every == 0 and dd.rank == 0:
            total = sum(v for _, v in terms)
            bar.set_postfix(loss=f"{total:.4f}", lr=f"{max(lrs.values()):.2e}")
            log.debug("epoch %d iter %d/%d loss %.5f", epoch, it + 1, n, total)
    wall = time.perf_counter() - t0
    parts = _gather((sums, counts, n_img, conflicts, norms), dd)
    tot_sums: dict[str, float] = {}
    tot_counts: dict[str, int] = {}
    for s, c, *_ in parts:
        for k in s:
            tot_sums[k], tot_counts[k] = tot_sums.get(k, 0.0) + s[k], tot_counts.get(k, 0) + c[k]
    means = {k: tot_sums[k] / tot_counts[k] for k in sorted(tot_sums)}
    images_total = sum(p[2] for p in parts)
    finite = [x for x in norms if math.isfinite(x)]  # AMP: GradScaler skipped the steps with inf/NaN grads
    record: dict[str, Any] = {
        "epoch": epoch, "lr": lrs, "losses": means, "loss": sum(v for k, v in means.items() if is_loss_term(k)),
        "grad_norm": float(np.mean(finite)) if finite else None, "nonfinite_grad_steps": len(norms) - len(finite),
        "iters": n, "images": images_total,
        "time_s": wall, "images_per_s": images_total / wall if wall > 0 else None,
    }
    if project:
        record["projection"] = {"micro_batches": n * dd.world, "conflicting": sum(p[3] for p in parts)}
    return record, step

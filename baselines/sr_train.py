"""Train a BasicSR architecture on paired HR/LR tiles with a small loop of our own.

Why not BasicSR's ``basicsr/train.py``: it is driven by a YAML option tree that it rewrites at start
(``experiments/<name>`` and ``tb_logger/`` under its *root path*, a global root logger, renaming an
existing experiment to ``_archived_<time>``), it resumes from a ``.state`` file plus a separate model
file that the user must point at, and its paired dataset wants its own meta-file conventions. Driving it
from Snakemake would mean generating options, patching its global paths and parsing its logs. The part we
need (aligned random crops + flips, L1, Adam, multi-step LR) is ~100 lines, so we keep BasicSR's
*architectures* and *loss* (``basicsr.losses.basic_loss.L1Loss``) and write the loop ourselves, with:

* atomic checkpoints (``out_dir/checkpoints/last.pt``: model, optimiser, iteration, RNG states, config,
  git SHA) every ``checkpoint_every`` iterations and at the end;
* exact resume: every random crop/flip is a pure function of ``(seed, sample index)``, and the global
  RNG states (SwinIR's drop-path) are restored, so an interrupted + resumed run gives the same weights
  as an uninterrupted one (bit-identical on CPU);
* ``out_dir/log.jsonl`` (one JSON line per ``log_every`` iterations), a tqdm bar, and a clear error on a
  non-finite loss or a missing / mismatched HR-LR pair (naming the file).

The learning rate is halved at 50/80/90/95 % of ``iters`` (SwinIR's schedule, in fractions).

Initialisation (``init``, ``docs/weights.md``): ``scratch`` (random, the default: trained on the dataset's pairs
only), ``div2k`` (the published DIV2K weights of the model and scale, which the workflow stages; preset paper) or
``file``. The weights are loaded before the first iteration (:func:`load_sr_init`), so training fine-tunes them on the
dataset's pairs; a resumed run continues from its checkpoint instead. Nothing is ever downloaded.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from baselines._runtime import (JsonlLog, NonFiniteLossError, PendingLosses, load_resume_checkpoint, resolve_device,
                                rng_state, sample_rng, save_checkpoint, seed_everything, set_rng_state)
from baselines.sr_models import build_sr_model, sr_model_spec
from data_prep.errors import DataError
from benchcore.atomic import atomic_file
from benchcore.provenance import git_sha
from benchcore.weights import INIT_FILES, sha256sum

__all__ = ["NonFiniteLossError", "Pair", "PairError", "PairPatchDataset", "SRInitError", "init_state_dict",
           "list_pairs", "load_sr_init", "lr_at", "read_rgb", "to_tensor", "train_sr"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LR_MILESTONES = (0.5, 0.8, 0.9, 0.95)
# Keys of the config that must match for a resume to be "exact".
_RESUME_KEYS = ("model", "scale", "preset", "batch_size", "patch_size", "lr", "seed", "part")
SR_INITS = ("scratch", "div2k", "file")
#: Buffers a network derives from its own arguments, never read from an init file: SwinIR's shifted-window attention
#: mask (sized by ``img_size``: the DIV2K files are s48, the paper preset builds img_size 64, the DF2K setting) and its
#: relative position index (a constant of the window size). The model keeps its own; every other tensor must match.
_DERIVED_BUFFERS = ("attn_mask", "relative_position_index")


class SRInitError(ValueError):
    """An SR init file that is missing, unreadable or does not fit the network (the message names the file)."""


class PairError(DataError):
    """A missing, extra or size-mismatched HR/LR pair; the message names the file."""


@dataclass(frozen=True)
class Pair:
    """One HR/LR tile pair (``hr_size``/``lr_size`` are (width, height))."""

    name: str
    hr: Path
    lr: Path
    hr_size: tuple[int, int]
    lr_size: tuple[int, int]


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise PairError(f"image folder not found: {folder}")
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS}


def list_pairs(hr_dir: str | os.PathLike, lr_dir: str | os.PathLike, scale: int) -> list[Pair]:
    """Match ``hr_dir``/``lr_dir`` by file name and check ``LR size == HR size // scale``."""
    hr, lr = _images(Path(hr_dir)), _images(Path(lr_dir))
    if not hr:
        raise PairError(f"no images in {hr_dir}")
    for name in sorted(set(hr) ^ set(lr)):
        missing = Path(lr_dir if name in hr else hr_dir) / name
        raise PairError(f"missing pair: {missing} does not exist (its partner is {(hr.get(name) or lr[name])})")
    pairs = []
    for name in sorted(hr):
        with Image.open(hr[name]) as a, Image.open(lr[name]) as b:
            hs, ls = a.size, b.size
        if (hs[0] // scale, hs[1] // scale) != ls:
            raise PairError(f"size mismatch: {lr[name]} is {ls[0]}x{ls[1]} but {hr[name]} is {hs[0]}x{hs[1]}, "
                            f"expected LR = HR // {scale} = {hs[0] // scale}x{hs[1] // scale}")
        pairs.append(Pair(name, hr[name], lr[name], hs, ls))
    return pairs


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB HWC array of an image file."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float CHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


class PairPatchDataset(Dataset):
    """Sample ``k`` = an aligned random (HR patch, LR patch) pair, a pure function of ``(seed, k)``.

    Augmentation as BasicSR's ``augment``: horizontal flip, vertical flip, transpose (each p=0.5).
    """

    def __init__(self, pairs: Sequence[Pair], scale: int, patch_size: int, seed: int, cache: bool = False):
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} (HR) must be divisible by scale {scale}")
        self.pairs, self.scale, self.patch, self.seed = list(pairs), scale, patch_size, seed
        lr_patch = patch_size // scale
        for p in self.pairs:
            if min(p.lr_size) < lr_patch:
                raise PairError(f"{p.lr} ({p.lr_size[0]}x{p.lr_size[1]}) is smaller than the LR patch {lr_patch}")
        self._cache = {p.name: (read_rgb(p.hr), read_rgb(p.lr)) for p in self.pairs} if cache else None

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = sample_rng(self.seed, k)
        pair = self.pairs[int(rng.integers(len(self.pairs)))]
        hr, lr = self._cache[pair.name] if self._cache is not None else (read_rgb(pair.hr), read_rgb(pair.lr))
        lp = self.patch // self.scale
        y, x = int(rng.integers(lr.shape[0] - lp + 1)), int(rng.integers(lr.shape[1] - lp + 1))
        s = self.scale
        lr = lr[y:y + lp, x:x + lp]
        hr = hr[y * s:(y + lp) * s, x * s:(x + lp) * s]
        hflip, vflip, rot = rng.random(3) < 0.5
        if hflip:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        if vflip:
            lr, hr = lr[::-1], hr[::-1]
        if rot:
            lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
        return to_tensor(lr), to_tensor(hr)


def init_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of an SR weights file: BasicSR's layout (``{"params_ema": ...}`` before ``{"params": ...}``, as
    :func:`baselines.sr_models.load_sr_weights` reads it), one of our checkpoints (``model``) or a bare state dict;
    ``module.`` prefixes (DataParallel) are dropped, as BasicSR's ``load_network`` does."""
    from benchcore.checkpoints import load_tensors  # noqa: PLC0415

    blob = load_tensors(path, ("model", "params_ema", "params"), what="SR init file", error=SRInitError)
    if not blob:
        raise SRInitError(f"{path}: no state dict found (expected BasicSR's {{'params': ...}} or "
                          f"{{'params_ema': ...}})")
    return blob


def load_sr_init(model: torch.nn.Module, path: str | os.PathLike, what: str = "the SR network") -> dict[str, Any]:
    """Load the init file ``path`` into ``model``: every parameter and persistent buffer must be in the file with
    its shape (a strict load), except the derived buffers (:data:`_DERIVED_BUFFERS`), which the model keeps.

    Returns:
        ``{"file", "sha256", "tensors" (loaded), "derived_kept" (buffers the model kept)}``.

    Raises:
        SRInitError: a missing file, or tensors missing / unexpected / of another shape (the first few named).
    """
    def derived(key: str) -> bool:
        return key.rsplit(".", 1)[-1] in _DERIVED_BUFFERS

    own = model.state_dict()
    sd = {k: v for k, v in init_state_dict(path).items() if not derived(k)}
    missing = [k for k in own if not derived(k) and k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
             if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

        parts = [f"{label}: {few(keys)}" for label, keys in (("missing", missing), ("not in the network", unexpected),
                                                              ("other shape (file vs network)", wrong)) if keys]
        raise SRInitError(f"{path} does not fit {what} ({'; '.join(parts)}); is it the file of this model and scale, "
                          f"preset paper?")
    model.load_state_dict(sd, strict=False)
    return {"file": str(path), "sha256": sha256sum(path), "tensors": len(sd),
            "derived_kept": sum(derived(k) for k in own)}


def lr_at(base_lr: float, it: int, iters: int) -> float:
    """Learning rate of iteration ``it`` (0-based): halved at each of :data:`LR_MILESTONES`."""
    return base_lr * 0.5 ** sum(it >= int(m * iters) for m in LR_MILESTONES)


def train_sr(model_name: str, scale: int, pairs_dir: str | os.PathLike, out_dir: str | os.PathLike, iters: int,
             batch_size: int = 16, patch_size: int = 96, lr: float = 2e-4, seed: int = 0, resume: bool = False,
             device: str | torch.device | None = "cpu", preset: str = "paper", part: str = "train",
             checkpoint_every: int = 1000, log_every: int = 10, num_workers: int = 0,
             cache_images: bool = False, init: str = "scratch",
             weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train ``model_name`` on ``pairs_dir/<part>/{HR,LR}`` for ``iters`` iterations.

    ``patch_size`` is the HR patch side. With ``resume=True`` training continues from
    ``out_dir/checkpoints/last.pt`` when it exists (its config must match, ``iters`` may grow); without it
    any previous checkpoint/log in ``out_dir`` is overwritten. ``init`` / ``weights``: the initialisation (module
    docstring), loaded before the first iteration and recorded in the config of ``model.pth`` and in the summary.
    Returns a summary dict (paths, final loss, ``init``).
    """
    if init not in SR_INITS:
        raise ValueError(f"unknown SR init {init!r}; expected one of {SR_INITS}")
    if init == "scratch" and weights is not None:
        raise ValueError(f"SR init 'scratch' but a weights file is named ({weights}); use init 'file' to start from it")
    if init != "scratch" and weights is None:
        name = INIT_FILES.get((f"{model_name.lower()}_x{int(scale)}", "div2k"), "<file>")
        raise ValueError(f"SR init {init!r} needs its file (the workflow stages it: docs/weights.md; on the command "
                         f"line, --set sr.weights=/path/to/{name})")
    out, dev = Path(out_dir), resolve_device(device)
    config = {"model": model_name.lower(), "scale": int(scale), "preset": preset, "iters": int(iters),
              "batch_size": int(batch_size), "patch_size": int(patch_size), "lr": float(lr), "seed": int(seed),
              "part": part, "pairs_dir": str(Path(pairs_dir).resolve()), "spec": sr_model_spec(model_name, scale, preset),
              "init": init, "weights": str(weights) if weights is not None else None}
    pairs = list_pairs(Path(pairs_dir) / part / "HR", Path(pairs_dir) / part / "LR", int(scale))
    ckpt_path = out / "checkpoints" / "last.pt"
    seed_everything(seed)
    torch.backends.cudnn.benchmark = False
    model = build_sr_model(model_name, scale, preset).to(dev)
    from basicsr.losses.basic_loss import L1Loss  # noqa: PLC0415

    criterion = L1Loss(loss_weight=1.0, reduction="mean")
    optim = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    start = 0
    init_report: dict[str, Any] = {"init": init, "file": config["weights"]}
    if resume and ckpt_path.is_file():
        ckpt = load_resume_checkpoint(ckpt_path, config, _RESUME_KEYS)
        if ckpt["config"].get("init", "scratch") != init:  # checkpoints before init existed started from scratch
            raise ValueError(f"cannot resume from {ckpt_path}: it started from init "
                             f"{ckpt['config'].get('init', 'scratch')!r}, the config now says {init!r}")
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["iteration"])
        set_rng_state(ckpt["rng"])
        init_report["resumed"] = True  # the checkpoint's weights, not the init file's
    elif init != "scratch":
        init_report.update(load_sr_init(model, weights, f"{model_name} x{scale} (preset {preset})"))
    log = JsonlLog(out / "log.jsonl", resume_step=start if resume else None)

    def checkpoint(it: int) -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": optim.state_dict(), "iteration": it,
                                    "rng": rng_state(), "config": config, "git_sha": git_sha()})

    data = PairPatchDataset(pairs, int(scale), int(patch_size), int(seed), cache=cache_images)
    batches = [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(start, iters)]
    # Own generator: a DataLoader iterator otherwise draws its worker base seed from the global torch RNG,
    # which a resumed run would consume once more than an uninterrupted one (SwinIR's drop-path uses it).
    loader = DataLoader(data, batch_sampler=batches, num_workers=num_workers, pin_memory=dev.type == "cuda",
                        generator=torch.Generator().manual_seed(int(seed)))
    model.train()
    t0, loss_value, window = time.time(), float("nan"), []
    pending = PendingLosses(out)  # read once per log line / checkpoint, not per step (a sync on CUDA)
    bar = tqdm(total=iters, initial=start, desc=f"{model_name} x{scale}", unit="it", disable=None)
    for it, (lr_t, hr_t) in enumerate(loader, start=start):
        for group in optim.param_groups:
            group["lr"] = lr_at(lr, it, iters)
        lr_t, hr_t = lr_t.to(dev, non_blocking=True), hr_t.to(dev, non_blocking=True)
        loss = criterion(model(lr_t), hr_t)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        done = it + 1
        pending.add(done, {"l1": loss})
        bar.update(1)
        if done % log_every == 0 or done == iters or done % checkpoint_every == 0:
            window += [terms["l1"] for _, terms in pending.flush()]
            loss_value = window[-1]
        if done % log_every == 0 or done == iters:
            log.write({"iter": done, "l1": float(np.mean(window)), "lr": optim.param_groups[0]["lr"],
                       "elapsed_s": round(time.time() - t0, 3)})
            bar.set_postfix(l1=f"{np.mean(window):.4f}")
            window = []
        if done % checkpoint_every == 0 and done != iters:
            checkpoint(done)
    bar.close()
    checkpoint(iters)
    final = out / "model.pth"
    with atomic_file(final, "wb") as fh:  # BasicSR-style weights file ("params" key)
        torch.save({"params": model.state_dict(), "config": config}, fh)
    return {"iterations": iters, "resumed_from": start if start else None, "final_loss": loss_value,
            "checkpoint": str(ckpt_path), "weights": str(final), "log": str(out / "log.jsonl"),
            "seconds": round(time.time() - t0, 3), "device": str(dev), "num_pairs": len(pairs),
            "init": init_report}

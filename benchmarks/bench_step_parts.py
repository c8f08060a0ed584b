"""Where SDCoNet's SR-on training step spends its time: forward + backward of each stage on its own, CPU.

Runs the paper preset (``--preset``; random weights, ``--hr-size`` HR tiles, batch ``--batch``, 2 random boxes
per image) once to get each stage's real inputs, then times, each as forward + backward of that stage alone (its
inputs detached, median of ``--runs`` after one warm-up): the Swin encoder, the neck, the SR decoder, the detection branch
(saliency, encoder, DINO head, losses), and the whole model for comparison. ``--head-layouts`` adds the SR decoder's
pixel-shuffle head (PatchUnEmbed -> 3x3 convs -> pixel shuffle -> conv_last, L1 loss) fed channels-last, as the
model runs it, against the same head fed an NCHW copy (what it ran before). ``--saved-memory`` adds the memory a
training step's tensors need, device-independent: the bytes autograd saves for the backward pass (each storage once,
parameters excluded; counted with ``torch.autograd.graph.saved_tensors_hooks``) with the SR branch frozen and on, and
the parameters, their gradients and AdamW's two moments.

    .venv/bin/python benchmarks/bench_step_parts.py [--runs 3] [--head-layouts] [--saved-memory] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_sdconet import _timed, batch, build  # noqa: E402


def median_s(fn: Callable[[], object], runs: int) -> float:
    """Median wall seconds of ``fn`` over ``runs`` calls after one warm-up call (``bench_sdconet``'s loop)."""
    return statistics.median(_timed(fn, "cpu", 1, runs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--hr-size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--head-layouts", action="store_true", help="also the SR head fed channels-last vs NCHW")
    ap.add_argument("--saved-memory", action="store_true", help="also the GiB a step saves for the backward pass")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from sdconet.models.sdconet import prepare_lr  # noqa: PLC0415
    from sdconet.models.sr_decoder import conv_transpose_tokens  # noqa: PLC0415

    torch.manual_seed(0)
    m = build("sdconet", a.preset, 10, 2)
    images, targets = batch(a.batch, a.hr_size, 2, 10, "cpu")
    m.train()
    m.set_sr_trainable(True)
    hr = (a.hr_size, a.hr_size)
    lr = prepare_lr(images, m.cfg.lr)
    with torch.no_grad():
        enc = m.backbone(lr)
        feats, res_4 = m.neck(enc["maps"], need_sr=True)

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().requires_grad_()

    maps, res_x = [leaf(t) for t in enc["maps"]], [leaf(t) for t in enc["res_x"]]
    feats, res_4 = [leaf(t) for t in feats], leaf(res_4)

    def backbone() -> None:
        out = m.backbone(lr)
        (sum(t.mean() for t in out["res_x"])).backward()

    def neck() -> None:
        f, r4 = m.neck(maps, need_sr=True)
        (sum(t.mean() for t in f) + r4.mean()).backward()

    def sr_decoder() -> None:
        F.l1_loss(m.sr_decoder(res_x, res_4, out_size=hr), images).backward()

    def detector() -> None:
        sum(m.detector(feats, hr, targets).values()).backward()

    def whole() -> None:
        m.zero_grad(set_to_none=True)
        sum(m(images, targets).values()).backward()

    rows = {"torch_threads": torch.get_num_threads(), "preset": a.preset, "batch": a.batch, "hr_size": a.hr_size}
    for name, fn in (("backbone", backbone), ("neck", neck), ("sr_decoder", sr_decoder), ("detector", detector),
                     ("whole_model", whole)):
        rows[f"{name}_s"] = round(median_s(fn, a.runs), 4)
        print(f"{name:12s} forward + backward {rows[f'{name}_s']:.3f} s", flush=True)
    if a.head_layouts:
        d = m.sr_decoder
        tokens = leaf(torch.randn(a.batch, a.hr_size // 8, a.hr_size // 8, d.widths[3]))

        def head(nchw: bool) -> Callable[[], None]:
            def run() -> None:
                y = conv_transpose_tokens(tokens, d.patch_unembed).permute(0, 3, 1, 2)
                x = d.head(y.contiguous() if nchw else y) + d.rgb_mean
                F.l1_loss(x, images).backward()
            return run

        for _ in range(2):  # alternating, so that a drifting machine affects both alike
            for label, nchw in (("sr_head_channels_last", False), ("sr_head_nchw", True)):
                rows.setdefault(f"{label}_s", []).append(round(median_s(head(nchw), a.runs), 4))
        for label in ("sr_head_channels_last", "sr_head_nchw"):
            print(f"{label:22s} forward + backward {statistics.median(rows[f'{label}_s']):.3f} s")
    if a.saved_memory:
        rows.update(saved_memory(m, images, targets))
        for k, v in rows.items():
            if k.endswith("_gib"):
                print(f"{k:32s} {v:.2f} GiB")
    print(json.dumps(rows))
    return 0


def saved_memory(model: torch.nn.Module, images: torch.Tensor, targets: list[dict]) -> dict[str, float]:
    """GiB saved for the backward pass per routing phase, and of the parameters / gradients / AdamW moments."""
    gib = 2 ** 30
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    out: dict[str, float] = {}
    for sr in (False, True):
        model.set_sr_trainable(sr)
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses = model(images, targets)
        out[f"saved_for_backward_sr_{'on' if sr else 'frozen'}_gib"] = round(
            sum(n for ptr, n in storages.items() if ptr not in params) / gib, 4)
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    out["params_grads_adamw_moments_gib"] = round(4 * weights / gib, 4)
    return out


if __name__ == "__main__":
    raise SystemExit(main())

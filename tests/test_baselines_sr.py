"""SR baselines: BasicSR archs, our training loop (loss, exact resume, errors), inference and bicubic PSNR."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from baselines import sr_train
from baselines.interp import upscale_folder
from baselines.sr_infer import infer_sr
from baselines.sr_models import build_sr_model, count_parameters
from baselines.sr_train import PairError, list_pairs, train_sr

# BasicSR's SwinIR calls torch.meshgrid without indexing= (its own code, harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")


def _smooth_rgb(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random RGB image (bicubic upsampling of 8x8 noise): learnable by a tiny SR net."""
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return np.asarray(small.resize((size, size), Image.Resampling.BICUBIC))


def _make_pairs(root: Path, n: int = 4, size: int = 32, scale: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("HR", "LR"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        hr = Image.fromarray(_smooth_rgb(rng, size))
        hr.save(root / "train" / "HR" / f"t{i}.png")
        hr.resize((size // scale, size // scale), Image.Resampling.BICUBIC).save(root / "train" / "LR" / f"t{i}.png")
    return root


def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", ["edsr", "rrdb", "swinir"])
def test_tiny_arch_output_is_scale_times_input(name: str, scale: int) -> None:
    model = build_sr_model(name, scale, "tiny").eval()
    x = torch.rand(2, 3, 11, 14)  # odd sizes: RRDB x2 (pixel-unshuffle) and SwinIR (windows) must pad
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 11 * scale, 14 * scale)
    assert torch.isfinite(y).all()


def test_paper_presets_match_published_sizes() -> None:
    # EDSR-baseline x2: 1.37 M; SwinIR classical x2: 11.75 M (paper: 11.8 M); RRDBNet (23 blocks): 16.7 M.
    assert count_parameters(build_sr_model("edsr", 2, "paper")) == 1_369_859
    assert abs(count_parameters(build_sr_model("swinir", 2, "paper")) - 11.75e6) < 0.01e6
    assert abs(count_parameters(build_sr_model("rrdb", 4, "paper")) - 16.70e6) < 0.01e6
    with pytest.raises(ValueError, match="supports scale 1, 2, 4, got 3"):
        build_sr_model("rrdb", 3, "tiny")
    with pytest.raises(ValueError, match="unknown SR model"):
        build_sr_model("vdsr", 2, "tiny")


@pytest.mark.parametrize("name", ["edsr", "rrdb", "swinir"])
def test_twenty_steps_lower_the_l1_loss(tmp_path: Path, name: str) -> None:
    pairs = _make_pairs(tmp_path / "pairs")
    res = train_sr(name, 2, pairs, tmp_path / "run", iters=20, batch_size=4, patch_size=16, lr=1e-3, seed=0,
                   preset="tiny", log_every=5, checkpoint_every=10)
    log = _log(tmp_path / "run")
    assert [r["iter"] for r in log] == [5, 10, 15, 20]
    assert log[-1]["l1"] < 0.8 * log[0]["l1"], log
    assert np.isfinite(res["final_loss"])
    ckpt = torch.load(res["checkpoint"], weights_only=False)
    assert ckpt["iteration"] == 20 and {"model", "optimizer", "rng", "config", "git_sha"} <= set(ckpt)


def test_resume_after_a_kill_gives_identical_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = _make_pairs(tmp_path / "pairs")
    kw = dict(iters=6, batch_size=2, patch_size=16, lr=1e-3, seed=3, preset="tiny", log_every=1, checkpoint_every=3)
    # SwinIR: drop-path draws from the global torch RNG, so this also checks that RNG states are restored.
    full = train_sr("swinir", 2, pairs, tmp_path / "full", **kw)

    real = sr_train.lr_at

    def killed_at_5(base_lr: float, it: int, iters: int) -> float:
        if it == 4:  # the start of step 5: steps 1-4 are logged, step 3 is the last checkpoint
            raise KeyboardInterrupt("simulated kill")
        return real(base_lr, it, iters)

    monkeypatch.setattr(sr_train, "lr_at", killed_at_5)
    with pytest.raises(KeyboardInterrupt):
        train_sr("swinir", 2, pairs, tmp_path / "part", **kw)
    monkeypatch.setattr(sr_train, "lr_at", real)
    assert torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=False)["iteration"] == 3
    res = train_sr("swinir", 2, pairs, tmp_path / "part", resume=True, **kw)
    assert res["resumed_from"] == 3
    a = torch.load(full["weights"], weights_only=False)["params"]
    b = torch.load(res["weights"], weights_only=False)["params"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = _log(tmp_path / "full"), _log(tmp_path / "part")
    assert [r["iter"] for r in lb] == [1, 2, 3, 4, 5, 6]  # the un-checkpointed step 4 was logged once only
    assert [r["l1"] for r in la] == [r["l1"] for r in lb]
    with pytest.raises(ValueError, match="config differs"):
        train_sr("swinir", 2, pairs, tmp_path / "part", resume=True, **{**kw, "lr": 5e-4})


def test_missing_and_mismatched_pairs_name_the_file(tmp_path: Path) -> None:
    pairs = _make_pairs(tmp_path / "pairs", n=2)
    (pairs / "train" / "LR" / "t1.png").unlink()
    with pytest.raises(PairError, match=r"LR/t1\.png"):
        train_sr("edsr", 2, pairs, tmp_path / "run", iters=1, batch_size=1, patch_size=16, preset="tiny")
    Image.new("RGB", (15, 16)).save(pairs / "train" / "LR" / "t1.png")
    with pytest.raises(PairError, match=r"size mismatch: .*LR/t1\.png is 15x16"):
        list_pairs(pairs / "train" / "HR", pairs / "train" / "LR", 2)


def test_non_finite_loss_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NaNNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, scale_factor=2) * self.w * float("nan")

    monkeypatch.setattr(sr_train, "build_sr_model", lambda *a, **k: NaNNet())
    with pytest.raises(sr_train.NonFiniteLossError, match="non-finite .* at step 1"):
        train_sr("edsr", 2, _make_pairs(tmp_path / "p", n=1), tmp_path / "run", iters=3, batch_size=1,
                 patch_size=16, preset="tiny")


def test_infer_sr_writes_tiles_and_metrics_and_tiling_matches(tmp_path: Path) -> None:
    pairs = _make_pairs(tmp_path / "pairs", n=2, size=48)
    res = train_sr("edsr", 2, pairs, tmp_path / "run", iters=2, batch_size=2, patch_size=16, preset="tiny")
    whole = infer_sr(res["checkpoint"], pairs / "train" / "LR", tmp_path / "sr", hr_dir=pairs / "train" / "HR")
    tiled = infer_sr(res["checkpoint"], pairs / "train" / "LR", tmp_path / "sr_t", hr_dir=pairs / "train" / "HR",
                     tile=10, tile_pad=10)
    assert whole["n"] == 2 and whole["crop_border"] == 2 and np.isfinite(whole["psnr"])
    doc = json.loads((tmp_path / "sr" / "sr_metrics.json").read_text())
    assert [r["name"] for r in doc["per_tile"]] == ["t0.png", "t1.png"]
    for name in ("t0.png", "t1.png"):
        a = np.asarray(Image.open(tmp_path / "sr" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "sr_t" / name)).astype(int)
        assert a.shape == (48, 48, 3) and np.abs(a - b).max() <= 1
    assert abs(whole["psnr"] - tiled["psnr"]) < 0.05


def _y_psnr_numpy(img: np.ndarray, ref: np.ndarray, border: int) -> float:
    """Independent PSNR on the BT.601 luma of uint8 RGB images (float64, peak 255)."""
    w = np.array([65.481, 128.553, 24.966]) / 255.0
    y1 = img.astype(np.float64) @ w + 16.0
    y2 = ref.astype(np.float64) @ w + 16.0
    d = (y1 - y2)[border:-border, border:-border]
    return float(10.0 * np.log10(255.0**2 / np.mean(d**2)))


@pytest.mark.realdata
def test_bicubic_psnr_on_real_nwpu_crops(tmp_path: Path, nwpu_root: Path) -> None:
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    hr_dir.mkdir()
    lr_dir.mkdir()
    for name, (x, y) in {"001": (520, 440), "050": (100, 260), "420": (620, 100)}.items():
        with Image.open(nwpu_root / "positive image set" / f"{name}.jpg") as im:
            hr = im.convert("RGB").crop((x, y, x + 128, y + 128))
        hr.save(hr_dir / f"{name}.png")
        hr.resize((64, 64), Image.Resampling.BICUBIC).save(lr_dir / f"{name}.png")
    doc = upscale_folder(lr_dir, tmp_path / "bicubic", 2, "bicubic", hr_dir=hr_dir)
    assert doc["n"] == 3 and doc["crop_border"] == 2 and doc["test_y_channel"] is True
    for row in doc["per_tile"]:
        sr = np.asarray(Image.open(tmp_path / "bicubic" / row["name"]))
        ref = np.asarray(Image.open(hr_dir / row["name"]))
        assert sr.shape == ref.shape == (128, 128, 3)
        assert abs(row["psnr"] - _y_psnr_numpy(sr, ref, 2)) < 1e-6
        assert 15 < row["psnr"] < 50 and 0 < row["ssim"] <= 1
    assert doc["psnr"] == pytest.approx(np.mean([r["psnr"] for r in doc["per_tile"]]))
    near = upscale_folder(lr_dir, tmp_path / "nearest", 2, "nearest", hr_dir=hr_dir)
    assert near["psnr"] < doc["psnr"]  # bicubic beats nearest-neighbour on real imagery

"""Degradation: kernels, parameters, determinism, folder manifest and corrupt-file handling."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data_prep.degrade import DEGRADATION_KERNELS, degradation_name, degrade_array, degrade_folder
from data_prep.errors import CorruptImageError, DataError


def _img(h: int = 48, w: int = 60, seed: int = 0) -> np.ndarray:
    """A smooth-plus-edges test image (bicubic overshoot and aliasing both show up)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx / 3.0)[..., None] * np.cos(yy / 5.0)[..., None]
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kernel", DEGRADATION_KERNELS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shapes_and_dtype(kernel: str, scale: int) -> None:
    out = degrade_array(_img(48, 72), scale=scale, kernel=kernel)
    assert out.shape == (48 // scale, 72 // scale, 3)
    assert out.dtype == np.uint8


def test_torch_bicubic_matches_official_interpolate() -> None:
    img = _img()
    t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    # the official SDCoNet call: scale_factor=0.5, bicubic, align_corners=False, no antialias
    ref = F.interpolate(t, scale_factor=0.5, mode="bicubic", align_corners=False)
    ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(degrade_array(img, 2, "torch-bicubic"), ref)
    ref3 = F.interpolate(t, size=(16, 20), mode="bicubic", align_corners=False, antialias=False)
    ref3 = ref3[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(degrade_array(img, 3, "torch-bicubic"), ref3)


def test_bilinear_matches_interpolate() -> None:
    img = _img()
    t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    ref = F.interpolate(t, size=(24, 30), mode="bilinear", align_corners=False)
    ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(degrade_array(img, 2, "bilinear"), ref)


def test_matlab_bicubic_matches_basicsr_and_differs_from_torch() -> None:
    from basicsr.utils.matlab_functions import imresize

    img = _img()
    ref = np.clip(np.rint(imresize(img.astype(np.float64) / 255.0, 0.25, antialiasing=True) * 255.0), 0, 255)
    out = degrade_array(img, 4, "matlab-bicubic")
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1  # float32 vs float64 rounding only
    assert (out == ref).mean() > 0.99
    torch_out = degrade_array(img, 4, "torch-bicubic")
    # antialiasing smooths: the matlab result is much closer to the local mean and differs clearly
    assert np.abs(out.astype(int) - torch_out.astype(int)).mean() > 3


def test_blur_noise_jpeg_change_image_and_determinism() -> None:
    img = _img()
    clean = degrade_array(img, 2)
    assert not np.array_equal(degrade_array(img, 2, blur=1.5), clean)
    assert not np.array_equal(degrade_array(img, 2, jpeg=30), clean)
    n1 = degrade_array(img, 2, noise=5, rng=np.random.default_rng(1))
    n1b = degrade_array(img, 2, noise=5, rng=np.random.default_rng(1))
    n2 = degrade_array(img, 2, noise=5, rng=np.random.default_rng(2))
    assert not np.array_equal(n1, clean)
    np.testing.assert_array_equal(n1, n1b)
    assert not np.array_equal(n1, n2)
    diff = n1.astype(float) - clean.astype(float)
    assert 3.5 < diff.std() < 6.5  # sigma 5 grey levels (clipping at 0/255 trims it a little)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match=r"3x2.*smaller than the scale 4"):
        degrade_array(_img(2, 3), scale=4)
    with pytest.raises(ValueError, match="torch-bicubic, matlab-bicubic, bilinear"):
        degrade_array(_img(), 2, kernel="lanczos")
    with pytest.raises(ValueError, match="jpeg"):
        degrade_array(_img(), 2, jpeg=0)
    with pytest.raises(ValueError, match="uint8"):
        degrade_array(_img().astype(np.float32), 2)
    assert degradation_name(4, "matlab-bicubic", 1.2, 5, 75) == "x4_matlab-bicubic_b1.2_n5_j75"


def _write_tiles(d: Path, n: int = 5) -> list[str]:
    d.mkdir(parents=True)
    names = [f"t{i}__0_{i * 8}.png" for i in range(n)]
    for i, name in enumerate(names):
        Image.fromarray(_img(32, 32, seed=i)).save(d / name)
    return names


def test_folder_manifest_and_outputs(tmp_path: Path) -> None:
    names = _write_tiles(tmp_path / "hr")
    m = degrade_folder(tmp_path / "hr", tmp_path / "lr", scale=2, kernel="bilinear", noise=2, jpeg=90, seed=3)
    assert sorted(p.name for p in (tmp_path / "lr").glob("*.png")) == sorted(names)
    on_disk = json.loads((tmp_path / "lr" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    for key, val in {"scale": 2, "kernel": "bilinear", "blur": 0.0, "noise": 2.0, "jpeg": 90, "seed": 3}.items():
        assert m[key] == val
    assert m["counts"] == {"found": 5, "written": 5, "skipped": 0}
    assert m["sizes"] == {"32x32->16x16": 5}
    assert "bilinear" in m["kernel_description"] and m["name"] == "x2_bilinear_n2_j90"
    assert m["provenance"]["config"]["seed"] == 3 and "git_sha" in m["provenance"]
    lr = np.asarray(Image.open(tmp_path / "lr" / names[0]))
    assert lr.shape == (16, 16, 3)
    assert not list(tmp_path.glob(".lr.*"))  # no temporary sibling left


def test_folder_order_and_worker_independence(tmp_path: Path) -> None:
    _write_tiles(tmp_path / "hr", 6)
    kw = dict(scale=2, noise=4, seed=7)
    degrade_folder(tmp_path / "hr", tmp_path / "a", workers=1, **kw)
    degrade_folder(tmp_path / "hr", tmp_path / "b", workers=3, **kw)
    # a folder holding only one of the files gives that file the same bytes (seed from the name)
    sub = tmp_path / "one"
    sub.mkdir()
    (sub / "t4__0_32.png").write_bytes((tmp_path / "hr" / "t4__0_32.png").read_bytes())
    degrade_folder(sub, tmp_path / "c", **kw)
    degrade_folder(tmp_path / "hr", tmp_path / "d", **{**kw, "seed": 8})
    for p in (tmp_path / "a").glob("*.png"):
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
    assert (tmp_path / "a" / "t4__0_32.png").read_bytes() == (tmp_path / "c" / "t4__0_32.png").read_bytes()
    assert (tmp_path / "a" / "t0__0_0.png").read_bytes() != (tmp_path / "d" / "t0__0_0.png").read_bytes()
    # different images get different noise even with one seed
    a0 = np.asarray(Image.open(tmp_path / "a" / "t0__0_0.png")).astype(int)
    clean0 = degrade_array(np.asarray(Image.open(tmp_path / "hr" / "t0__0_0.png")), 2)
    a1 = np.asarray(Image.open(tmp_path / "a" / "t1__0_8.png")).astype(int)
    clean1 = degrade_array(np.asarray(Image.open(tmp_path / "hr" / "t1__0_8.png")), 2)
    assert not np.array_equal(a0 - clean0, a1 - clean1)


def test_corrupt_file_skipped_or_strict(tmp_path: Path) -> None:
    _write_tiles(tmp_path / "hr", 3)
    (tmp_path / "hr" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.warns(UserWarning, match="broken.png"):
        m = degrade_folder(tmp_path / "hr", tmp_path / "lr", 2)
    assert m["counts"] == {"found": 4, "written": 3, "skipped": 1}
    assert m["skipped"][0]["file"] == "broken.png"
    assert not (tmp_path / "lr" / "broken.png").exists()
    with pytest.raises(CorruptImageError, match="broken.png"):
        degrade_folder(tmp_path / "hr", tmp_path / "strict", 2, strict=True)
    assert not (tmp_path / "strict").exists()  # atomic: nothing half-written


def test_folder_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    Image.fromarray(_img(3, 3)).save(tmp_path / "hr" / "odd.png")
    with pytest.raises(DataError, match=r"odd\.png.*smaller than the scale 4"):
        degrade_folder(tmp_path / "hr", tmp_path / "lr", scale=4)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        degrade_folder(tmp_path / "nowhere", tmp_path / "lr", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*.png"):
        degrade_folder(tmp_path / "empty", tmp_path / "lr", 2)


@pytest.mark.parametrize("kernel", DEGRADATION_KERNELS)
def test_real_nwpu_crop_round_trip(nwpu_root: Path, kernel: str) -> None:
    """On a real 256x256 NWPU crop, LR upsampled back is close to HR (no shift or garbage)."""
    with Image.open(nwpu_root / "positive image set" / "001.jpg") as im:
        hr = np.asarray(im.convert("RGB"))[100:356, 100:356].copy()
    lr = degrade_array(hr, 2, kernel)
    t = torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1)[None]
    up = F.interpolate(t, size=(256, 256), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    mse = float(np.mean((up.clip(0, 255) - hr.astype(np.float32)) ** 2))
    assert 10 * np.log10(255.0**2 / mse) > 38  # aligned ~42 dB on this crop; a 1 px shift gives ~34 dB


@pytest.mark.parametrize("kernel", ["torch-bicubic", "matlab-bicubic", "bilinear"])
@pytest.mark.parametrize("scale,side", [(3, 256), (3, 512), (4, 50)])
def test_mod_crop_when_the_scale_does_not_divide_the_tile(kernel: str, scale: int, side: int) -> None:
    """x3 on 256 / 512 px tiles: the HR tile is mod-cropped to s * (side // s) first (BasicSR's mod_crop), so the
    LR tile is exactly the degradation of the covered top-left area."""
    img = np.random.default_rng(0).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    out = degrade_array(img, scale, kernel)
    assert out.shape == (side // scale, side // scale, 3)
    covered = scale * (side // scale)
    np.testing.assert_array_equal(out, degrade_array(np.ascontiguousarray(img[:covered, :covered]), scale, kernel))

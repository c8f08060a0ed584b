"""SR metrics: BasicSR PSNR/SSIM on RGB inputs against hand computations and scikit-image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchcore.metrics.sr import psnr, sr_metrics, ssim, tensor_to_uint8

CROP = 4


def _y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB uint8 image, float, in [16, 235]."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = gaussian_filter(rng.uniform(0, 255, (72, 80, 3)), sigma=(3, 3, 0))
    ref = np.clip((ref - ref.min()) / (ref.max() - ref.min()) * 255, 0, 255).astype(np.uint8)
    img = np.clip(ref + rng.normal(0, 8, ref.shape), 0, 255).astype(np.uint8)
    return img, ref


def test_psnr_y_matches_hand_formula_and_uses_rgb_order(pair) -> None:
    _, ref = pair
    img = ref.copy()
    rng = np.random.default_rng(1)
    img[..., 0] = np.clip(ref[..., 0] + rng.normal(0, 10, ref.shape[:2]), 0, 255).astype(np.uint8)  # R only
    c = slice(CROP, -CROP)
    mse = np.mean((_y(img)[c, c] - _y(ref)[c, c]) ** 2)
    expected = 10 * math.log10(255.0**2 / mse)
    assert psnr(img, ref, crop_border=CROP) == pytest.approx(expected, rel=1e-5)
    # an R/B mix-up would weight the noisy channel by 24.966 instead of 65.481: ~8.4 dB higher
    swapped = psnr(np.ascontiguousarray(img[..., ::-1]), np.ascontiguousarray(ref[..., ::-1]), crop_border=CROP)
    assert swapped - expected == pytest.approx(20 * math.log10(65.481 / 24.966), abs=0.05)


def test_psnr_rgb_matches_skimage(pair) -> None:
    img, ref = pair
    c = slice(CROP, -CROP)
    expected = peak_signal_noise_ratio(ref[c, c], img[c, c], data_range=255)
    assert psnr(img, ref, crop_border=CROP, test_y_channel=False) == pytest.approx(expected, rel=1e-9)


def test_crop_border_excludes_the_edges(pair) -> None:
    img, ref = pair
    spoiled = img.copy()
    spoiled[:CROP] = 0
    assert psnr(spoiled, ref, crop_border=CROP) == psnr(img, ref, crop_border=CROP)
    assert psnr(spoiled, ref, crop_border=0) < psnr(img, ref, crop_border=0)


def test_identical_images_give_inf_psnr_and_unit_ssim(pair) -> None:
    _, ref = pair
    assert psnr(ref, ref.copy(), crop_border=CROP) == math.inf
    assert psnr(ref, ref.copy(), crop_border=0, test_y_channel=False) == math.inf
    assert ssim(ref, ref.copy(), crop_border=CROP) == pytest.approx(1.0)


def test_ssim_matches_skimage_gaussian(pair) -> None:
    """BasicSR and skimage both use an 11x11 sigma-1.5 Gaussian window and drop a 5 px border.

    The brief allowed ~1e-3; they agree to ~1e-14 on RGB and ~1e-8 on Y (BasicSR's Y is float32), so 1e-6.
    """
    img, ref = pair
    c = slice(CROP, -CROP)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    rgb = structural_similarity(ref[c, c], img[c, c], channel_axis=2, **kw)
    got = ssim(img, ref, crop_border=CROP, test_y_channel=False)
    assert got == pytest.approx(rgb, abs=1e-6)
    assert 0.3 < got < 0.99
    y = structural_similarity(_y(ref)[c, c], _y(img)[c, c], **kw)
    assert ssim(img, ref, crop_border=CROP) == pytest.approx(y, abs=1e-6)


def test_inputs_are_checked(pair) -> None:
    img, ref = pair
    with pytest.raises(TypeError, match="uint8"):
        psnr(img.astype(np.float32), ref, crop_border=CROP)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(img[:-1], ref, crop_border=CROP)


def test_tensor_to_uint8() -> None:
    t = torch.tensor([0.0, 0.5, 1.0, 1.2, -0.1]).reshape(1, 1, 5).expand(3, 1, 5)
    out = tensor_to_uint8(t)
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 128, 255, 255, 0]
    assert tensor_to_uint8(t * 2 - 1, range_=(-1, 1))[0, :, 0].tolist() == [0, 128, 255, 255, 0]
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).double() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert np.array_equal(tensor_to_uint8(x.float(), mean=mean, std=std), rgb)


def test_sr_metrics_arrays_and_paths(pair, tmp_path) -> None:
    img, ref = pair
    paths = []
    for name, a in (("sr.png", img), ("hr.png", ref)):
        Image.fromarray(a).save(tmp_path / name)
        paths.append(tmp_path / name)
    r = sr_metrics([img, ref], [ref, ref], crop_border=CROP)
    assert r["n"] == 2 and r["psnr"] == math.inf
    assert r["per_image"][0]["psnr"] == pytest.approx(psnr(img, ref, CROP))
    assert r["ssim"] == pytest.approx((ssim(img, ref, CROP) + 1.0) / 2)
    p = sr_metrics([paths[0]], [paths[1]], crop_border=CROP)
    assert p["psnr"] == pytest.approx(psnr(img, ref, CROP)) and p["per_image"][0]["name"] == "hr.png"
    with pytest.raises(ValueError, match="2 SR images but 1"):
        sr_metrics([img, img], [ref], crop_border=CROP)

"""Config, LR input, shared Swin encoder and ChannelMapperSR neck (spec 1, 3.1, 3.2, Appendix A)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from sdconet.models.config import ConfigError, SDCoNetConfig, from_dict, preset, to_dict
from sdconet.models.encoder import SwinEncoder, build_encoder
from sdconet.models.lr_input import denormalise, make_lr, normalise, prepare_lr
from sdconet.models.neck import build_neck
from sdconet.models.swin_blocks import PaddedSwinBlock
from sdconet.models.swin_weights import load_swin_weights, to_encoder_keys
from swin_layouts import mmdet_from_official, official_from_timm


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def tiny() -> SDCoNetConfig:
    return preset("tiny", scale=2)


@pytest.fixture(scope="module")
def tiny_encoder(tiny: SDCoNetConfig) -> SwinEncoder:
    torch.manual_seed(0)
    return build_encoder(tiny).eval()


# ----------------------------------------------------------------------------------------------- config
def test_presets_validate_and_round_trip() -> None:
    paper, tiny = preset("paper", scale=2), preset("tiny", scale=2)
    assert paper.swin.depths == (2, 2, 6, 2) and paper.neck.sr_channels == 1536
    assert paper.sr_decoder.window_size == 8 and paper.saliency.level_ranges[-1][1] == math.inf
    assert tiny.sr_decoder.embed_dim == tiny.swin.embed_dim * 8
    assert from_dict(to_dict(tiny)) == tiny
    assert from_dict({"lr": {"scale": 2}}) == paper


def test_scale_has_no_default() -> None:
    """The HR/LR ratio belongs to the run's degradation: a config without it is an error naming lr.scale."""
    with pytest.raises(ConfigError, match=r"lr\.scale must be the run's degradation scale"):
        from_dict({})
    with pytest.raises(ConfigError, match=r"lr\.scale"):
        preset("tiny")
    assert preset("tiny", scale=3).lr.scale == 3 == preset("tiny", lr={"scale": 3}).lr.scale


def test_preset_overrides_nested_and_dotted() -> None:
    cfg = preset("tiny", scale=2, num_classes=16, swin={"drop_path_rate": 0.0}, **{"saliency.alpha_mode": "learnable"})
    assert cfg.num_classes == 16 and cfg.swin.drop_path_rate == 0.0 and cfg.swin.embed_dim == 24
    assert cfg.saliency.alpha_mode == "learnable"


def test_from_dict_unknown_key_names_dotted_path() -> None:
    with pytest.raises(ConfigError, match=r"'swin\.embed_dims'.*did you mean 'swin\.embed_dim'"):
        from_dict({"swin": {"embed_dims": 96}})
    with pytest.raises(ConfigError, match="'num_clases'"):
        from_dict({"num_clases": 3})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


def test_from_dict_coerces_lists_and_inf() -> None:
    cfg = from_dict({"lr": {"scale": 2}, "saliency": {"level_ranges": [[-1, 64], [64, 128], [128, 256], [256, "inf"]]},
                     "level_filter_ratio": [0.25, 0.5, 1, 1]})
    assert cfg.saliency.level_ranges[3] == (256.0, math.inf)
    assert cfg.level_filter_ratio == (0.25, 0.5, 1, 1)


def test_config_cross_checks() -> None:
    with pytest.raises(ConfigError, match="sr_decoder.embed_dim"):
        preset("tiny", scale=2, swin={"embed_dim": 32})
    with pytest.raises(ConfigError, match="layer_filter_ratio"):
        preset("paper", scale=2, enc_layers=4)
    with pytest.raises(ConfigError, match="must be an integer"):
        from_dict({"num_classes": "ten"})


# --------------------------------------------------------------------------------------------- LR input
def test_make_lr_matches_official_interpolate() -> None:
    hr = torch.randn(2, 3, 96, 128)
    lr = make_lr(hr, 2, "bicubic")
    ref = F.interpolate(hr, scale_factor=0.5, mode="bicubic", align_corners=False)
    assert lr.shape == (2, 3, 48, 64) and torch.equal(lr, ref)
    assert torch.equal(make_lr(hr, 2, "bilinear"),
                       F.interpolate(hr, scale_factor=0.5, mode="bilinear", align_corners=False))
    cfg = preset("tiny", scale=2)
    assert torch.equal(prepare_lr(hr, cfg.lr), lr)
    assert prepare_lr(lr, replace(cfg.lr, on_the_fly=False)) is lr  # offline LR: used as is


def test_normalise_uint8_and_float01_agree() -> None:
    img = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    a, b = normalise(img), normalise(img.float() / 255.0)
    assert torch.allclose(a, b, atol=1e-5)
    px = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(normalise(px / 255.0), torch.zeros(1, 3, 2, 2), atol=1e-5)
    assert torch.allclose(denormalise(a), img.float(), atol=1e-3)


# ---------------------------------------------------------------------------------------------- encoder
def test_encoder_shapes_and_feature_info_non_square(tiny_encoder: SwinEncoder) -> None:
    lr = make_lr(torch.randn(2, 3, 96, 128), 2)  # LR 48 x 64
    with torch.no_grad():
        out = tiny_encoder(lr)
    assert len(out["res_x"]) == 5 and len(tiny_encoder.feature_info) == 5
    for r, info in zip(out["res_x"], tiny_encoder.feature_info):
        red = int(info["reduction"])
        assert r.shape == (2, info["num_chs"], math.ceil(48 / red), math.ceil(64 / red))
    assert [tuple(r.shape[1:]) for r in out["res_x"]] == [(24, 12, 16), (24, 12, 16), (48, 6, 8), (96, 3, 4),
                                                          (192, 2, 2)]
    assert out["hw_shapes"] == [(12, 16), (6, 8), (3, 4), (2, 2)]
    assert all(m is out["res_x"][i] for m, i in zip(out["maps"], tiny_encoder.map_indices))
    assert tiny_encoder.map_channels == [48, 96, 192] and tiny_encoder.map_reductions == [8, 16, 32]
    # res_x[2:] are LayerNorm outputs (zero mean over channels); res_x[1] is the raw stage-1 output
    assert out["res_x"][3].mean(1).abs().max() < 1e-4
    assert out["res_x"][1].mean(1).abs().max() > 1e-3


def test_encoder_odd_sizes_run(tiny_encoder: SwinEncoder) -> None:
    with torch.no_grad():
        out = tiny_encoder(torch.randn(1, 3, 37, 50))
    assert [tuple(r.shape[-2:]) for r in out["res_x"]] == [(10, 13), (10, 13), (5, 7), (3, 4), (2, 2)]


def test_paper_encoder_parameter_count() -> None:
    enc = SwinEncoder(preset("paper", scale=2).swin)
    assert round(n_params(enc) / 1e6, 2) == 27.52  # spec Appendix A: Swin-T backbone 27.521 M
    assert n_params(enc) == 27_520_506
    dpr = [getattr(b.drop_path1, "drop_prob", 0.0) for stage in enc.layers for b in stage.blocks]
    assert len(dpr) == 12 and dpr[0] == 0.0 and dpr[-1] == pytest.approx(0.2)
    assert all(b.window_size == (7, 7) for stage in enc.layers for b in stage.blocks)


def test_encoder_matches_timm_swin_when_no_padding_is_needed(tiny: SDCoNetConfig) -> None:
    """Sizes that are multiples of the window at every stage: timm's own Swin is the reference.

    (256 px: every stage map is larger than the window; timm drops the shift when a map equals the window,
    mmdet does not.)"""
    import timm

    torch.manual_seed(1)
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, embed_dim=24,
                            depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, img_size=256).eval()
    enc = SwinEncoder(replace(tiny.swin, depths=(2, 2, 2, 2), drop_path_rate=0.0)).eval()
    report = load_swin_weights(enc, ref.state_dict())
    assert report["unexpected"] == [] and all(k.startswith("norm") for k in report["missing"])
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ours = enc(x)["res_x"]
        stages = ref.forward_intermediates(x, indices=4, norm=False, output_fmt="NCHW", intermediates_only=True)
    assert torch.allclose(ours[1], stages[0], atol=1e-5)
    for i in (1, 2, 3):
        normed = getattr(enc, f"norm{i}")(stages[i].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert torch.allclose(ours[i + 1], normed, atol=1e-5)


def _reference_window_attention(blk: PaddedSwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Independent mmdet ``ShiftWindowMSA``: pad, roll, region-labelled mask, explicit per-window softmax."""
    _, h, w, c = x.shape
    ws, s = blk.window_size[0], blk.shift_size[0]
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    xp = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    labels = torch.zeros(hp, wp)
    if s:
        xp = torch.roll(xp, (-s, -s), (1, 2))
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                labels[hs, wsl] = cnt
                cnt += 1
    attn = blk.attn
    nh = attn.num_heads
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(ws * ws, ws * ws, nh)
    out = torch.zeros_like(xp)
    for i in range(0, hp, ws):
        for j in range(0, wp, ws):
            tok = xp[:, i:i + ws, j:j + ws].reshape(1, ws * ws, c)
            q, k, v = attn.qkv(tok).reshape(1, ws * ws, 3, nh, -1).permute(2, 0, 3, 1, 4)
            logits = (q * attn.scale) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)
            lab = labels[i:i + ws, j:j + ws].reshape(-1)
            logits = logits + (lab[None, :] != lab[:, None]).float() * -100.0
            o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(1, ws * ws, c)
            out[:, i:i + ws, j:j + ws] = attn.proj(o).reshape(1, ws, ws, c)
    if s:
        out = torch.roll(out, (s, s), (1, 2))
    return out[:, :h, :w]


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("size", [(5, 7), (9, 6), (3, 3)])
def test_padded_block_follows_mmdet_pad_then_shift(shift: bool, size: tuple[int, int]) -> None:
    torch.manual_seed(2)
    blk = PaddedSwinBlock(16, 2, window_size=4, shift=shift, mlp_ratio=2.0).eval()
    x = torch.randn(1, *size, 16)
    with torch.no_grad():
        assert torch.allclose(blk._attn(x), _reference_window_attention(blk, x), atol=1e-5)
        blk.attn.fused_attn = not blk.attn.fused_attn  # fused and explicit paths agree
        assert torch.allclose(blk._attn(x), _reference_window_attention(blk, x), atol=1e-5)


def test_pretrained_loading_from_local_files_in_three_layouts(tiny: SDCoNetConfig, tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    src = SwinEncoder(tiny.swin)
    timm_sd = {k: v for k, v in src.state_dict().items() if not k.startswith("norm")}
    timm_sd["head.fc.weight"] = torch.zeros(10, 192)  # dropped like mmdet does
    official = official_from_timm(timm_sd)
    assert "layers.0.downsample.reduction.weight" in official
    save_file(timm_sd, str(tmp_path / "timm.safetensors"))
    torch.save({"model": official}, tmp_path / "official.pth")
    torch.save({"state_dict": mmdet_from_official(official)}, tmp_path / "mmdet.pth")
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        ref = src.eval()(x)["res_x"]
    for name in ("timm.safetensors", "official.pth", "mmdet.pth"):
        dst = build_encoder(replace(tiny, swin=replace(tiny.swin, pretrained=str(tmp_path / name)))).eval()
        with torch.no_grad():
            got = dst(x)["res_x"]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, ref)), name
    assert set(to_encoder_keys(mmdet_from_official(official))) == set(to_encoder_keys(timm_sd))


def test_pretrained_errors_are_clear(tiny: SDCoNetConfig, tmp_path, monkeypatch) -> None:
    enc = SwinEncoder(tiny.swin)
    with pytest.raises(FileNotFoundError, match="not found"):
        enc.load_pretrained(str(tmp_path / "missing.pth"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="local path"):
        enc.load_pretrained("timm:sdconet_no_such_cached_model_xyz")
    other = SwinEncoder(replace(tiny.swin, embed_dim=32, num_heads=(1, 2, 4, 4)))
    with pytest.raises(RuntimeError, match="do not fit"):
        load_swin_weights(enc, other.state_dict())


# ------------------------------------------------------------------------------------------------- neck
def test_neck_shapes_feature_info_and_sr_skip(tiny: SDCoNetConfig, tiny_encoder: SwinEncoder) -> None:
    neck = build_neck(tiny, tiny_encoder.map_channels, tiny_encoder.map_reductions).eval()
    with torch.no_grad():
        maps = tiny_encoder(make_lr(torch.randn(2, 3, 96, 128), 2))["maps"]
        feats, res_4 = neck(maps)
        feats2, none = neck(maps, need_sr=False)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 6, 8), (2, 32, 3, 4), (2, 32, 2, 2), (2, 32, 1, 1)]
    assert [i["num_chs"] for i in neck.feature_info] == [32] * 4
    assert [i["reduction"] for i in neck.feature_info] == [8, 16, 32, 64]
    assert res_4.shape == (2, 384, 1, 1) and neck.sr_feature_info["num_chs"] == 384
    assert none is None and all(torch.equal(a, b) for a, b in zip(feats, feats2))
    # the extra level and the SR feature both read the (normalised) stage-4 map, like the official code
    assert neck.extra_convs[0].conv.in_channels == neck.extra_sr.conv.in_channels == maps[-1].shape[1]
    assert build_neck(replace(tiny, use_sr=False)).extra_sr is None


def test_paper_neck_parameter_counts() -> None:
    neck = build_neck(preset("paper", scale=2))
    assert round(n_params(neck) / 1e6, 3) == 12.735 and round(n_params(neck.extra_sr) / 1e6, 3) == 10.620
    assert not any(c.conv.bias is not None for c in [*neck.convs, *neck.extra_convs, neck.extra_sr])
    assert neck.convs[0].gn.num_groups == 32


@pytest.mark.parametrize(("size", "stride"), [(8, 2), (7, 2), (5, 1), (20, 2)])
def test_convgn_gemm_path_equals_the_conv(size: int, stride: int) -> None:
    """On the CPU a 3x3 ConvGN on a small map runs as unfold + matmul: same output and gradients as the conv
    (20x20 = 400 positions is above the threshold and takes the conv itself)."""
    from sdconet.models.neck import ConvGN

    torch.manual_seed(0)
    m = ConvGN(12, 32, 3, stride, 4).double()
    x = torch.randn(2, 12, size, size, dtype=torch.float64, requires_grad=True)
    y = m(x)
    ref = m.gn(m.conv(x))
    assert y.shape == ref.shape == (2, 32, (size + 2 - 3) // stride + 1, (size + 2 - 3) // stride + 1)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, m.conv.weight), g)
    rx, rw = torch.autograd.grad(ref, (x, m.conv.weight), g)
    assert torch.allclose(y, ref, atol=1e-12)
    assert torch.allclose(gx, rx, atol=1e-12) and torch.allclose(gw, rw, atol=1e-12)


def test_padded_block_gradients_match_the_reference() -> None:
    """Projecting only the real tokens (padded rows get the qkv bias) leaves every gradient unchanged."""
    torch.manual_seed(3)
    blk = PaddedSwinBlock(16, 2, window_size=4, shift=True, mlp_ratio=2.0).double()
    x = torch.randn(1, 5, 7, 16, dtype=torch.float64, requires_grad=True)
    params = [blk.attn.qkv.weight, blk.attn.qkv.bias, blk.attn.proj.weight, blk.attn.relative_position_bias_table]
    g = torch.randn(1, 5, 7, 16, dtype=torch.float64)
    ours = torch.autograd.grad(blk._attn(x), [x, *params], g)
    ref = torch.autograd.grad(_reference_window_attention(blk, x), [x, *params], g)
    for a, r in zip(ours, ref):
        assert torch.allclose(a, r, atol=1e-10)
    assert ours[2].abs().sum() > 0  # the qkv bias gets the padded rows' gradient too

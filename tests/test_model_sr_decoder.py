"""SR decoder (spec 3.3): parameter parity with the official SRNet, shapes, the res_4 quirk, gradient flow."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sdconet.models.config import SDCoNetConfig, preset
from sdconet.models.encoder import build_encoder
from sdconet.models.lr_input import make_lr
from sdconet.models.neck import build_neck
from sdconet.models.sr_decoder import RGB_MEAN, SRDecoder, build_sr_decoder
from sdconet.models.swin_blocks import set_fused_attn


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def tiny() -> SDCoNetConfig:
    return preset("tiny", scale=2)


@pytest.fixture(scope="module")
def tiny_parts(tiny: SDCoNetConfig):
    torch.manual_seed(0)
    return build_encoder(tiny).eval(), build_neck(tiny).eval(), build_sr_decoder(tiny).eval()


def test_paper_parameter_counts_match_official() -> None:
    cfg = preset("paper", scale=2).sr_decoder
    full = SRDecoder(replace(cfg, keep_unused=True), upscale=2)
    used = SRDecoder(cfg, upscale=2)
    assert round(n_params(full) / 1e6, 2) == 24.04  # spec: 24.04 M total (24.044)
    assert round(full.used_parameters() / 1e6, 2) == 23.67  # 23.67 M on the forward path
    assert n_params(used) == full.used_parameters() == 23_669_481
    assert round(sum(n_params(layer) for layer in used.layers) / 1e6, 3) == 17.324  # Swin stages
    assert round(n_params(used.up_layer_pre) / 1e6, 3) == 4.722
    assert [round(n_params(u) / 1e6, 3) for u in (used.up_layer0, used.up_layer1, used.up_layer2)] == \
        [1.181, 0.296, 0.074]
    assert round(n_params(used.patch_unembed) / 1e6, 3) == 0.049 and round(n_params(used.head) / 1e6, 3) == 0.024
    assert round((n_params(full) - n_params(used)) / 1e6, 3) == 0.374  # unused official parameters (~0.37 M)
    blocks = [b for layer in used.layers for b in layer.blocks]
    assert len(blocks) == 12 and all(b.window_size == (8, 8) for b in blocks)
    assert [b.shift_size[0] for b in used.layers[1].blocks] == [0, 4, 0, 4, 0, 4]
    assert blocks[0].mlp.fc1.out_features == 2 * 768
    assert used.up_layer_pre.upconv.bias is None and used.up_layer_pre.upconv.kernel_size == (2, 2)


def test_sr_output_is_twice_the_lr(tiny_parts) -> None:
    enc, neck, dec = tiny_parts
    lr = torch.randn(1, 3, 64, 128)  # multiples of 64: no resizing anywhere
    with torch.no_grad():
        out = enc(lr)
        _, res_4 = neck(out["maps"])
        sr = dec(out["res_x"], res_4)
    assert res_4.shape == (1, 384, 1, 2)
    assert sr.shape == (1, 3, 128, 256)
    assert [i["num_chs"] for i in dec.feature_info] == [192, 96, 48, 24]
    assert [i["reduction"] for i in dec.feature_info] == [32, 16, 8, 4]


def test_sr_non_square_lr_resized_to_hr(tiny: SDCoNetConfig, tiny_parts) -> None:
    """Released alignment ("resize"): the decoder grid follows the 1x1 res_4, the output is resized to HR."""
    enc, neck, dec = tiny_parts
    dec = build_sr_decoder(replace(tiny, sr_decoder=replace(tiny.sr_decoder, size_align="resize"))).eval()
    hr = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        out = enc(make_lr(hr, 2))
        _, res_4 = neck(out["maps"])
        raw = dec(out["res_x"], res_4)
        sr = dec(out["res_x"], res_4, out_size=hr.shape[-2:])
    assert raw.shape == (2, 3, 128, 128)  # decoder grid from the 1x1 res_4, as in the official code
    assert sr.shape == (2, 3, 96, 128)


def test_sr_crop_alignment_follows_the_skips(tiny_parts) -> None:
    """Default alignment ("crop"): each upsampled map is cropped to its skip, so the output is exactly 2x the LR."""
    enc, neck, dec = tiny_parts
    assert dec.cfg.size_align == "crop"
    hr = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        out = enc(make_lr(hr, 2))
        _, res_4 = neck(out["maps"])
        raw = dec(out["res_x"], res_4)
    assert raw.shape == (2, 3, 96, 128)


@pytest.mark.parametrize("scale,hr_side", [(3, 256), (4, 256), (3, 512)])
def test_sr_upscale_matches_degradation_without_resize(tiny: SDCoNetConfig, scale: int, hr_side: int) -> None:
    """x3/x4 on the configured tiles: LR = HR // s, output = s * LR (the mod-cropped HR), no interpolation; the
    pixel-shuffle head's factor is the model's one scale."""
    cfg = replace(tiny, lr=replace(tiny.lr, scale=scale))
    from sdconet.models.encoder import build_encoder
    from sdconet.models.neck import build_neck

    enc, neck, dec = build_encoder(cfg).eval(), build_neck(cfg).eval(), build_sr_decoder(cfg).eval()
    lr = torch.randn(1, 3, hr_side // scale, hr_side // scale)
    want = (scale * (hr_side // scale),) * 2
    with torch.no_grad():
        out = enc(lr)
        _, res_4 = neck(out["maps"])
        sr = dec(out["res_x"], res_4, out_size=want)
    assert sr.shape[-2:] == want
    assert dec.upscale == scale


def test_crop_and_resize_alignment_agree_on_multiples_of_64(tiny: SDCoNetConfig, tiny_parts) -> None:
    enc, neck, dec = tiny_parts
    rs = build_sr_decoder(replace(tiny, sr_decoder=replace(tiny.sr_decoder, size_align="resize"))).eval()
    rs.load_state_dict(dec.state_dict())
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 128, 192))
        _, res_4 = neck(out["maps"])
        torch.testing.assert_close(dec(out["res_x"], res_4, out_size=(256, 384)),
                                   rs(out["res_x"], res_4, out_size=(256, 384)), rtol=0, atol=0)


def test_official_view_quirk_changes_output_not_shape(tiny: SDCoNetConfig, tiny_parts) -> None:
    enc, neck, dec = tiny_parts
    quirk = build_sr_decoder(replace(tiny, sr_decoder=replace(tiny.sr_decoder, official_view_quirk=True))).eval()
    quirk.load_state_dict(dec.state_dict())
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 128, 192))
        _, res_4 = neck(out["maps"])
        assert res_4.shape[-2:] == (2, 3)
        a, b = dec(out["res_x"], res_4), quirk(out["res_x"], res_4)
    assert a.shape == b.shape == (1, 3, 256, 384)
    assert not torch.allclose(a, b)
    # the quirk is exactly torch's view(B, -1, C) of the contiguous NCHW map
    t = quirk.tokens_from_res4(res_4)
    assert torch.equal(t.reshape(1, -1, 384), res_4.contiguous().view(1, -1, 384))
    assert torch.equal(dec.tokens_from_res4(res_4).reshape(1, -1, 384), res_4.flatten(2).transpose(1, 2))


def test_rgb_mean_and_fused_attention(tiny: SDCoNetConfig, tiny_parts) -> None:
    enc, neck, dec = tiny_parts
    no_mean = build_sr_decoder(replace(tiny, sr_decoder=replace(tiny.sr_decoder, add_rgb_mean=False))).eval()
    no_mean.load_state_dict(dec.state_dict())
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 64, 64))
        _, res_4 = neck(out["maps"])
        a, b = dec(out["res_x"], res_4), no_mean(out["res_x"], res_4)
        assert torch.allclose(a - b, torch.tensor(RGB_MEAN).view(1, 3, 1, 1).expand_as(a), atol=1e-6)
        set_fused_attn(dec, False)
        c = dec(out["res_x"], res_4)
        set_fused_attn(dec, True)
    assert torch.allclose(a, c, atol=1e-5)


def test_gradient_flows_from_sr_output_to_encoder(tiny: SDCoNetConfig) -> None:
    torch.manual_seed(0)
    enc, neck, dec = build_encoder(tiny), build_neck(tiny), build_sr_decoder(tiny)
    hr = torch.randn(1, 3, 96, 128)
    out = enc(make_lr(hr, 2))
    _, res_4 = neck(out["maps"])
    sr = dec(out["res_x"], res_4, out_size=hr.shape[-2:])
    torch.nn.functional.l1_loss(sr, hr).backward()
    for name, p in [*enc.named_parameters(), *neck.extra_sr.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert enc.patch_embed.proj.weight.grad.abs().sum() > 0
    assert enc.layers[3].blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert neck.extra_sr.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in neck.extra_convs.parameters())  # detection-only path untouched


@pytest.mark.parametrize(("c_in", "c_out", "k", "bias"), [(12, 6, 2, False), (8, 5, 4, True)])
def test_conv_transpose_tokens_equals_the_transposed_conv(c_in: int, c_out: int, k: int, bias: bool) -> None:
    """The CPU matmul form of a kernel == stride transposed conv: same output and gradients as the conv."""
    from torch import nn

    from sdconet.models.sr_decoder import conv_transpose_tokens

    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(c_in, c_out, k, stride=k, bias=bias).double()
    x = torch.randn(2, 3, 5, c_in, dtype=torch.float64, requires_grad=True)
    y = conv_transpose_tokens(x, conv)
    ref = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert y.shape == ref.shape == (2, 3 * k, 5 * k, c_out)
    assert torch.allclose(y, ref, atol=1e-12)
    g = torch.randn_like(y)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    for a, r in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(ref, params, g)):
        assert torch.allclose(a, r, atol=1e-12)

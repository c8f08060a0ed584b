"""The two released-initialisation flags (spec Appendix B): ``head_init`` and ``neck.sr_conv_init``.

``head_init: copies`` starts the 7 (class, box) head pairs as identical deep copies of one pair (mmdet
``DeformableDETRHead``), ``independent`` draws each on its own. ``neck.sr_conv_init: kaiming_fan_out`` ends the SR
conv Kaiming-normal (fan_out, ReLU gain: std sqrt(2 / (out_ch * k * k))), as mmengine leaves the released
``extra_sr``; ``xavier`` keeps Xavier-uniform. The released-code fixture loads its weights over either init, so
the flags cannot change its numbers (checked here when the fixture is present).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from sdconet.models.build import build_model
from sdconet.models.config import ConfigError, from_dict, preset
from sdconet.models.dino_decoder import DetectionHeads
from sdconet.models.neck import ConvGN, init_sr_conv

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURE = Path(os.environ.get("SDCONET_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "fixtures" \
    / "official_sdconet_small"


def _pairs_identical(heads: DetectionHeads) -> bool:
    first_c, first_r = heads.cls_branches[0].state_dict(), heads.reg_branches[0].state_dict()
    return all(all(torch.equal(v, c.state_dict()[k]) for k, v in first_c.items()) for c in heads.cls_branches) and \
        all(all(torch.equal(v, r.state_dict()[k]) for k, v in first_r.items()) for r in heads.reg_branches)


def test_head_copies_start_identical_and_train_apart() -> None:
    torch.manual_seed(0)
    heads = DetectionHeads(32, 5, 7, init="copies")
    assert _pairs_identical(heads)
    # separate parameters (deep copies, not shared): a step on one pair leaves the others alone
    ids = {id(p) for c in heads.cls_branches for p in c.parameters()}
    assert len(ids) == 2 * 7
    with torch.no_grad():
        heads.cls_branches[0].weight.add_(1.0)
    assert not torch.equal(heads.cls_branches[0].weight, heads.cls_branches[1].weight)
    # the prior bias and the zeroed last box layer follow the copy, as in mmdet's init_weights
    prior = -math.log((1 - 0.01) / 0.01)
    assert all(torch.allclose(c.bias, torch.full_like(c.bias, prior)) for c in heads.cls_branches)
    assert all(not r.layers[-1].weight.any() and not r.layers[-1].bias.any() for r in heads.reg_branches)


def test_head_independent_pairs_differ() -> None:
    torch.manual_seed(0)
    heads = DetectionHeads(32, 5, 7, init="independent")
    w = [c.weight for c in heads.cls_branches]
    assert all(not torch.equal(w[0], x) for x in w[1:])
    assert not torch.equal(heads.reg_branches[0].layers[0].weight, heads.reg_branches[1].layers[0].weight)
    with pytest.raises(ValueError, match="'independent' or 'copies'"):
        DetectionHeads(32, 5, 7, init="shared")


@pytest.mark.parametrize("shared", [True, False])
def test_model_flags_reach_heads_and_sr_conv(shared: bool) -> None:
    torch.manual_seed(0)
    cfg = preset("tiny", scale=2, shared_encoder=shared, head_init="copies", neck={"sr_conv_init": "kaiming_fan_out"})
    model = build_model(cfg)
    assert _pairs_identical(model.detector.head.heads)
    sr_conv = (model.neck.extra_sr if shared else model.sr_neck).conv.weight
    fan_out = sr_conv.shape[0] * sr_conv.shape[2] * sr_conv.shape[3]
    assert sr_conv.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.03)
    default = build_model(preset("tiny", scale=2, shared_encoder=shared))
    assert not _pairs_identical(default.detector.head.heads)
    xav = (default.neck.extra_sr if shared else default.sr_neck).conv.weight
    fan_in = xav.shape[1] * xav.shape[2] * xav.shape[3]
    assert xav.abs().max().item() <= math.sqrt(6.0 / (fan_in + fan_out))


def test_sr_conv_init_statistics_match_kaiming_fan_out() -> None:
    """mmcv ``kaiming_init`` (normal, fan_out, ReLU): N(0, 2 / fan_out); Xavier-uniform: U(-b, b), b^2 = 6/(in+out)."""
    torch.manual_seed(0)
    conv = ConvGN(192, 384, 3, 2, 8)  # the tiny preset's SR conv: 663,552 weights
    fan_in, fan_out = 192 * 9, 384 * 9
    w = conv.conv.weight.detach().flatten().double()
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)  # xavier
    init_sr_conv(conv, "kaiming_fan_out")
    w = conv.conv.weight.detach().flatten().double()
    std = math.sqrt(2.0 / fan_out)
    assert w.mean().item() == pytest.approx(0.0, abs=std * 0.01)
    assert w.std().item() == pytest.approx(std, rel=0.01)
    assert (w.abs() <= std).double().mean().item() == pytest.approx(0.6827, abs=0.005)  # normal, not uniform (0.577)
    assert w.abs().max().item() > bound  # Gaussian tails reach past the Xavier bound
    assert torch.equal(conv.gn.weight, torch.ones(384)) and not conv.gn.bias.any()
    with pytest.raises(ValueError, match="sr_conv_init"):
        init_sr_conv(conv, "kaiming_fan_in")


def test_flag_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="head_init"):
        preset("tiny", scale=2, head_init="copy")
    with pytest.raises(ConfigError, match="neck.sr_conv_init"):
        from_dict({"lr": {"scale": 2}, "neck": {"sr_conv_init": "kaiming"}})
    cfg = preset("tiny", scale=2)
    assert (cfg.head_init, cfg.neck.sr_conv_init) == ("independent", "xavier")  # the fixed behaviour by default


def test_official_config_turns_the_released_inits_on() -> None:
    from sdconet.official import official_config

    full = official_config()
    assert (full.head_init, full.neck.sr_conv_init) == ("copies", "kaiming_fan_out")
    assert full.neck.out_channels == 256 and full.neck.sr_channels == 1536


def test_released_fixture_numbers_do_not_depend_on_the_init_flags() -> None:
    """Every parameter and buffer of the fixture's model comes from the released weights, so building it with the
    released or the fixed init gives the same model once they are loaded."""
    if not (FIXTURE / "weights.pt").is_file():
        pytest.skip(f"released-code fixture not found at {FIXTURE}")
    import json
    from dataclasses import replace

    from test_official_equivalence import decode_weights

    from sdconet.official import convert_official_state_dict, official_config

    weights = decode_weights(torch.load(FIXTURE / "weights.pt", map_location="cpu", weights_only=True))
    released = official_config(json.loads((FIXTURE / "config.json").read_text())["model_config"])
    assert (released.head_init, released.neck.sr_conv_init) == ("copies", "kaiming_fan_out")
    fixed = replace(released, head_init="independent", neck=replace(released.neck, sr_conv_init="xavier"))
    states = []
    for i, cfg in enumerate((released, fixed)):
        torch.manual_seed(i)
        model = build_model(cfg)
        sd, report = convert_official_state_dict(weights, model)
        assert report.ok, report.format()
        model.load_state_dict(sd)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])

"""Saliency predictor, key-token selection, saliency targets and focal loss, position encoding (spec 3.4, 3.5)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from sdconet.models.config import SDCoNetConfig, preset
from sdconet.models.memory_transform import MemoryTransform, encoder_proposals
from sdconet.models.position import LevelEmbedding, SinePositionalEncoding, flatten_levels, level_masks
from sdconet.models.saliency import (MaskPredictor, SaliencyLoss, SaliencyPredictor, build_saliency,
                                     key_token_selection, saliency_focal_loss, saliency_targets)

PAPER_SIZES = [(32, 32), (16, 16), (8, 8), (4, 4)]  # 512 HR tile -> 256 LR -> /8 .. /64


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def tiny() -> SDCoNetConfig:
    return preset("tiny", scale=2)


def _tokens(cfg: SDCoNetConfig, sizes, batch: int = 2):
    torch.manual_seed(0)
    d = cfg.hidden_dim
    feats = [torch.randn(batch, d, h, w) for h, w in sizes]
    pos_enc, lvl = SinePositionalEncoding(d // 2, cfg.pos_temperature), LevelEmbedding(4, d)
    return flatten_levels(feats, pos_enc, lvl)


# ------------------------------------------------------------------------------------------- predictor
def test_saliency_predictor_shapes_non_square(tiny: SDCoNetConfig) -> None:
    sizes = [(6, 8), (3, 4), (2, 2), (1, 1)]  # tiny neck levels for a 96 x 128 HR input
    ml = _tokens(tiny, sizes)
    sal, mt = build_saliency(tiny), MemoryTransform(tiny.hidden_dim)
    out = sal(ml.feat + ml.pos, ml.mask, ml.spatial_shapes, mt)
    assert [tuple(x.shape) for x in out.level_logits] == [(2, 1, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in out.level_scores] == [(2, h * w) for h, w in sizes]
    assert out.scores.shape == (2, sum(h * w for h, w in sizes))
    assert torch.equal(out.scores, torch.cat([x.flatten(1) for x in out.level_logits], 1))  # no padding
    assert ml.level_start_index.tolist() == [0, 48, 60, 64]


def test_top_down_pass_uses_coarser_scores(tiny: SDCoNetConfig) -> None:
    """m_l <- m_l * (1 + alpha * up(S_{l+1})) scales each token, and P starts with a LayerNorm: the modulation
    only matters where 1 + alpha * S < 0 (the token's features flip sign), a property of the official design."""
    ml = _tokens(tiny, [(4, 4), (2, 2), (2, 2), (1, 1)], batch=1)
    mt = MemoryTransform(tiny.hidden_dim)
    sal = build_saliency(tiny)
    last = sal.mask_predictor.layer2[-1]

    def run(alpha: float, bias: float):
        with torch.no_grad():
            sal.alpha.fill_(alpha)
            last.bias.fill_(bias)
        return sal(ml.feat + ml.pos, ml.mask, ml.spatial_shapes, mt).level_logits

    pos_on, pos_off = run(1.0, 3.0), run(0.0, 3.0)  # coarse logits > -1: factors positive
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(pos_on, pos_off))
    neg_on, neg_off = run(1.0, -3.0), run(0.0, -3.0)  # coarse logits < -1: features flipped
    assert torch.allclose(neg_on[3], neg_off[3])  # the coarsest level is never modulated
    assert not torch.allclose(neg_on[0], neg_off[0]) and not torch.allclose(neg_on[2], neg_off[2])
    # with alpha = 0 each level is P(memory transform of that level) alone
    memory, _ = mt(ml.feat + ml.pos, ml.mask, ml.spatial_shapes)
    assert torch.allclose(neg_off[0].flatten(1), sal.mask_predictor(memory[:, :16]).squeeze(-1), atol=1e-6)


def test_alpha_fixed_and_learnable() -> None:
    cfg = preset("paper", scale=2)
    fixed = build_saliency(cfg)
    assert fixed.alpha.shape == (3,) and not fixed.alpha.requires_grad and torch.all(fixed.alpha == 1.0)
    learn = build_saliency(replace(cfg, saliency=replace(cfg.saliency, alpha_mode="learnable")))
    assert learn.alpha.requires_grad and learn.alpha.abs().max() <= 0.3
    # parameter counts (spec Appendix A): saliency predictor 0.108 M, memory transform 0.066 + 0.001 M
    assert round(n_params(fixed) / 1e6, 3) == 0.108
    mt = MemoryTransform(256)
    assert round(n_params(mt.fc) / 1e6, 3) == 0.066 and round(n_params(mt.norm) / 1e6, 3) == 0.001
    assert n_params(LevelEmbedding(4, 256)) == 1024


def test_mask_predictor_global_half_and_init() -> None:
    torch.manual_seed(0)
    mp = MaskPredictor(32, 32)
    assert all(torch.all(m.bias == 0) for m in mp.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(1, 10, 32)
    y = mp(x)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 5, 32)  # changing other tokens changes token 0's score (global context)
    assert y.shape == (1, 10, 1) and not torch.allclose(mp(x2)[:, 0], y[:, 0])


def test_padding_is_ranked_last_and_zeroed_in_memory(tiny: SDCoNetConfig) -> None:
    torch.manual_seed(0)
    d = tiny.hidden_dim
    feats = [torch.randn(2, d, h, w) for h, w in [(4, 6), (2, 3), (1, 2), (1, 1)]]
    image_mask = torch.zeros(2, 32, 48, dtype=torch.bool)
    image_mask[1, :, 24:] = True  # right half of image 1 is padding
    masks = level_masks(feats, image_mask)
    ml = flatten_levels(feats, SinePositionalEncoding(d // 2), LevelEmbedding(4, d), masks)
    assert ml.mask[1].sum() > 0 and not ml.mask[0].any()
    assert torch.allclose(ml.valid_ratios[1, 0], torch.tensor([0.5, 1.0]))
    out = build_saliency(tiny)(ml.feat + ml.pos, ml.mask, ml.spatial_shapes, MemoryTransform(d))
    assert torch.all(out.scores[1][ml.mask[1]] == out.scores[1].min())
    props, valid = encoder_proposals(ml.spatial_shapes, ml.mask, 2)
    assert not valid[1][ml.mask[1]].any()
    assert torch.allclose(props[0, 0, :2], torch.tensor([0.5 / 6, 0.5 / 4]))  # (cx, cy) of token (0, 0)


# --------------------------------------------------------------------------------- key-token selection
def _paper_scores(batch: int = 2):
    torch.manual_seed(0)
    return [torch.randn(batch, h * w) for h, w in PAPER_SIZES]


def test_key_token_selection_full_ratios_keep_everything() -> None:
    sel = key_token_selection(_paper_scores(), (1, 1, 1, 1), (1,) * 6)
    assert sel.indices.shape == (2, 1360) and sel.layer_counts == [1360] * 6
    assert sel.level_counts == [1024, 256, 64, 16] and sel.focus_token_nums.tolist() == [1360, 1360]
    assert torch.equal(sel.indices.sort(1)[0], torch.arange(1360).expand(2, -1))
    flat = torch.cat(_paper_scores(), 1)
    ranked = flat.gather(1, sel.indices)
    assert torch.all(ranked[:, :-1] >= ranked[:, 1:])  # sorted by saliency, descending


def test_key_token_selection_salience_detr_ratios() -> None:
    scores = _paper_scores()
    sel = key_token_selection(scores, (0.25, 0.5, 1, 1), (1, 0.8, 0.6, 0.6, 0.4, 0.2))
    assert sel.level_counts == [256, 128, 64, 16]
    assert sel.indices.shape == (2, 464)
    assert sel.layer_counts == [464, 371, 278, 278, 185, 92]
    assert sel.for_layer(5).shape == (2, 92)
    lvl0 = sel.indices[sel.indices < 1024].view(2, -1)  # kept level-0 tokens are its top-256
    top = scores[0].topk(256, dim=1)[1]
    assert torch.equal(lvl0.sort(1)[0], top.sort(1)[0])


def test_key_token_selection_with_padding_uses_batch_max() -> None:
    scores = [torch.randn(2, 16), torch.randn(2, 4)]
    masks = [torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 2, 2, dtype=torch.bool)]
    masks[0][1, :, 2:] = True  # image 1: 8 valid tokens at level 0
    sel = key_token_selection(scores, (0.5, 1.0), (1.0, 0.5), masks)
    assert sel.focus_token_nums.tolist() == [12, 8]
    assert sel.level_counts == [8, 4] and sel.layer_counts == [12, 6]


# ------------------------------------------------------------------------------------- targets and loss
def test_target_is_one_at_centred_token_and_zero_elsewhere() -> None:
    # level 0 (stride 16) token (row 5, col 7) has its centre at (x, y) = (120, 88); box half-size 20
    box = torch.tensor([[100.0, 68.0, 140.0, 108.0]])
    t = saliency_targets([box], PAPER_SIZES, (512, 512))
    assert [tuple(x.shape) for x in t] == [(1, h, w) for h, w in PAPER_SIZES]
    assert t[0][0, 5, 7] == 1.0
    assert t[0].max() == 1.0 and (t[0] > 0).sum() == 9  # the 3 x 3 token centres inside the box
    assert all(x.sum() == 0 for x in t[1:])


def test_target_level_assignment_for_a_larger_box() -> None:
    # level 1 (stride 32) token (5, 7) centre (240, 176); half-size 100 -> max(l,t,r,b) in [100, 200)
    box = torch.tensor([[140.0, 76.0, 340.0, 276.0]])
    t = saliency_targets([box], PAPER_SIZES, (512, 512))
    assert t[1][0, 5, 7] == 1.0
    assert t[0].sum() == 0 and t[3].sum() == 0  # 100 <= max < 200 never falls in (-1, 64] or (256, inf)
    assert (t[2] > 0).any()  # off-centre tokens whose farthest side is > 128 px match level 2


def test_target_corner_value_and_max_over_boxes() -> None:
    # token (0, 0) at level 0 sits 0.1 px inside the top-left corner of a 64 x 64 box
    box = torch.tensor([[7.9, 7.9, 71.9, 71.9]])
    t = saliency_targets([box], PAPER_SIZES, (512, 512))[0]
    assert abs(float(t[0, 0, 0]) - (1 - math.sqrt(2) / 2)) < 0.01  # ~0.29
    centred = torch.tensor([[-8.0, -8.0, 24.0, 24.0]])  # centred on token (0, 0), also level 0
    both = saliency_targets([torch.cat([box, centred])], PAPER_SIZES, (512, 512))[0]
    assert both[0, 0, 0] == 1.0
    assert torch.all((both >= 0) & (both <= 1))


def test_tiny_box_gets_no_positive_and_empty_images_work() -> None:
    tiny_box = torch.tensor([[10.0, 10.0, 18.0, 18.0]])  # between level-0 centres (8 and 24)
    t = saliency_targets([tiny_box, torch.zeros(0, 4)], PAPER_SIZES, (512, 512))
    assert all(x.sum() == 0 for x in t) and t[0].shape == (2, 32, 32)


def test_targets_non_square_strides() -> None:
    # HR 96 x 128 with tiny neck sizes: strides 16 in both axes; box centred on token (2, 3) at level 0
    box = torch.tensor([[46.0, 30.0, 66.0, 50.0]])
    t = saliency_targets([box], [(6, 8), (3, 4), (2, 2), (1, 1)], (96, 128))
    assert t[0][0, 2, 3] == 1.0 and t[0].sum() == 1.0


def test_focal_loss_value_normalisation_and_decrease() -> None:
    torch.manual_seed(0)
    boxes = [torch.tensor([[100.0, 68.0, 140.0, 108.0], [300.0, 300.0, 420.0, 380.0]]), torch.zeros(0, 4)]
    targets = saliency_targets(boxes, PAPER_SIZES, (512, 512))
    logits = [torch.randn(2, 1, h, w) for h, w in PAPER_SIZES]
    loss = saliency_focal_loss(logits, targets, 0.25, 2.0, weight=2.0)
    x, t = torch.cat([z.flatten(1) for z in logits], 1), torch.cat([z.flatten(1) for z in targets], 1)
    p = x.sigmoid()
    w = 0.75 * p ** 2 * (1 - t) + 0.25 * t * (1 - p) ** 2
    manual = (F.binary_cross_entropy_with_logits(x, t, reduction="none") * w).sum() / (t > 0).sum() * 2.0
    assert torch.allclose(loss, manual)
    # moving the logits toward the targets lowers the loss
    goal = torch.logit(t.clamp(0.02, 0.98))
    prev = saliency_focal_loss(x, t)
    for step in (0.25, 0.5, 0.75, 1.0):
        cur = saliency_focal_loss(x + step * (goal - x), t)
        assert cur < prev
        prev = cur
    # and so does a few steps of gradient descent
    z = x.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=5.0)
    first = None
    for _ in range(5):
        opt.zero_grad()
        val = saliency_focal_loss(z, t)
        first = val.item() if first is None else first
        val.backward()
        opt.step()
    assert saliency_focal_loss(z, t).item() < first


def test_saliency_loss_module_and_end_to_end_grad(tiny: SDCoNetConfig) -> None:
    sizes = [(6, 8), (3, 4), (2, 2), (1, 1)]
    ml = _tokens(tiny, sizes)
    mt = MemoryTransform(tiny.hidden_dim)
    sal = SaliencyPredictor(tiny.hidden_dim, replace(tiny.saliency, alpha_mode="learnable"))
    out = sal(ml.feat + ml.pos, ml.mask, ml.spatial_shapes, mt)
    boxes = [torch.tensor([[40.0, 20.0, 80.0, 60.0]]), torch.zeros(0, 4)]
    loss = SaliencyLoss(tiny.saliency)(out.level_logits, boxes, (96, 128))["loss_salience"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert sal.alpha.grad is not None and mt.fc.weight.grad is not None


def test_sine_position_encoding_matches_definition() -> None:
    pe = SinePositionalEncoding(num_feats=4, temperature=20)
    out = pe(torch.zeros(1, 3, 5, dtype=torch.bool))
    assert out.shape == (1, 8, 3, 5)
    # y channels first: y_embed = (row + 1) / (H + eps) * 2 pi; dim_t = 20 ** (2 * (i // 2) / 4)
    y = 1 / (3 + 1e-6) * 2 * math.pi  # row 0
    expect = [math.sin(y), math.cos(y), math.sin(y / 20 ** 0.5), math.cos(y / 20 ** 0.5)]
    assert torch.allclose(out[0, :4, 0, 0], torch.tensor(expect), atol=1e-5)
    x = 2 / (5 + 1e-6) * 2 * math.pi  # column 1
    assert torch.allclose(out[0, 4:6, 0, 1], torch.tensor([math.sin(x), math.cos(x)]), atol=1e-5)
    padded = torch.zeros(1, 3, 5, dtype=torch.bool)
    padded[:, :, 3:] = True  # normalisation over the valid width only
    assert torch.allclose(pe(padded)[0, 4, 0, 2], torch.tensor(math.sin(2 * math.pi)), atol=1e-5)


def test_level_shapes_are_host_metadata_whatever_the_feature_device() -> None:
    """spatial_shapes and level_start_index stay on the CPU (every consumer reads them back as ints: on CUDA each
    read of a device tensor would be a host sync); features on the meta device, which holds no data, show it."""
    feats = [torch.empty(2, 8, h, w, device="meta") for h, w in ((6, 5), (3, 3), (2, 2), (1, 1))]
    ml = flatten_levels(feats, SinePositionalEncoding(4), LevelEmbedding(4, 8).to("meta"))
    assert ml.feat.device.type == "meta"
    assert ml.spatial_shapes.device.type == "cpu" and ml.level_start_index.device.type == "cpu"
    assert ml.spatial_shapes.tolist() == [[6, 5], [3, 3], [2, 2], [1, 1]]
    assert ml.level_start_index.tolist() == [0, 30, 39, 43]

"""Hungarian matcher, DINO criterion (focal + L1 + GIoU per layer, enc, dn) and the post-processor."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from sdconet.models.criterion import PostProcess, SetCriterion
from sdconet.models.denoising import dn_positive_indices
from sdconet.models.matcher import HungarianMatcher
from sdconet.models.two_stage import DINOHead

C, D = 3, 32
SHAPES = torch.tensor([[6, 6], [3, 3], [2, 2], [1, 1]])
N = int(SHAPES.prod(1).sum())


def _targets(counts: list[int], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        c = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
        out.append({"labels": torch.randint(0, C, (n,), generator=g), "boxes": torch.cat([c, wh], -1)})
    return out


def _perfect(targets: list[dict[str, torch.Tensor]], q: int,
             slots: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits +-12 and exact boxes for gt j at query slots[i][j]; other queries: background, far boxes."""
    b = len(targets)
    logits = torch.full((b, q, C), -12.0)
    boxes = torch.tensor([0.05, 0.05, 0.02, 0.02]).repeat(b, q, 1)
    for i, t in enumerate(targets):
        logits[i, slots[i], t["labels"]] = 12.0
        boxes[i, slots[i]] = t["boxes"]
    return logits, boxes


def _outputs(logits: torch.Tensor, boxes: torch.Tensor, layers: int = 2) -> dict:
    layer = {"pred_logits": logits, "pred_boxes": boxes}
    return {**layer, "aux_outputs": [dict(layer) for _ in range(layers - 1)], "enc_outputs": dict(layer),
            "dn_outputs": None, "dn_meta": None}


def test_matcher_identity_for_perfect_predictions() -> None:
    tg = _targets([4, 2])
    slots = [torch.tensor([7, 1, 9, 3]), torch.tensor([5, 0])]
    logits, boxes = _perfect(tg, 10, slots)
    out = HungarianMatcher()(logits, boxes, tg)
    for (qi, gi), s in zip(out, slots):
        assert torch.equal(qi[torch.argsort(gi)], s)
        assert sorted(gi.tolist()) == list(range(len(s)))


def test_matcher_handles_empty_targets() -> None:
    m = HungarianMatcher()
    logits, boxes = torch.randn(2, 6, C), torch.rand(2, 6, 4) * 0.5 + 0.25
    for counts in ([0, 0], [0, 3], [2, 0]):
        out = m(logits, boxes, _targets(counts))
        assert [len(q) for q, _ in out] == counts and [len(g) for _, g in out] == counts
    assert m.cost_class == 2.0 and m.cost_bbox == 5.0 and m.cost_giou == 2.0


def test_match_many_equals_one_call_per_set() -> None:
    """Stacked matching (one host transfer) gives every set the assignment of its own call, any set shapes."""
    m = HungarianMatcher()
    g = torch.Generator().manual_seed(3)
    for counts in ([4, 2], [0, 3], [0, 0]):
        tg = _targets(counts)
        sets = [(torch.randn(2, q, C, generator=g), torch.rand(2, q, 4, generator=g) * 0.5 + 0.25)
                for q in (9, 9, 7, 9)]  # one set of another query count: matched in its own group
        many = m.match_many(sets, tg)
        assert len(many) == len(sets)
        for (logits, boxes), got in zip(sets, many):
            for (qa, ga), (qb, gb) in zip(m(logits, boxes, tg), got):
                assert torch.equal(qa, qb) and torch.equal(ga, gb)


def test_criterion_matches_every_set_in_one_solver_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoder layers and encoder proposals of one shape: a single cost computation and host copy per step."""
    tg = _targets([3, 1])
    logits, boxes = torch.randn(2, 8, C), torch.rand(2, 8, 4) * 0.5 + 0.25
    crit = SetCriterion(C, num_dec_layers=3)
    calls: list[int] = []
    impl = crit.matcher._impl.forward
    monkeypatch.setattr(crit.matcher._impl, "forward", lambda *a, **k: calls.append(a[0].shape[0]) or impl(*a, **k))
    losses = crit(_outputs(logits, boxes, layers=3), tg)
    assert calls == [2 * 4]  # 3 decoder layers + encoder, batch 2, stacked
    assert {"loss_cls", "d0.loss_cls", "d1.loss_cls", "enc.loss_cls"} <= set(losses)


def test_avg_factor_without_a_device_round_trip() -> None:
    """Single process: the positives count is not put on the device and read back (a sync on CUDA); a meta
    device, whose tensors cannot be read, shows it."""
    from sdconet.models.criterion import _avg_factor

    assert _avg_factor(0, torch.device("meta")) == 1.0
    assert _avg_factor(7, torch.device("meta")) == 7.0


def test_criterion_perfect_lower_than_random_and_names() -> None:
    tg = _targets([3, 2])
    crit = SetCriterion(C, num_dec_layers=2)
    perfect = crit(_outputs(*_perfect(tg, 8, [torch.tensor([2, 5, 0]), torch.tensor([1, 6])])), tg)
    g = torch.Generator().manual_seed(3)
    rand = crit(_outputs(torch.randn(2, 8, C, generator=g), torch.rand(2, 8, 4, generator=g) * 0.5 + 0.2), tg)
    expected = {f"{p}loss_{k}" for p in ("", "d0.", "enc.", "dn.", "d0.dn.") for k in ("cls", "bbox", "iou")}
    assert set(perfect) == expected and set(crit.weight_dict) >= expected
    assert crit.weight_dict["loss_cls"] == 1.0 and crit.weight_dict["d0.loss_bbox"] == 5.0
    assert crit.weight_dict["enc.loss_iou"] == 2.0 and crit.weight_dict["d0.dn.loss_iou"] == 2.0
    for k in ("loss_cls", "loss_bbox", "loss_iou", "d0.loss_cls", "enc.loss_iou"):
        assert perfect[k].item() < 1e-3, k
        assert rand[k].item() > perfect[k].item() + 0.05, k
    total = lambda ls: sum(ls[k] * crit.weight_dict[k] for k in ls)  # noqa: E731
    assert total(perfect) < total(rand)


def test_focal_normalised_by_num_boxes() -> None:
    tg = _targets([2, 1])
    logits, boxes = torch.randn(2, 5, C), torch.rand(2, 5, 4) * 0.5 + 0.2
    crit = SetCriterion(C, num_dec_layers=1)
    losses = crit(_outputs(logits, boxes, layers=1), tg)
    idx = crit.matcher(logits, boxes, tg)
    onehot = torch.zeros_like(logits)
    for i, (q, gi) in enumerate(idx):
        onehot[i, q, tg[i]["labels"][gi]] = 1.0
    assert losses["loss_cls"].item() == pytest.approx(sigmoid_focal_loss(logits, onehot, reduction="sum").item() / 3)


def test_dn_losses_matched_by_construction() -> None:
    tg = _targets([2, 1])
    meta = {"num_dn": 12, "num_groups": 3, "max_gt": 2, "num_gts": [2, 1]}
    slots = [q for q, _ in dn_positive_indices([2, 1], meta)]
    assert slots[0].tolist() == [0, 1, 4, 5, 8, 9] and slots[1].tolist() == [0, 4, 8]
    rep = [{"labels": t["labels"].repeat(3), "boxes": t["boxes"].repeat(3, 1)} for t in tg]
    dn_perfect = dict(zip(("pred_logits", "pred_boxes"), _perfect(rep, 12, slots)))
    out = _outputs(torch.randn(2, 6, C), torch.rand(2, 6, 4) * 0.5 + 0.2, layers=2)
    out.update(dn_outputs=[dn_perfect, dn_perfect], dn_meta=meta)
    losses = SetCriterion(C, num_dec_layers=2)(out, tg)
    for k in ("dn.loss_cls", "dn.loss_bbox", "dn.loss_iou", "d0.dn.loss_cls"):
        assert losses[k].item() < 1e-3, k
    shifted = dict(dn_perfect, pred_boxes=dn_perfect["pred_boxes"].roll(1, dims=1))
    out.update(dn_outputs=[shifted, shifted])
    assert SetCriterion(C, num_dec_layers=2)(out, tg)["dn.loss_bbox"].item() > 0.1


@pytest.mark.parametrize("counts", [[0, 0], [3, 0]])
def test_end_to_end_finite_losses_and_gradients(counts: list[int]) -> None:
    torch.manual_seed(0)
    head = DINOHead(D, 2, 64, num_layers=2, num_queries=10, num_classes=C, num_dn_queries=10)
    head.train()
    mem = torch.randn(2, N, D, requires_grad=True)
    tg = _targets(counts)
    out = head(mem, SHAPES, torch.ones(2, 4, 2), targets=tg)
    assert (out["dn_meta"] is None) == (sum(counts) == 0)
    crit = SetCriterion(C, num_dec_layers=2)
    losses = crit(out, tg)
    assert len(losses) == 15 and all(torch.isfinite(v) for v in losses.values())
    total = sum(losses[k] * crit.weight_dict[k] for k in losses)
    total.backward()
    assert head.query_embedding.weight.grad is not None and head.query_embedding.weight.grad.abs().sum() > 0
    assert mem.grad is not None and torch.isfinite(mem.grad).all()
    if sum(counts):
        assert head.dn_generator.label_embedding.weight.grad.abs().sum() > 0


def test_postprocess_topk_pairs_in_pixels() -> None:
    logits = torch.full((1, 4, C), -10.0)
    logits[0, 2, 1] = 5.0
    logits[0, 0, 2] = 3.0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5], [0.9, 0.9, 0.4, 0.4]]])
    res = PostProcess(num_select=5)({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[512, 256]]))
    r = res[0]
    assert r["scores"].shape == (5,) and r["labels"][:2].tolist() == [1, 2]
    assert r["scores"][0].item() == pytest.approx(1 / (1 + math.exp(-5.0)))
    assert torch.allclose(r["boxes"][0], torch.tensor([0.0, 256.0, 128.0, 512.0]))
    assert torch.allclose(r["boxes"][1], torch.tensor([102.4, 153.6, 153.6, 358.4]))
    small = PostProcess(300)({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[8, 8]]))
    assert len(small[0]["scores"]) == 12  # Q * C < 300

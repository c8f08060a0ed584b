"""Gradient routing: phase schedule, SR freezing in the engine, PCGrad-style projection and routed_backward."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from sdconet.data import TileDataset
from sdconet.engine import train
from sdconet.routing import RoutingSchedule, graph_leaves, project_conflicting, routed_backward
from test_train_engine import ToyModel, make_tiles, read_log, small_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def _targets() -> list[dict[str, Tensor]]:
    return [{"boxes": torch.tensor([[2.0, 3.0, 12.0, 20.0]]), "labels": torch.tensor([1])}] * 2


def test_phases_per_mode() -> None:
    sched = RoutingSchedule("schedule", unfreeze_epoch=3)
    assert [sched.phase(e) for e in range(5)] == [1, 1, 1, 2, 2]
    assert not any(sched.projects(e) for e in range(5))
    assert [RoutingSchedule("none", 3).phase(e) for e in range(5)] == [2] * 5
    proj = RoutingSchedule("projection", 2)
    assert [proj.projects(e) for e in range(4)] == [False, False, True, True]
    with pytest.raises(ValueError, match="routing mode"):
        RoutingSchedule("pcgrad", 2)


def test_apply_freezes_sr_branch_in_phase_one_only() -> None:
    torch.manual_seed(0)
    model = ToyModel().train()
    sched = RoutingSchedule("schedule", unfreeze_epoch=1)
    assert sched.apply(model, 0) == 1
    assert not model.sr_enabled and not any(p.requires_grad for p in model.sr_head.parameters())
    losses = model(torch.randn(2, 3, 32, 32), _targets(), epoch=0)
    assert "loss_sr" not in losses
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.sr_head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.zero_grad(set_to_none=True)
    assert sched.apply(model, 1) == 2 and model.sr_enabled
    losses = model(torch.randn(2, 3, 32, 32), _targets(), epoch=1)
    assert "loss_sr" in losses
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.sr_head.parameters())


def test_engine_phase_one_leaves_sr_untouched_and_logs_no_sr_loss(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d", n=4)
    torch.manual_seed(0)
    model = ToyModel()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = small_cfg(epochs=2, routing="schedule", unfreeze_epoch=1, weight_decay=0.1)
    train(model, TileDataset(js, tmp_path / "d", train=True), None, cfg, tmp_path / "run")
    logs = read_log(tmp_path / "run")
    assert logs[0]["phase"] == 1 and "loss_sr" not in logs[0]["losses"]
    assert logs[1]["phase"] == 2 and "loss_sr" in logs[1]["losses"]
    e0 = torch.load(tmp_path / "run" / "epoch_000.pt", weights_only=False)["model"]
    e1 = torch.load(tmp_path / "run" / "epoch_001.pt", weights_only=False)["model"]
    sr_keys = [k for k in init if k.startswith("sr_head.")]
    assert sr_keys and all(torch.equal(e0[k], init[k]) for k in sr_keys)  # no grad, no weight decay
    assert not torch.equal(e0["backbone.0.weight"], init["backbone.0.weight"])
    assert all(not torch.equal(e1[k], e0[k]) for k in sr_keys)


def test_project_conflicting_removes_negative_component() -> None:
    g_det = [torch.tensor([1.0, 0.0]), torch.tensor([[2.0]])]
    g_sr = [torch.tensor([-1.0, 1.0]), torch.tensor([[-1.0]])]
    assert _dot(g_sr, g_det) < 0
    out = project_conflicting(g_sr, g_det)
    assert abs(_dot(out, g_det)) < 1e-6
    assert torch.allclose(out[0], torch.tensor([-0.4, 1.0])) and torch.allclose(out[1], torch.tensor([[0.2]]))
    # a common scale (GradScaler) scales the result by the same factor
    scaled = project_conflicting([8 * g for g in g_sr], [8 * g for g in g_det])
    assert all(torch.allclose(a, 8 * b) for a, b in zip(scaled, out))
    # no conflict: unchanged; None counts as a zero gradient
    same = [torch.tensor([1.0, 1.0]), None]
    assert project_conflicting(same, [torch.tensor([1.0, 0.0]), torch.tensor([[1.0]])]) == same
    partial = project_conflicting([None, torch.tensor([[-1.0]])], [torch.tensor([1.0, 0.0]), torch.tensor([[1.0]])])
    assert torch.allclose(partial[0], torch.tensor([0.5, 0.0])) and torch.allclose(partial[1], torch.tensor([[-0.5]]))


def _conflict_problem() -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Shared ``w``, det-only ``u``, SR-only ``v``; det pulls w towards +1, SR towards -1 (conflict)."""
    w = torch.tensor([0.5, 0.2, -0.3], requires_grad=True)
    u = torch.tensor([1.5], requires_grad=True)
    v = torch.tensor([0.1, 0.0, 0.2], requires_grad=True)
    losses = {"loss_bbox": ((w * u - 1.0) ** 2).sum(), "loss_cls": (w.sum() - 0.5) ** 2,
              "loss_sr": 2.0 * ((w + v + 1.0) ** 2).sum()}
    return w, u, v, losses


def test_routed_backward_projects_shared_gradient_only() -> None:
    w, u, v, losses = _conflict_problem()
    det = losses["loss_bbox"] + losses["loss_cls"]
    gd_w, gd_u = torch.autograd.grad(det, [w, u], retain_graph=True)
    gs_w, gs_v = torch.autograd.grad(losses["loss_sr"], [w, v], retain_graph=True)
    assert _dot([gs_w], [gd_w]) < -1e-3  # without projection the SR component opposes detection
    w.grad = torch.full_like(w, 0.25)  # an earlier micro-batch's gradient is kept (accumulation)
    info = routed_backward(losses, [w])
    assert info["projected"] and info["dot"] < 0 and info["cos"] < 0
    routed_sr = w.grad - 0.25 - gd_w
    assert _dot([routed_sr], [gd_w]) >= -1e-6
    assert torch.allclose(routed_sr, project_conflicting([gs_w], [gd_w])[0])
    assert torch.allclose(u.grad, gd_u) and torch.allclose(v.grad, gs_v)  # non-shared: plain gradients
    assert {id(p) for p in graph_leaves([det])} == {id(w), id(u)}


def test_routed_backward_without_conflict_equals_plain_backward_and_respects_scaler() -> None:
    w = torch.tensor([0.5, -0.5], requires_grad=True)
    v = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = {"loss_bbox": ((w - 1.0) ** 2).sum(), "loss_sr": ((w * v - 2.0) ** 2).sum()}
    ref = torch.autograd.grad(sum(losses.values()), [w, v], retain_graph=True)
    assert routed_backward(losses, [w], params=[w, v])["projected"] is False
    assert torch.allclose(w.grad, ref[0]) and torch.allclose(v.grad, ref[1])
    w2, u2, v2, losses2 = _conflict_problem()
    routed_backward(losses2, [w2])
    plain = [p.grad.clone() for p in (w2, u2, v2)]
    w3, u3, v3, losses3 = _conflict_problem()
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    routed_backward(losses3, [w3], scaler)
    for p, ref_g in zip((w3, u3, v3), plain):
        assert torch.allclose(p.grad, 8.0 * ref_g)


def test_engine_projection_mode_trains_and_logs_conflicts(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d", n=4)
    torch.manual_seed(0)
    cfg = small_cfg(epochs=2, routing="projection", unfreeze_epoch=1, accumulate=2, clip_grad=0.1)
    train(ToyModel(), TileDataset(js, tmp_path / "d", train=True), None, cfg, tmp_path / "run")
    logs = read_log(tmp_path / "run")
    assert "projection" not in logs[0] and logs[1]["projection"]["micro_batches"] == 2
    assert 0 <= logs[1]["projection"]["conflicting"] <= 2
    assert all(v == v for v in logs[1]["losses"].values())
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[1])["phase"] == 2

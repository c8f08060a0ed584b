"""The baselines' loops read their losses from the device once per log line / checkpoint, not once per step
(a host synchronisation per step on CUDA), and still stop on the first non-finite step, naming it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from basicsr.losses import basic_loss
from baselines._runtime import NonFiniteLossError, PendingLosses
from baselines.sr_train import train_sr
from tests.test_baselines_sr import _log, _make_pairs

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")
READS = {"__float__", "item", "tolist", "__bool__", "__array__"}


class HostReads(TorchFunctionMode):
    """Records ``(function, caller file)`` of every tensor-to-host read made while active."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = getattr(func, "__name__", "")
        if name in READS:
            self.reads.append((name, Path(sys._getframe(1).f_code.co_filename).name))
        return func(*args, **(kwargs or {}))


def test_pending_losses_read_once_and_keep_step_order() -> None:
    p = PendingLosses("run/x")
    for step in (1, 2, 3):
        p.add(step, {"a": torch.tensor(float(step)), "b": torch.tensor([step * 10.0])})
    assert len(p) == 3
    with HostReads() as mode:
        rows = p.flush()
    assert rows == [(1, {"a": 1.0, "b": 10.0}), (2, {"a": 2.0, "b": 20.0}), (3, {"a": 3.0, "b": 30.0})]
    assert [r for r, _ in mode.reads] == ["tolist"]
    assert len(p) == 0 and p.flush() == []


def test_pending_losses_name_the_first_non_finite_step_and_term() -> None:
    p = PendingLosses("runs/sr7")
    p.add(4, {"l1": torch.tensor(0.5)})
    p.add(5, {"l1": torch.tensor(0.4), "aux": torch.tensor(float("inf"))})
    p.add(6, {"l1": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteLossError, match=r"\(aux=inf\) at step 5 in runs/sr7"):
        p.flush()
    assert len(p) == 0


def test_sr_loop_reads_the_loss_only_at_log_lines_and_checkpoints(tmp_path: Path) -> None:
    pairs = _make_pairs(tmp_path / "pairs")
    with HostReads() as mode:
        res = train_sr("edsr", 2, pairs, tmp_path / "run", iters=12, batch_size=2, patch_size=16, lr=1e-3, seed=0,
                       preset="tiny", log_every=5, checkpoint_every=3)
    # Flushes at steps 3 (checkpoint), 5 (log), 6, 9 (checkpoints), 10 (log), 12 (end): one read each.
    assert [r for r in mode.reads if r[1] in ("sr_train.py", "_runtime.py")] == [("tolist", "_runtime.py")] * 6
    assert [r["iter"] for r in _log(tmp_path / "run")] == [5, 10, 12]
    assert 0 < res["final_loss"] < float("inf")


def test_sr_nan_is_reported_at_its_step_before_the_next_checkpoint(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = _make_pairs(tmp_path / "pairs")
    kw = dict(iters=8, batch_size=2, patch_size=16, lr=1e-3, seed=0, preset="tiny", log_every=4, checkpoint_every=4)
    calls = {"n": 0}
    forward = basic_loss.L1Loss.forward

    def nan_at_step_6(self, pred, target, weight=None, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        out = forward(self, pred, target, weight, **kwargs)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(basic_loss.L1Loss, "forward", nan_at_step_6)
    with pytest.raises(NonFiniteLossError, match=r"\(l1=nan\) at step 6 in .*run"):
        train_sr("edsr", 2, pairs, tmp_path / "run", **kw)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["iteration"] == 4 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert [r["iter"] for r in _log(tmp_path / "run")] == [4]

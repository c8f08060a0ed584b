"""Checkpoints: exact resume, atomic writes, retention and RNG restoration."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import sdconet.checkpoint as ckpt_mod
from sdconet.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_epoch_checkpoint
from sdconet.data import TileDataset
from sdconet.engine import train
from test_train_engine import ToyModel, make_tiles, read_log, small_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def _resume_cfg(epochs: int):  # type: ignore[no-untyped-def]
    # 7 tiles, batch 2 -> 4 iterations (last one of 1 image); accumulate 3 -> step groups of 3 and 1.
    return small_cfg(epochs=epochs, lr=1e-2, routing="schedule", unfreeze_epoch=1, milestones=(2,),
                     warmup_iters=3, accumulate=3, clip_grad=0.1, seed=7)


def test_resume_is_bit_identical_to_uninterrupted_run(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d", n=7)
    ds = TileDataset(js, tmp_path / "d", train=True)  # flips on (p=0.5), model has dropout
    torch.manual_seed(0)
    straight = ToyModel(dropout=0.2)
    train(straight, ds, None, _resume_cfg(3), tmp_path / "a")
    after_straight = torch.rand(4)
    torch.manual_seed(0)
    first = ToyModel(dropout=0.2)
    train(first, ds, None, _resume_cfg(2), tmp_path / "b")
    torch.manual_seed(123)  # different initial weights and RNG: everything must come from last.pt
    resumed = ToyModel(dropout=0.2)
    out = train(resumed, ds, None, _resume_cfg(3), tmp_path / "b", resume=True)
    after_resumed = torch.rand(4)
    assert out["start_epoch"] == 2 and len(out["history"]) == 1
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"parameter {k} differs after resume"
    assert not torch.equal(sa["sr_head.0.weight"], first.state_dict()["sr_head.0.weight"])  # epoch 2 did train
    assert torch.equal(after_straight, after_resumed)  # RNG streams continue identically
    la, lb = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["epoch"] for r in lb] == [0, 1, 2]
    assert [r["losses"] for r in la] == [r["losses"] for r in lb]
    oa = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["optimizer"]["state"]
    ob = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_noop(tmp_path: Path) -> None:
    js, _ = make_tiles(tmp_path / "d", n=4)
    ds = TileDataset(js, tmp_path / "d", train=True)
    out = train(ToyModel(), ds, None, small_cfg(epochs=1), tmp_path / "r", resume=True)
    assert out["start_epoch"] == 0 and len(out["history"]) == 1
    again = train(ToyModel(), ds, None, small_cfg(epochs=1), tmp_path / "r", resume=True)
    assert again["start_epoch"] == 1 and again["history"] == [] and len(read_log(tmp_path / "r")) == 1


def test_checkpoint_of_other_settings_is_set_aside_not_resumed(tmp_path: Path) -> None:
    """A changed setting, or a checkpoint holding more epochs than asked, restarts the run (old files kept aside):
    resuming it would keep a different experiment's weights."""
    js, _ = make_tiles(tmp_path / "d", n=4)
    ds = TileDataset(js, tmp_path / "d", train=True)
    train(ToyModel(), ds, None, small_cfg(epochs=3), tmp_path / "r", resume=True)
    shorter = train(ToyModel(), ds, None, small_cfg(epochs=2), tmp_path / "r", resume=True)
    assert shorter["start_epoch"] == 0 and len(shorter["history"]) == 2  # not "done" with 3 epochs of weights
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=False)["epoch"] == 1
    assert [r["epoch"] for r in read_log(tmp_path / "r")] == [0, 1]
    stale = list((tmp_path / "r").glob("stale-*/last.pt"))
    assert len(stale) == 1 and torch.load(stale[0], weights_only=False)["epoch"] == 2
    changed = train(ToyModel(), ds, None, small_cfg(epochs=2, lr=0.5), tmp_path / "r", resume=True)
    assert changed["start_epoch"] == 0 and len(changed["history"]) == 2
    longer = train(ToyModel(), ds, None, small_cfg(epochs=3, lr=0.5), tmp_path / "r", resume=True)
    assert longer["start_epoch"] == 2 and len(longer["history"]) == 1  # extending the same run still resumes


def test_failing_save_leaves_previous_last_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ToyModel()
    opt = torch.optim.AdamW(model.parameters())
    save_epoch_checkpoint(tmp_path, model, opt, None, None, 0, {"a": 1}, sha="x")
    before = (tmp_path / "last.pt").read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def broken_save(obj, fh, *a, **k):  # type: ignore[no-untyped-def]
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_epoch_checkpoint(tmp_path, model, opt, None, None, 1, {"a": 1}, sha="x")
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last.pt", model, opt, None, None, 1, {"a": 1}, sha="x")
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_000.pt", "last.pt"]  # no temp files left
    fresh = ToyModel()
    state = load_checkpoint(tmp_path / "last.pt", fresh, restore_rng=False)
    assert state["epoch"] == 0 and not torch.equal(fresh.backbone[0].weight, model.backbone[0].weight)


def test_keep_last_and_latest_checkpoint(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    model = ToyModel()
    for epoch in range(5):
        save_epoch_checkpoint(tmp_path, model, None, None, None, epoch, None, {"e": epoch}, keep_last=2,
                              global_step=10 * epoch, sha="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_003.pt", "epoch_004.pt", "last.pt"]
    state = torch.load(latest_checkpoint(tmp_path), weights_only=False)
    assert state["epoch"] == 4 and state["global_step"] == 40 and state["extra"] == {"e": 4}
    assert state["git_sha"] == "x" and state["format"] == ckpt_mod.FORMAT_VERSION
    (tmp_path / "last.pt").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_004.pt"


def test_load_restores_rng_and_rejects_mismatched_model(tmp_path: Path) -> None:
    model = ToyModel()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "c.pt", model, None, None, None, 3, {"x": 1}, sha="x")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    load_checkpoint(tmp_path / "c.pt", ToyModel())
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key|size mismatch"):
        load_checkpoint(tmp_path / "c.pt", ToyModel(width=4))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", model)

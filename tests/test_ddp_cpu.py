"""DDP on CPU (gloo, 2 processes): ranks end with identical weights; only rank 0 writes logs/checkpoints."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from test_train_engine import make_tiles, read_log, small_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2
DEADLINE_S = 150


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, ports: tuple[int, int], root: str) -> None:
    """One rank: a 2-epoch schedule run (phase 1 then phase 2), then a 1-epoch projection run."""
    from sdconet.data import TileDataset
    from sdconet.engine import train
    from test_train_engine import ToyModel

    torch.set_num_threads(1)
    base = Path(root)
    ds = TileDataset(base / "d" / "train.json", base / "d", train=True)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    for name, port, cfg in (
        ("sched", ports[0], small_cfg(epochs=2, routing="schedule", unfreeze_epoch=1, clip_grad=0.1)),
        ("proj", ports[1], small_cfg(epochs=1, routing="projection", unfreeze_epoch=0, accumulate=2)),
    ):
        os.environ["MASTER_PORT"] = str(port)
        torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
        model = ToyModel(dropout=0.0)
        torch.save(model.state_dict(), base / f"{name}_init{rank}.pt")
        train(model, ds, None, cfg, base / name, distributed=True)
        assert not dist.is_initialized()  # train() created the group, so it destroys it
        torch.save(model.state_dict(), base / f"{name}_rank{rank}.pt")


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed gloo unavailable")
def test_ddp_two_cpu_ranks_stay_identical(tmp_path: Path) -> None:
    make_tiles(tmp_path / "d", n=8)
    ctx = mp.spawn(_worker, args=((_free_port(), _free_port()), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP workers did not finish within {DEADLINE_S} s")
    for name in ("sched", "proj"):
        r0 = torch.load(tmp_path / f"{name}_rank0.pt")
        r1 = torch.load(tmp_path / f"{name}_rank1.pt")
        init0 = torch.load(tmp_path / f"{name}_init0.pt")
        init1 = torch.load(tmp_path / f"{name}_init1.pt")
        assert not torch.equal(init0["backbone.0.weight"], init1["backbone.0.weight"])
        for k in r0:
            assert torch.equal(r0[k], r1[k]), f"{name}: parameter {k} differs between ranks"
        assert not torch.equal(r0["backbone.0.weight"], init0["backbone.0.weight"])
        logs = read_log(tmp_path / name)
        assert [r["images"] for r in logs] == [8] * len(logs)  # both shards counted, one line per epoch
        assert (tmp_path / name / "last.pt").is_file()
    sched = read_log(tmp_path / "sched")
    assert "loss_sr" not in sched[0]["losses"] and "loss_sr" in sched[1]["losses"]
    e0 = torch.load(tmp_path / "sched" / "epoch_000.pt", weights_only=False)["model"]
    init0 = torch.load(tmp_path / "sched_init0.pt")
    assert torch.equal(e0["sr_head.0.weight"], init0["sr_head.0.weight"])  # frozen in phase 1 on every rank
    assert read_log(tmp_path / "proj")[0]["projection"]["micro_batches"] == 4

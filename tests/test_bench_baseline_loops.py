"""benchmarks/bench_baseline_loops.py runs both loops end to end (tiny presets), images/s per log interval."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")


def test_baseline_loops_bench_measures_every_loop_and_interval(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_baseline_loops as b

    out = tmp_path / "loops.json"
    assert b.main(["--preset", "tiny", "--sr", "edsr", "--sr-iters", "8", "--sr-batch", "2", "--patch", "32",
                   "--frcnn-steps", "5", "--frcnn-batch", "1", "--tile", "96", "--log-every", "1", "2",
                   "--warmup", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["loop"], r["log_every"]) for r in rows] == [("sr edsr", 1), ("frcnn", 1), ("sr edsr", 2), ("frcnn", 2)]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert "| frcnn | 1 |" in capsys.readouterr().out
    del sys.modules["bench_baseline_loops"]


def test_images_per_s_leaves_the_warmup_out_and_needs_two_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from bench_baseline_loops import images_per_s

    log = tmp_path / "log.jsonl"
    rows = [{"iter": 5, "elapsed_s": 9.0}, {"iter": 10, "elapsed_s": 10.0}, {"iter": 20, "elapsed_s": 12.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert images_per_s(log, "iter", 4, warmup=10) == pytest.approx(10 * 4 / 2.0)
    with pytest.raises(ValueError, match="no log line after step 20"):
        images_per_s(log, "iter", 4, warmup=20)

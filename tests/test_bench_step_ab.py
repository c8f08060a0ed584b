"""benchmarks/bench_step_ab.py alternates which checkout runs first (a position bias was measured) and prints the
per-round paired ratios of phase 2 against the first checkout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def test_rounds_alternate_the_order_and_ratios_are_paired(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_step_ab

    a, b = tmp_path / "a", tmp_path / "b"
    order, phase2 = [], {str(a.resolve()): [4.0, 3.0], str(b.resolve()): [3.2, 3.3]}

    def fake_run(cmd, **kwargs):
        checkout = cmd[3]
        order.append(Path(checkout).name)
        row = {"checkout": checkout, "phase1_s": 1.0, "phase2_s": phase2[checkout].pop(0), "infer_s": 0.5}
        return SimpleNamespace(stdout=json.dumps(row) + "\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(bench_step_ab.time, "sleep", lambda s: None)
    assert bench_step_ab.main([str(a), str(b), "--rounds", "2"]) == 0
    assert order == ["a", "b", "b", "a"]
    out = capsys.readouterr().out
    assert "phase 2 / first checkout's per round: 0.80, 1.10 (median x0.95)" in out
    del sys.modules["bench_step_ab"]

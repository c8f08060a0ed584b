"""benchmarks/bench_step_parts.py runs end to end (tiny preset, 64 px) and its memory figures are consistent."""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_step_parts_prints_every_stage_and_the_saved_memory(monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_step_parts

    assert bench_step_parts.main(["--preset", "tiny", "--hr-size", "64", "--runs", "1", "--head-layouts",
                                  "--saved-memory"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for stage in ("backbone", "neck", "sr_decoder", "detector", "whole_model"):
        assert rows[f"{stage}_s"] > 0
    assert len(rows["sr_head_channels_last_s"]) == len(rows["sr_head_nchw_s"]) == 2
    # the SR branch's activations come on top of the detector's; the weights' four copies are what they are
    assert rows["saved_for_backward_sr_on_gib"] > rows["saved_for_backward_sr_frozen_gib"] > 0
    from bench_sdconet import build

    weights = sum(p.numel() * p.element_size() for p in build("sdconet", "tiny", 10, 2).parameters())
    assert abs(rows["params_grads_adamw_moments_gib"] - 4 * weights / 2 ** 30) < 1e-3
    del sys.modules["bench_step_parts"]

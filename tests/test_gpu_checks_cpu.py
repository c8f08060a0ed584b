"""benchmarks/gpu_checks.py, the prepared GPU script of issue 13, runs end to end on the CPU (tiny preset, 64 px): every
measurement row it promises is there, without errors, so a lent GPU's minutes are not lost to a script bug."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_checks_runs_every_row_on_cpu(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_checks

    out = tmp_path / "rows.json"
    assert gpu_checks.main(["--device", "cpu", "--preset", "tiny", "--hr-size", "64", "--models", "sdconet",
                            "--train-batches", "1", "2", "--infer-batches", "1", "2", "--dtypes", "fp32", "bf16",
                            "--steps", "1", "--runs", "1", "--warmup", "0",
                            "--variants", "channels_last", "no_cudnn_benchmark", "deterministic", "cuda_graph", "--json",
                            str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert not [r for r in rows if "error" in r], [r for r in rows if "error" in r]
    train = {(r["variant"], r["dtype"], r["batch"], r["sr_on"]) for r in rows if r["kind"] == "train"}
    assert {("eager", d, b, sr) for d in ("fp32", "bf16") for b in (1, 2) for sr in (False, True)} <= train
    assert {(v, d, b, True) for v in ("channels_last", "no_cudnn_benchmark", "deterministic") for d in ("fp32", "bf16")
            for b in (1, 2)} <= train
    infer = {(r["variant"], r["dtype"], r["batch"]) for r in rows if r["kind"] == "infer"}
    assert {(v, d, b) for v in ("eager", "channels_last") for d in ("fp32", "bf16") for b in (1, 2)} <= infer
    assert all(r["finite"] and r["images_per_s"] > 0 for r in rows if r["kind"] == "train")
    assert "sync_census" not in {r["kind"] for r in rows}  # CUDA only
    assert "cuda_graph" not in {r["variant"] for r in rows}  # CUDA only: skipped with a note
    del sys.modules["gpu_checks"]


def test_gpu_checks_compile_train_variant_wires_the_static_parts(tmp_path, monkeypatch):
    """compile_train's rows run with the Swin encoder, neck and SR decoder compiled (the aot_eager backend here: the
    wiring, not inductor's code generation), and the model is eager again afterwards."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_checks

    seen = []
    real = gpu_checks.train_speed

    def spy(model, *args, **kwargs):
        seen.append({n: getattr(model, n)._compiled_call_impl is not None for n in gpu_checks.STATIC_PARTS})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(gpu_checks, "train_speed", spy)
    out = tmp_path / "rows.json"
    assert gpu_checks.main(["--device", "cpu", "--preset", "tiny", "--hr-size", "64", "--models", "sdconet",
                            "--train-batches", "2", "--infer-batches", "1", "--dtypes", "fp32", "--steps", "1",
                            "--runs", "1", "--warmup", "0", "--variants", "compile_train",
                            "--compile-backend", "aot_eager", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert not [r for r in rows if "error" in r], [r for r in rows if "error" in r]
    ct = [r for r in rows if r["variant"] == "compile_train"]
    assert [(r["kind"], r["batch"], r["sr_on"]) for r in ct] == [("train", 2, True)] and ct[0]["finite"]
    assert seen == [{n: False for n in gpu_checks.STATIC_PARTS}] * 2 + [{n: True for n in gpu_checks.STATIC_PARTS}]
    del sys.modules["gpu_checks"]

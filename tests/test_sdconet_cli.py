"""``python -m sdconet``: summary JSON, and train -> evaluate on a tiny generated demo data folder (CPU, seconds)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdconet.cli import main
from benchcore.metrics.results import read_metrics

TINY = "config/sdconet/tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """results/data/demo-like folder: coco.json, tiles/ (128 px), partition/{train,val,test}.json, bicubic_x2/lr."""
    from data_prep.convert import convert_dataset
    from data_prep.degrade import degrade_folder
    from data_prep.demo import generate_demo
    from data_prep.partition import partition_tiles
    from data_prep.split import split_dataset

    root = tmp_path_factory.mktemp("cli_demo")
    raw, data = root / "raw", root / "data" / "demo"
    data.mkdir(parents=True)
    generate_demo(raw, n_images=4, size=256, seed=1)
    convert_dataset("demo", raw, data / "coco.json")
    split_dataset(data / "coco.json", raw, data / "tiles", tile=128, gap=0, workers=1, progress=False)
    partition_tiles(data / "tiles" / "annotations.json", data / "partition",
                    ratios={"train": 0.5, "val": 0.25, "test": 0.25})
    degrade_folder(data / "tiles" / "images", data / "bicubic_x2" / "lr", scale=2)
    return data


def _run(argv: list[str], capsys) -> dict:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    return json.loads(out)


def test_summary_subprocess_prints_json(repo_root: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "sdconet", "summary", "--preset", "tiny", "--num-classes", "5",
                        "--scale", "2"],
                       cwd=repo_root, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["model"] == "SDCoNet" and doc["config"]["num_classes"] == 5
    assert doc["totals"]["total"] == sum(doc["components"].values()) > 0
    assert set(doc["millions"]) >= {"encoder", "sr_decoder", "total", "inference_path", "training_only"}


def test_summary_paper_method_variant(capsys) -> None:
    doc = _run(["summary", "--preset", "paper", "--scale", "2", "--method", "sdconet_no_sr"], capsys)
    assert doc["method"] == "sdconet_no_sr" and abs(doc["millions"]["total"] - 49.638) < 0.001


def test_train_resume_and_evaluate(demo_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    base = ["train", "--config", TINY, "--data", str(demo_data), "--out", str(run), "--set", "train.unfreeze_epoch=0"]
    res = _run(base + ["--set", "train.epochs=1", "--seed", "3"], capsys)
    assert res["epochs_run"] == 1 and Path(res["last_checkpoint"]).is_file()
    log = [json.loads(x) for x in (run / "train" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and "loss_sr" in log[0]["losses"] and "loss_salience" in log[0]["losses"]
    assert "detection" in log[0]["val"]
    spec = json.loads((run / "train" / "run_spec.json").read_text())
    model, train = spec["settings"]["model"], spec["settings"]["train"]
    assert model["num_classes"] == 4 and train["epochs"] == 1 and train["seed"] == 3
    assert model["lr"] == {**model["lr"], "scale": 2, "on_the_fly": True}
    assert spec["degradation"]["name"] == "bicubic_x2" and spec["method"]["id"] == "sdconet"
    res = _run(base + ["--set", "train.epochs=2", "--seed", "3", "--resume"], capsys)
    assert res["epochs_run"] == 1 and len((run / "train" / "train_log.jsonl").read_text().splitlines()) == 2

    res = _run(["evaluate", "--run", str(run), "--bootstrap", "5"], capsys)
    out = run / "metrics.json"
    doc = read_metrics(out)
    assert (doc["method"], doc["dataset"], doc["degradation"], doc["seed"]) == ("sdconet", "demo", "bicubic_x2", 3)
    for key in ("AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l", "AR100", "per_class"):
        assert key in doc["detection"]
    assert doc["sr"]["psnr"] > 0 and 0 < doc["sr"]["ssim"] <= 1
    assert doc["efficiency"]["params"] > 0 and doc["extra"]["epoch"] == 1 and doc["extra"]["split"] == "test"
    assert {"git_sha", "config_hash", "config", "device"} <= set(doc["provenance"])
    recorded = doc["provenance"]["config"]
    assert recorded["spec"]["settings"]["train"]["epochs"] == 2 and recorded["spec_hash"]
    assert set(doc["extra"]["bootstrap"]) == {"AP", "AP_s"}
    dets = json.loads((out.parent / "detections.json").read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
    assert res["detection"]["AP"] == doc["detection"]["AP"]

    again = _run(["train", "--spec", str(run / "train" / "run_spec.json"), "--resume"], capsys)  # the spec alone
    assert again["epochs_run"] == 0


def test_offline_lr_dir_with_method(demo_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run_lr"
    _run(["train", "--config", TINY, "--data", str(demo_data), "--out", str(run), "--method", "sdconet_no_saliency",
          "--lr-dir", str(demo_data / "bicubic_x2" / "lr"), "--set", "train.epochs=1", "--set", "train.eval_every=0",
          "--set", "train.routing=none"], capsys)
    spec = json.loads((run / "train" / "run_spec.json").read_text())
    model, train = spec["settings"]["model"], spec["settings"]["train"]
    assert model["lr"]["on_the_fly"] is True  # the manifest says x2 torch-bicubic: the model makes it itself
    assert model["use_saliency"] is False and spec["method"]["id"] == "sdconet_no_saliency"
    assert train["routing"] == "none"
    log = json.loads((run / "train" / "train_log.jsonl").read_text().splitlines()[0])
    assert "loss_sr" in log["losses"] and "loss_salience" not in log["losses"]
    out = tmp_path / "m" / "metrics.json"
    _run(["evaluate", "--run", str(run), "--out", str(out), "--split", "val"], capsys)
    doc = read_metrics(out)
    assert doc["method"] == "sdconet_no_saliency" and doc["degradation"] == "bicubic_x2"
    assert doc["sr"] is not None and doc["extra"]["split"] == "val"


@pytest.mark.parametrize("scale", [3, 4])
def test_x3_x4_offline_lr_sets_the_sr_upscale(demo_data: Path, tmp_path: Path, scale: int, capsys) -> None:
    """A x3 / x4 LR folder (128 px tiles: mod-crop to 126 at x3) trains with the SR head at that scale and the SR
    output at the mod-cropped HR size, no resize."""
    from data_prep.degrade import degrade_folder

    lr = tmp_path / f"matlab_x{scale}" / "lr"
    degrade_folder(demo_data / "tiles" / "images", lr, scale=scale, kernel="matlab-bicubic")
    run = tmp_path / f"run_x{scale}"
    _run(["train", "--config", TINY, "--data", str(demo_data), "--out", str(run), "--lr-dir", str(lr),
          "--set", "train.epochs=1", "--set", "train.eval_every=0", "--set", "train.unfreeze_epoch=0"], capsys)
    spec = json.loads((run / "train" / "run_spec.json").read_text())
    assert spec["degradation"]["scale"] == scale == spec["settings"]["model"]["lr"]["scale"]
    assert spec["settings"]["model"]["lr"]["on_the_fly"] is False and spec["paths"]["lr"] == str(lr)
    from sdconet.models.build import build_model
    from sdconet.models.config import from_dict

    model = build_model(from_dict(spec["settings"]["model"]))
    assert model.sr_decoder.upscale == scale
    doc = _run(["evaluate", "--run", str(run), "--protocol", "mmdet"], capsys)
    assert doc["sr"]["psnr"] > 0
    assert read_metrics(run / "metrics.json")["detection"]["protocol"] == "mmdet"


def test_usage_errors_name_the_problem(demo_data: Path, tmp_path: Path, capsys) -> None:
    args = ["train", "--config", TINY, "--data", str(demo_data), "--out", str(tmp_path / "x")]
    assert main(args + ["--set", "model.swin.bogus=1"]) == 2
    assert "swin.bogus" in capsys.readouterr().err
    assert main(args + ["--method", "frcnn_hr"]) == 2
    assert "frcnn_hr" in capsys.readouterr().err
    assert main(["train", "--config", TINY, "--data", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "partition" in capsys.readouterr().err
    assert main(args + ["--set", "model.lr.scale=3"]) == 2
    assert "model.lr.scale" in (err := capsys.readouterr().err) and "degradation" in err
    assert main(args + ["--set", "train.seed=3"]) == 2
    assert "train.seed" in capsys.readouterr().err


def test_evaluate_under_mixed_precision_and_the_precision_ap_check(demo_data: Path, tmp_path: Path, capsys,
                                                                    monkeypatch) -> None:
    """``evaluate --precision bf16`` runs under CPU autocast and records it; benchmarks/precision_ap.py compares
    precisions of one checkpoint against fp32 with fp32's bootstrap interval as the noise."""
    run = tmp_path / "run"
    _run(["train", "--config", TINY, "--data", str(demo_data), "--out", str(run), "--set", "train.epochs=1",
          "--set", "train.unfreeze_epoch=0"], capsys)
    res = _run(["evaluate", "--run", str(run), "--precision", "bf16", "--out", str(tmp_path / "bf16.json")], capsys)
    doc = read_metrics(tmp_path / "bf16.json")
    assert doc["extra"]["precision"] == "bf16" and res["detection"]["AP"] == doc["detection"]["AP"]
    assert doc["sr"]["psnr"] > 0
    assert main(["evaluate", "--run", str(run), "--precision", "fp8"]) == 2
    assert "--precision 'fp8': expected one of fp32, fp16, bf16" in capsys.readouterr().err

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import precision_ap

    assert precision_ap.main(["--run", str(run), "--precisions", "fp32", "bf16", "--device", "cpu",
                              "--bootstrap", "5", "--out", str(tmp_path / "pap")]) == 0
    out = json.loads((tmp_path / "pap" / "precision_ap.json").read_text())
    assert set(out["rows"]) == {"fp32", "bf16"} and out["rows"]["bf16"]["AP"] == pytest.approx(doc["detection"]["AP"])
    cmp = out["vs_fp32"]["bf16"]
    assert cmp["delta"]["AP"] == pytest.approx(out["rows"]["bf16"]["AP"] - out["rows"]["fp32"]["AP"])
    assert set(cmp["noise"]) == {"AP", "AP_s"} and isinstance(cmp["within_noise"], bool)
    assert not (run / "metrics.json").exists()  # the run's own metrics are not touched
    assert "| bf16 |" in capsys.readouterr().out
    del sys.modules["precision_ap"]


def test_precision_compare_marks_differences_beyond_the_bootstrap_half_width() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "precision_ap_t", Path(__file__).resolve().parents[1] / "benchmarks" / "precision_ap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = {"fp32": {"AP": 0.40, "AP50": 0.7, "AP_s": 0.20}, "bf16": {"AP": 0.39, "AP50": 0.7, "AP_s": 0.21},
            "fp16": {"AP": 0.30, "AP50": 0.6, "AP_s": 0.20}}
    cmp = mod.compare(rows, {"AP": [0.36, 0.44], "AP_s": [0.15, 0.25]})
    assert cmp["bf16"]["within_noise"] and not cmp["fp16"]["within_noise"]
    assert cmp["fp16"]["delta"]["AP"] == pytest.approx(-0.10) and "fp32" not in cmp
    assert "within_noise" not in mod.compare(rows, None)["bf16"]

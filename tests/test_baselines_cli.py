"""``python -m baselines``: sr-train / sr-infer / det-train / det-eval on a tiny demo dataset built with data_prep
(4 synthetic 256 px scenes -> 16 tiles of 128 px, x2 LR = 64 px), tiny presets, a few iterations / one epoch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from baselines.cli import main
from baselines.config import ConfigError, SRTrainConfig
from baselines.pipeline import read_config, section
from benchcore.metrics.results import read_metrics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
REPO = Path(__file__).resolve().parents[1]
TILE = 128


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo -> convert -> split (128) -> partition -> degrade (x2) -> BasicSR pairs."""
    from data_prep.convert import convert_dataset
    from data_prep.degrade import degrade_folder
    from data_prep.demo import generate_demo
    from data_prep.export import export_basicsr_pairs
    from data_prep.partition import partition_tiles
    from data_prep.split import split_dataset

    root = tmp_path_factory.mktemp("baselines_cli")
    generate_demo(root / "demo", n_images=4, size=256, seed=0, min_obj=8, max_obj=32)
    convert_dataset("demo", root / "demo", root / "demo.json")
    split_dataset(root / "demo.json", root / "demo", root / "tiles", tile=TILE, gap=0, workers=1, progress=False)
    partition_tiles(root / "tiles" / "annotations.json", root / "part", ratios={"train": 0.5, "val": 0.25, "test": 0.25})
    degrade_folder(root / "tiles" / "images", root / "lr", scale=2)
    parts = {p: root / "part" / f"{p}.json" for p in ("train", "val", "test")}
    export_basicsr_pairs(parts, root / "tiles" / "images", root / "lr", root / "pairs")
    return root


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, dict | None, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


@pytest.fixture(scope="module")
def sr_run(data: Path) -> Path:
    """EDSR (tiny) trained for 4 iterations, then run over every LR tile (scored against HR)."""
    sets = ["--set", "preset=tiny", "--set", "iters=4", "--set", "batch_size=2", "--set", "lr_patch_size=16",
            "--set", "sr.checkpoint_every=2", "--set", "log_every=2"]
    assert main(["sr-train", "--model", "edsr", "--pairs", str(data / "pairs"), "--out", str(data / "edsr"),
                 *sets]) == 0
    assert main(["sr-infer", "--checkpoint", str(data / "edsr" / "model.pth"), "--lr", str(data / "lr"),
                 "--hr", str(data / "tiles" / "images"), "--out", str(data / "sr")]) == 0
    return data / "sr"


def test_sr_train_resume_and_infer(data: Path, sr_run: Path, capsys: pytest.CaptureFixture) -> None:
    log = [json.loads(x) for x in (data / "edsr" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [2, 4]
    rc, res, _ = _run(["sr-train", "--model", "edsr", "--pairs", str(data / "pairs"), "--out", str(data / "edsr"),
                       "--set", "preset=tiny", "--set", "iters=6", "--set", "batch_size=2", "--set", "lr_patch_size=16",
                       "--set", "checkpoint_every=2", "--set", "log_every=2", "--resume"], capsys)
    assert rc == 0 and res["resumed_from"] == 4 and res["iterations"] == 6
    doc = json.loads((sr_run / "sr_metrics.json").read_text())
    assert doc["n"] == 16 and doc["method"] == "edsr" and np.isfinite(doc["psnr"]) and 0 < doc["ssim"] <= 1
    with Image.open(next(sr_run.glob("*.png"))) as im:
        assert im.size == (TILE, TILE)  # 64 px LR x2
    rc, res, _ = _run(["sr-infer", "--interp", "bicubic", "--lr", str(data / "lr"), "--hr",
                       str(data / "tiles" / "images"), "--out", str(data / "bicubic")], capsys)
    assert rc == 0 and res["method"] == "bicubic" and res["psnr"] > 20 and "per_tile" not in res
    rc, _, err = _run(["sr-infer", "--checkpoint", str(data / "edsr" / "model.pth"), "--scale", "4", "--lr",
                       str(data / "lr"), "--out", str(data / "bad")], capsys)
    assert rc == 2 and err.startswith("error:") and "scale 4" in err


def test_frcnn_on_sr_and_lr_maps_boxes_to_hr_and_reports_sr(data: Path, sr_run: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    rc, res, _ = _run(["det-train", "--detector", "frcnn", "--images", str(sr_run), "--partition", str(data / "part"),
                       "--out", str(data / "frcnn"), "--set", "preset=tiny", "--set", "epochs=1",
                       "--set", "frcnn.batch_size=4", "--set", "warmup_iters=2", "--set", "amp=false"], capsys)
    assert rc == 0 and res["tile_size"] == TILE and Path(res["weights"]).is_file()
    out = data / "results" / "demo" / "bicubic_x2" / "frcnn_edsr" / "seed0" / "metrics.json"
    common = ["--detector", "frcnn", "--weights", res["weights"], "--partition", str(data / "part"),
              "--dataset", "demo", "--degradation", "bicubic_x2", "--seed", "0", "--set", "preset=tiny"]
    rc, _, _ = _run(["det-eval", *common, "--images", str(sr_run), "--out", str(out), "--method", "frcnn_edsr",
                     "--sr-metrics", str(sr_run / "sr_metrics.json")], capsys)
    assert rc == 0
    doc = read_metrics(out)
    assert doc["method"] == "frcnn_edsr" and doc["extra"]["scale_to_hr"] == 1 and doc["extra"]["images"] == 4
    per_tile = json.loads((sr_run / "sr_metrics.json").read_text())["per_tile"]
    test = {Path(im["file_name"]).name for im in json.loads((data / "part" / "test.json").read_text())["images"]}
    psnr_test = np.mean([r["psnr"] for r in per_tile if r["name"] in test])
    assert doc["sr"]["n"] == 4 and doc["sr"]["tiles"] == "test" and doc["sr"]["psnr"] == pytest.approx(psnr_test)
    assert (out.parent / "detections.json").is_file()
    # The same detector fed the 64 px LR tiles: boxes come back on the 128 px HR grid, no SR block.
    lr_out = data / "results" / "demo" / "bicubic_x2" / "frcnn_lr" / "seed0" / "metrics.json"
    rc, _, _ = _run(["det-eval", *common, "--images", str(data / "lr"), "--out", str(lr_out), "--method", "frcnn_lr"],
                    capsys)
    assert rc == 0
    doc = read_metrics(lr_out)
    assert doc["sr"] is None and doc["extra"]["scale_to_hr"] == 2 and doc["extra"]["input_side"] == TILE // 2
    dets = json.loads((lr_out.parent / "detections.json").read_text())
    assert dets and all(0 <= d["bbox"][0] and d["bbox"][0] + d["bbox"][2] <= TILE + 1e-6 for d in dets)
    assert max(d["bbox"][0] + d["bbox"][2] for d in dets) > TILE // 2  # mapped, not left on the LR grid


def test_yolo_on_lr_exports_trains_at_native_size_and_evaluates(data: Path, capsys: pytest.CaptureFixture) -> None:
    out = data / "yolo"
    rc, res, _ = _run(["det-train", "--detector", "yolov8n", "--images", str(data / "lr"), "--partition",
                       str(data / "part"), "--out", str(out), "--set", "epochs=1", "--set", "batch=4",
                       "--set", "val=false"], capsys)
    assert rc == 0 and res["imgsz"] == TILE // 2 and Path(res["weights"]).is_relative_to(out / "train" / "weights")
    assert (out / "export" / "data.yaml").is_file() and (out / "export" / "labels" / "test").is_dir()
    metrics = data / "results" / "demo" / "bicubic_x2" / "yolov8n_lr" / "seed0" / "metrics.json"
    rc, _, _ = _run(["det-eval", "--detector", "yolov8n", "--weights", res["weights"], "--images", str(data / "lr"),
                     "--partition", str(data / "part"), "--out", str(metrics), "--method", "yolov8n_lr",
                     "--dataset", "demo", "--degradation", "bicubic_x2", "--seed", "0"], capsys)
    assert rc == 0
    doc = read_metrics(metrics)
    assert doc["extra"]["scale_to_hr"] == 2 and doc["provenance"]["config"]["detector"] == "yolov8n"
    dets = json.loads((metrics.parent / "detections.json").read_text())
    assert all(d["bbox"][0] + d["bbox"][2] <= TILE + 1e-6 and d["bbox"][1] + d["bbox"][3] <= TILE + 1e-6 for d in dets)


def test_config_errors_name_the_key(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["det-train", "--detector", "frcnn", "--images", str(data / "lr"), "--partition", str(data / "part"),
            "--out", str(tmp_path / "x")]
    rc, _, err = _run([*base, "--set", "frcnn.bogus_key=1"], capsys)
    assert rc == 2 and err.startswith("error:") and "'bogus_key'" in err and "FrcnnConfig" in err
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("frcnn:\n  epochs: 1\n  learning_rate: 0.1\n")
    rc, _, err = _run([*base, "--config", str(cfg)], capsys)
    assert rc == 2 and "'learning_rate'" in err and str(cfg) in err
    cfg.write_text("detector:\n  epochs: 1\n")
    rc, _, err = _run([*base, "--config", str(cfg)], capsys)
    assert rc == 2 and "unknown section 'detector'" in err
    rc, _, err = _run(["det-train", "--detector", "yolov8n", "--images", str(data / "lr"), "--partition",
                       str(data / "part"), "--out", str(tmp_path / "y"), "--set", "model=yolov8s.yaml"], capsys)
    assert rc == 2 and "contradicts --detector yolov8n" in err
    rc, _, err = _run([*base[:5], "--partition", str(tmp_path), "--out", str(tmp_path / "z")], capsys)
    assert rc == 2 and "train.json" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):  # --checkpoint and --interp are exclusive
        main(["sr-infer", "--checkpoint", "a.pth", "--interp", "bicubic", "--lr", "x", "--out", "y"])


def test_shipped_configs_validate_and_merge_per_model_sr_sections() -> None:
    demo = read_config(REPO / "config" / "baselines" / "smoke.yaml")
    assert demo["sr"]["preset"] == "tiny" and demo["frcnn"]["preset"] == "tiny"
    paper = read_config(REPO / "config" / "baselines" / "paper.yaml")
    cfgs = {m: SRTrainConfig.from_dict({**section(paper, "sr", m), "model_name": m}) for m in ("edsr", "rrdb", "swinir")}
    assert (cfgs["edsr"].lr, cfgs["rrdb"].lr_patch_size, cfgs["swinir"].batch_size) == (1e-4, 64, 32)
    assert all(c.preset == "paper" and c.scale is None for c in cfgs.values())  # the run sets the scale
    over = read_config(REPO / "config" / "baselines" / "paper.yaml", {"sr": {"iters": 7}, "sr_rrdb": {"iters": 9}})
    assert (section(over, "sr", "edsr")["iters"], section(over, "sr", "rrdb")["iters"]) == (7, 9)
    with pytest.raises(ConfigError, match="iterations"):
        read_config(None, {"sr_edsr": {"iterations": 3}})


def test_module_entry_point_reports_errors_with_status_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "baselines", "det-eval", "--detector", "frcnn", "--weights",
                           str(tmp_path / "missing.pt"), "--images", str(tmp_path), "--partition", str(tmp_path),
                           "--out", str(tmp_path / "m.json"), "--method", "frcnn_hr", "--dataset", "demo",
                           "--degradation", "bicubic_x2", "--seed", "0"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "test.json" in proc.stderr

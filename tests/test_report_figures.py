"""Report figures and the whole HTML report on synthetic result files (no published number appears)."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compare.report import figures as F
from compare.report.__main__ import main as cli_main
from compare.report.collect import collect_efficiency, collect_runs
from benchcore.experiments import load_experiments, select
from compare.report.html import build_report
from test_report_tables import CONFIG, METHODS, SHEET, make_results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = make_results(tmp_path_factory.mktemp("results"))
    _add_images(root)
    return root


@pytest.fixture(scope="module")
def frames(results) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return collect_runs(results), collect_efficiency(results), select(load_experiments(SHEET), methods=METHODS)


def _png(path: Path, size: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _add_images(root: Path) -> None:
    """Two 64 px test tiles (HR), their 32 px LR copies, a GT json and sdconet seed-0 detections."""
    data = root / "data" / "demo"
    images = [{"id": i, "file_name": f"images/t{i}.png", "width": 64, "height": 64} for i in (1, 2)]
    for im in images:
        _png(data / "tiles" / im["file_name"], 64, im["id"])
        _png(data / "bicubic_x2" / "lr" / Path(im["file_name"]).name, 32, 10 + im["id"])
    gt = {"images": images, "categories": [{"id": 1, "name": "airplane"}, {"id": 2, "name": "ship"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20]},
                          {"id": 2, "image_id": 2, "category_id": 2, "bbox": [30, 30, 10, 12]}]}
    (data / "partition").mkdir(parents=True)
    (data / "partition" / "test.json").write_text(json.dumps(gt))
    dets = [{"image_id": 1, "category_id": 1, "bbox": [6, 6, 19, 20], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.1}]
    (root / "demo" / "bicubic_x2" / "sdconet" / "seed0" / "detections.json").write_text(json.dumps(dets))


def _is_png(path: Path | None) -> bool:
    return path is not None and path.is_file() and path.stat().st_size > 1024 and \
        path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_render(frames, tmp_path):
    runs, eff, exps = frames
    kw = {"dataset": "demo", "degradation": "bicubic_x2", "experiments": exps}
    assert _is_png(F.ap_bar(runs, tmp_path / "bar.png", **kw))
    assert _is_png(F.accuracy_vs_cost(runs, eff, tmp_path / "gmac.png", x="gmac", **kw))
    assert _is_png(F.accuracy_vs_cost(runs, eff, tmp_path / "lat.png", x="latency", **kw))
    assert _is_png(F.per_class_bars(runs, tmp_path / "pc.png", **kw))
    assert _is_png(F.degradation_curves(runs, tmp_path / "deg.png", dataset="demo", experiments=exps,
                                        degradations=F.severity_order(CONFIG["degradations"])))
    with pytest.raises(ValueError, match="x must be"):
        F.accuracy_vs_cost(runs, eff, tmp_path / "x.png", x="fps", **kw)


def test_figures_empty_input_write_nothing(frames, tmp_path):
    runs, eff, exps = frames
    empty = runs.iloc[0:0]
    kw = {"dataset": "demo", "degradation": "bicubic_x2", "experiments": exps}
    assert F.ap_bar(empty, tmp_path / "a.png", **kw) is None
    assert F.accuracy_vs_cost(runs, eff.iloc[0:0], tmp_path / "b.png", **kw) is None
    assert F.per_class_bars(runs, tmp_path / "c.png", dataset="other", degradation="bicubic_x2") is None
    assert F.degradation_curves(empty, tmp_path / "d.png", dataset="demo") is None
    assert F.qualitative_grid([], tmp_path / "e.png") is None
    assert list(tmp_path.iterdir()) == []


def test_severity_order():
    degs = {"noisy": {"scale": 2, "noise": 10.0}, "x4": {"scale": 4}, "x2": {"scale": 2},
            "jpeg": {"scale": 2, "jpeg": 30}}
    assert F.severity_order(degs) == ["x2", "jpeg", "noisy", "x4"]


def test_qualitative_grid(tmp_path):
    items = [{"lr": _png(tmp_path / "lr.png", 16, 0), "sr": _png(tmp_path / "sr.png", 32, 1),
              "hr": _png(tmp_path / "hr.png", 32, 2), "gt": [[2, 2, 10, 10, 1]],
              "pred": [[3, 3, 9, 9, 1, 0.8], [20, 20, 5, 5, 2, 0.1]]},
             {"lr": tmp_path / "lr.png", "sr": None, "hr": tmp_path / "hr.png", "gt": [], "pred": []}]
    out = F.qualitative_grid(items, tmp_path / "out" / "grid.png", score_thr=0.3, class_names={1: "plane"})
    assert _is_png(out) and out == tmp_path / "out" / "grid.png"


def test_build_report(results, tmp_path):
    ref = tmp_path / "ref.yaml"
    ref.write_text("demo:\n  sdconet: {degradation: bicubic_x2, AP: 39.5}\n")
    out = tmp_path / "report"
    index = build_report(results, CONFIG, SHEET, out, seeds=[0, 1], reference_path=ref, methods=METHODS)
    page = index.read_text()
    tables = sorted(p.stem for p in (out / "tables").glob("*.tex"))
    assert {"main_demo_bicubic_x2", "ablation_demo_bicubic_x4", "sr_demo_bicubic_x2", "perclass_demo_bicubic_x2",
            "degradation_demo", "efficiency", "reference"} <= set(tables)
    for stem in tables:
        assert (out / "tables" / f"{stem}.csv").is_file() and (out / "tables" / f"{stem}.md").is_file()
        caption = (out / "tables" / f"{stem}.md").read_text().splitlines()[0].strip("*")
        assert len(caption) > 10 and html.escape(caption) in page, stem
        assert re.search(r"\\caption\{.+\}", (out / "tables" / f"{stem}.tex").read_text()), stem
    assert page.count("<img") >= 10 and "data:image/png;base64," in page
    assert (out / "figures" / "qualitative_demo_bicubic_x2.png").is_file()
    assert "Not drawn" in page  # e.g. no detections.json for bicubic_x4
    assert "Missing runs (4)" in page and "frcnn_hr" in page
    assert "<details>" in page and "config_hash" in page
    assert (out / "tables" / "runs.csv").is_file() and len(pd.read_csv(out / "tables" / "missing_runs.csv")) == 4
    with pytest.raises(ValueError, match="would replace"):
        build_report(results, CONFIG, SHEET, results, seeds=[0])


def test_cli(results, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "rep"
    rc = cli_main(["--results", str(results), "--config", str(cfg), "--experiments", str(SHEET), "--out", str(out),
                   "--seeds", "0", "--methods", "sdconet", "yolov8n_bicubic"])
    assert rc == 0 and (out / "index.html").is_file()
    assert "12 collected run(s) left out" in (out / "index.html").read_text()
    assert cli_main(["--results", str(results), "--config", str(cfg), "--experiments", str(SHEET), "--out",
                     str(out), "--methods", "nope"]) == 1

"""The weights stage (benchcore.weights, workflow/rules/weights.smk): catalogue, init declarations recorded by the
run specs, staging (copy / download, sha256 check, manifest), and the workflow's dry-run vs real-run behaviour
without the files. Nothing here touches the network: downloads and URL probes are replaced by local stand-ins."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchcore import weights as W

REPO = Path(__file__).resolve().parents[1]
DEG = {"name": "bicubic_x2", "scale": 2, "kernel": "torch-bicubic", "blur": 0.0, "noise": 0.0, "jpeg": None, "seed": 0}
PAPER_FILES = {"swin_tiny_patch4_window7_224.pth", "resnet50-0676ba61.pth", "yolov8n-cls.pt", "yolov8s-cls.pt"}


# ------------------------------------------------------------------------------------------------ catalogue
def test_catalogue_entries_are_consistent():
    for name, wf in W.CATALOGUE.items():  # url None: no stable direct link (BasicSR's Google Drive files), copy only
        assert wf.file == name and (wf.url is None or (wf.url.startswith("https://") and wf.url.endswith("/" + name)))
        assert wf.url or wf.hash_prefix, name  # a copy-only file is still checked against its published prefix
        assert wf.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", wf.sha256), name
        if wf.sha256 and wf.hash_prefix:
            assert wf.sha256.startswith(wf.hash_prefix), name
        if wf.hash_prefix:  # torch hub / BasicSR convention: the prefix is in the published file name
            assert f"-{wf.hash_prefix}." in name, name
        assert wf.sha256_note and wf.init in ("imagenet", "coco", "div2k")
    assert W.CATALOGUE["resnet50-0676ba61.pth"].sha256.startswith("0676ba61")
    for key in [("swin_t", "imagenet"), ("frcnn_r50_fpn", "imagenet"), ("yolov8n", "imagenet"),
                ("yolov8s", "imagenet"), ("frcnn_r50_fpn", "coco"), ("yolov8n", "coco"), ("yolov8s", "coco")]:
        assert key in W.INIT_FILES


def test_resolve_init_declarations(tmp_path):
    store = str(tmp_path / "w")
    assert W.resolve_init("swin_t", None, store)["init"] == "scratch"
    rec = W.resolve_init("swin_t", "imagenet", store)
    assert rec == {"network": "swin_t", "init": "imagenet", "weights": "swin_tiny_patch4_window7_224.pth",
                   "file": f"{store}/swin_tiny_patch4_window7_224.pth", "staged": True, "sha256": None,
                   "url": W.CATALOGUE["swin_tiny_patch4_window7_224.pth"].url}
    assert W.staged_files({"settings": {"init": rec}}) == ["swin_tiny_patch4_window7_224.pth"]
    user = W.resolve_init("frcnn_r50_fpn", "imagenet", store, file="/my/resnet50.pth")
    assert user["file"] == "/my/resnet50.pth" and not user["staged"]
    assert W.resolve_init("swin_t", "/x/swin.pth", store)["init"] == "file"
    assert W.resolve_init("swin_t", "timm", store)["init"] == "timm"
    with pytest.raises(W.WeightsError, match="unknown initialisation 'imagnet'"):
        W.resolve_init("swin_t", "imagnet", store)
    with pytest.raises(W.WeightsError, match="no published imagenet checkpoint for frcnn_tiny"):
        W.resolve_init("frcnn_tiny", "imagenet", store)
    with pytest.raises(W.WeightsError, match="'scratch' but a weights file"):
        W.resolve_init("yolov8n", "scratch", store, file="a.pt")
    with pytest.raises(W.WeightsError, match="Swin-T encoder only"):
        W.resolve_init("yolov8n", "timm", store)


def test_specs_record_the_init_of_every_method_kind(tmp_path):
    from baselines.spec import build_serial_spec
    from benchcore.experiments import load_experiments
    from sdconet.spec import build_spec

    rows = load_experiments(REPO / "config" / "experiments.tsv").set_index("id", drop=False)
    common = dict(results=str(tmp_path), dataset="d", degradation=DEG, seed=0)
    paper = build_spec(row=rows.loc["sdconet"].to_dict(), config_file=REPO / "config/sdconet/paper.yaml",
                       num_classes=3, **common)
    assert paper["settings"]["init"]["init"] == "imagenet"
    assert paper["settings"]["model"]["swin"]["pretrained"] == f"{tmp_path}/weights/swin_tiny_patch4_window7_224.pth"
    tiny = build_spec(row=rows.loc["sdconet"].to_dict(), config_file=REPO / "config/sdconet/tiny.yaml",
                      num_classes=3, **common)
    assert tiny["settings"]["init"]["init"] == "scratch" and tiny["settings"]["model"]["swin"]["pretrained"] is None
    want = {"frcnn_hr": "resnet50-0676ba61.pth", "yolov8n_lr": "yolov8n-cls.pt", "yolov8s_bicubic": "yolov8s-cls.pt"}
    for method, name in want.items():
        for cfg, init in (("paper", "imagenet"), ("demo", "scratch")):
            spec = build_serial_spec(row=rows.loc[method].to_dict(), config_file=REPO / f"config/baselines/{cfg}.yaml",
                                     **common)
            rec = spec["settings"]["init"]
            assert rec["init"] == init, (method, cfg)
            assert spec["settings"]["detector"]["weights"] == (f"{tmp_path}/weights/{name}" if init != "scratch"
                                                               else None)
    coco = build_serial_spec(row=rows.loc["frcnn_hr"].to_dict(), config_file=REPO / "config/baselines/paper.yaml",
                             sets={"frcnn.init": "coco"}, **common)
    assert coco["settings"]["init"]["weights"] == "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"


def test_report_states_the_init_and_marks_scratch_rows():
    import pandas as pd

    from compare.report.collect import run_init
    from compare.report.tables import SCRATCH_MARK, _init

    def cfg(init):
        return {"spec": {"settings": {"init": {"init": init}}}}

    assert run_init(cfg("imagenet")) == "imagenet" and run_init({"spec": {"settings": {}}}) == "unknown"
    assert run_init(None) == "unknown"
    assert _init(pd.DataFrame({"init": ["scratch", "scratch"]})) == f"scratch{SCRATCH_MARK}"
    assert _init(pd.DataFrame({"init": ["imagenet"]})) == "imagenet"
    assert _init(pd.DataFrame({"init": []})) == "–"


# ------------------------------------------------------------------------------------------------ staging
@pytest.fixture
def fake_catalogue(monkeypatch):
    """Three catalogue files made of local bytes: one with a full sha256, one with a prefix only, one with none."""
    blobs = {"full.pth": b"full weights", "prefixed-XXXX.pth": b"prefixed weights", "bare.pt": b"bare weights"}
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in blobs.items()}
    blobs[f"prefixed-{sha['prefixed-XXXX.pth'][:8]}.pth"] = blobs.pop("prefixed-XXXX.pth")
    pre = f"prefixed-{sha['prefixed-XXXX.pth'][:8]}.pth"
    entries = {
        "full.pth": W.WeightFile("full.pth", "https://example.invalid/full.pth", sha["full.pth"], None, "test",
                                 "torchvision-resnet50", "frcnn_r50_fpn", "imagenet", "test"),
        pre: W.WeightFile(pre, f"https://example.invalid/{pre}", None, sha["prefixed-XXXX.pth"][:8], "test",
                          "torchvision-fasterrcnn", "frcnn_r50_fpn", "coco", "test"),
        "bare.pt": W.WeightFile("bare.pt", "https://example.invalid/bare.pt", None, None, "test",
                                "ultralytics-classify", "yolov8n", "imagenet", "test"),
    }
    monkeypatch.setattr(W, "CATALOGUE", entries)
    return blobs, sha


def test_stage_copies_verifies_and_records_the_source(tmp_path, fake_catalogue):
    blobs, sha = fake_catalogue
    src = tmp_path / "mine"
    src.mkdir()
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    store = tmp_path / "results" / "weights"
    logs = []
    for name in blobs:
        doc = W.stage_file(name, store, source_dir=src, log=logs.append)
        assert (store / name).read_bytes() == blobs[name]
        man = json.loads(W.manifest_path(store, name).read_text())
        assert man == doc and man["source"] == {"kind": "copy", "from": str((src / name).resolve())}
        assert man["sha256"] == hashlib.sha256(blobs[name]).hexdigest() and man["bytes"] == len(blobs[name])
    checked = {n: json.loads(W.manifest_path(store, n).read_text())["checked_against"] for n in blobs}
    assert checked == {"full.pth": "sha256", next(n for n in blobs if n.startswith("prefixed")): "hash prefix",
                       "bare.pt": None}
    assert any("WARNING no published sha256" in line for line in logs)
    pinned = W.stage_file("bare.pt", tmp_path / "again", source_dir=src, log=logs.append,
                          pins={"bare.pt": sha["bare.pt"]})
    assert pinned["checked_against"] == "pinned sha256"


def test_stage_refuses_a_wrong_file_and_leaves_nothing_behind(tmp_path, fake_catalogue):
    blobs, _ = fake_catalogue
    src = tmp_path / "mine"
    src.mkdir()
    for name in blobs:
        (src / name).write_bytes(b"something else")
    store = tmp_path / "w"
    for name in blobs:
        if name == "bare.pt":
            continue  # nothing recorded to check against
        with pytest.raises(W.WeightsError, match="differs from the recorded sha256|does not start with"):
            W.stage_file(name, store, source_dir=src, log=lambda _: None)
        assert not (store / name).exists() and not W.manifest_path(store, name).exists()
    assert not list(store.glob(".*part"))
    with pytest.raises(W.WeightsError, match="differs from the recorded pinned sha256"):
        W.stage_file("bare.pt", store, source_dir=src, log=lambda _: None, pins={"bare.pt": "0" * 64})


def test_stage_downloads_only_when_allowed(tmp_path, fake_catalogue, monkeypatch):
    blobs, _ = fake_catalogue
    fetched = []

    def fake_download(url, dest, timeout=60.0):
        fetched.append(url)
        dest.write_bytes(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(W, "_download", fake_download)
    with pytest.raises(W.WeightsError, match="full.pth") as err:
        W.stage_file("full.pth", tmp_path / "w", source_dir=tmp_path / "empty", log=lambda _: None)
    assert "weights.allow_download is false" in str(err.value) and not fetched
    doc = W.stage_file("full.pth", tmp_path / "w", allow_download=True, log=lambda _: None)
    assert fetched == ["https://example.invalid/full.pth"]
    assert doc["source"] == {"kind": "download", "from": "https://example.invalid/full.pth"}


def test_unavailable_and_the_offline_message(tmp_path, fake_catalogue):
    blobs, _ = fake_catalogue
    names = sorted(blobs)
    src = tmp_path / "mine"
    src.mkdir()
    (src / "bare.pt").write_bytes(blobs["bare.pt"])
    assert W.unavailable(names, src, allow_download=False) == [n for n in names if n != "bare.pt"]
    # downloads allowed, but no network: every probe fails
    assert W.unavailable(names, None, allow_download=True, probe=lambda url: False) == names
    assert W.unavailable(names, None, allow_download=True, probe=lambda url: True) == []
    msg = W.missing_message(names, src, allow_download=True, used_by={"full.pth": {"frcnn_hr", "frcnn_lr"}})
    for name in names:
        assert f"  - {name}  (" in msg and f"https://example.invalid/{name}" in msg
    assert str(src) in msg and "could not be reached" in msg and "runs: frcnn_hr, frcnn_lr" in msg
    assert "init: scratch" in msg and "docs/weights.md" in msg


def test_pins_are_checked(monkeypatch):
    assert W.check_pins({"yolov8n-cls.pt": "A" * 64}) == {"yolov8n-cls.pt": "a" * 64}
    with pytest.raises(W.WeightsError, match="not a catalogue file"):
        W.check_pins({"yolov8x.pt": "a" * 64})
    with pytest.raises(W.WeightsError, match="not a sha256"):
        W.check_pins({"yolov8n-cls.pt": "abc"})
    with pytest.raises(W.WeightsError, match="contradicts the published sha256"):
        W.check_pins({"resnet50-0676ba61.pth": "0676ba61" + "0" * 56})
    with pytest.raises(W.WeightsError, match="contradicts the published hash prefix"):
        W.check_pins({"fasterrcnn_resnet50_fpn_coco-258fb6c6.pth": "0" * 64})


# ------------------------------------------------------------------------------------------------ workflow
def _paper_small(tmp_path: Path, **weights) -> Path:
    """config/paper.yaml cut to one dataset, the main degradation, one seed and no sweep (every method kept)."""
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg["datasets"] = {"nwpu": cfg["datasets"]["nwpu"]}
    cfg["degradations"] = {cfg["main_degradation"]: cfg["degradations"][cfg["main_degradation"]]}
    cfg["seeds"] = [0]
    cfg["sweep"] = {"degradations": [], "methods": []}
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["weights"] = {"dir": str(tmp_path / "no_weights_here"), "allow_download": False, **weights}
    path = tmp_path / "paper_small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _smk(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def _jobs(out: str, rule: str) -> list[str]:
    """The dry-run blocks of ``rule``'s jobs."""
    return [b for b in re.split(r"\n(?=rule |localrule )", out) if re.match(rf"(local)?rule {rule}:", b)]


def test_paper_dry_run_schedules_the_weights_stage_before_training(tmp_path):
    r = _smk(tmp_path, "-n", "--cores", "2", "all", "--configfile", str(_paper_small(tmp_path)))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]  # a dry run shows the DAG even though no file exists
    staged = {re.search(r"weights_file=(\S+)", b).group(1) for b in _jobs(out, "stage_weights")}
    assert staged == PAPER_FILES
    store = tmp_path / "results" / "weights"
    want = {"sdconet": "swin_tiny_patch4_window7_224.pth", "frcnn": "resnet50-0676ba61.pth",
            "yolov8n": "yolov8n-cls.pt", "yolov8s": "yolov8s-cls.pt"}
    blocks = _jobs(out, "train_sdconet") + _jobs(out, "train_detector")
    assert blocks
    for block in blocks:  # every training job waits for the stage's manifest of its file
        method = re.search(r"method=(\w+)", block).group(1)
        inputs = block.split("output:")[0]
        assert f"{store}/{want[method.split('_')[0]]}.json" in inputs, method


def test_demo_dry_run_needs_no_weights(tmp_path):
    r = _smk(tmp_path, "-n", "--cores", "2", "all", "--configfile", str(REPO / "config" / "config.yaml"),
             "--config", f"results_dir={tmp_path}/results")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "stage_weights" not in out


def test_paper_run_without_files_stops_before_the_first_job_naming_each_file(tmp_path):
    cfg = _paper_small(tmp_path)
    r = _smk(tmp_path, "--cores", "1", "all", "--configfile", str(cfg))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "4 pretrained file(s) needed by the configured runs are neither in weights.dir nor downloadable" in out
    for name in PAPER_FILES:
        assert f"  - {name}  (" in out and W.CATALOGUE[name].url in out
    assert str(tmp_path / "no_weights_here") in out
    assert "Finished job" not in out and not (tmp_path / "results").exists()  # no job ran, not even the data stage


def test_a_bad_pin_fails_at_parse_time(tmp_path):
    cfg = _paper_small(tmp_path, sha256={"resnet50-0676ba61.pth": "f" * 64})
    r = _smk(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(cfg))
    assert r.returncode != 0 and "contradicts the published sha256" in r.stdout + r.stderr

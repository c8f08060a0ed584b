"""SR models' initialisation (docs/weights.md): ``init: scratch | div2k | file`` of ``SRTrainConfig``, resolved by the
SR stage's run spec into the staged catalogue file (BasicSR's / SwinIR's published DIV2K weights), loaded by the SR
trainer before training and staged by the workflow. Nothing is downloaded: the "published" files are built here, in
the layout BasicSR publishes them (``{"params": state_dict}``, legacy torch.save format; ``params_ema`` where a
training run kept an EMA), from BasicSR's own architectures with the published arguments."""
from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from baselines.config import ConfigError, SRTrainConfig
from baselines.spec import build_sr_spec
from baselines.sr_models import build_sr_model, load_sr_weights
from baselines.sr_train import SRInitError, load_sr_init, train_sr
from benchcore import weights as W

# BasicSR's SwinIR calls torch.meshgrid without indexing= (its own code, harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "baselines" / "paper.yaml"
DEMO = REPO / "config" / "baselines" / "smoke.yaml"
DIV2K = {(net, init): name for (net, init), name in W.INIT_FILES.items() if init == "div2k"}


def _deg(scale: int) -> dict:
    return {"name": f"bicubic_x{scale}", "scale": scale, "kernel": "torch-bicubic", "blur": 0.0, "noise": 0.0,
            "jpeg": None, "seed": 0}


def _published_arch(model: str, scale: int) -> torch.nn.Module:
    """The network a published file was saved from: BasicSR's own class with the model zoo's arguments (EDSR-M
    f64b16; ESRGAN's RRDBNet 64x23 gc32; SwinIR-M classical at training patch 48, as BasicSR's inference_swinir.py and
    SwinIR's main_test_swinir.py build it for the s48w8 files)."""
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.swinir_arch import SwinIR

    if model == "edsr":
        return EDSR(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=scale, res_scale=1,
                    img_range=255.0, rgb_mean=(0.4488, 0.4371, 0.4040))
    if model == "rrdb":
        return RRDBNet(num_in_ch=3, num_out_ch=3, scale=scale, num_feat=64, num_block=23, num_grow_ch=32)
    return SwinIR(upscale=scale, in_chans=3, img_size=48, window_size=8, img_range=1.0, depths=[6] * 6,
                  embed_dim=180, num_heads=[6] * 6, mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv")


def _save_basicsr(path: Path, state: dict, key: str = "params", **extra) -> Path:
    """A file as BasicSR publishes it (scripts/publish_models.py: legacy, non-zip torch.save format)."""
    torch.save({key: state, **extra}, path, _use_new_zipfile_serialization=False)
    return path


# ------------------------------------------------------------------------------------------------ the loaders
def test_load_sr_weights_reads_params_and_prefers_params_ema(tmp_path):
    torch.manual_seed(0)
    a, b = build_sr_model("edsr", 2, "tiny"), build_sr_model("edsr", 2, "tiny")
    plain = _save_basicsr(tmp_path / "plain.pth", a.state_dict())
    ema = _save_basicsr(tmp_path / "ema.pth", a.state_dict(), key="params_ema", params=b.state_dict())
    for path in (plain, ema):  # params_ema (the weights BasicSR tests with) wins over params
        fresh = load_sr_weights(build_sr_model("edsr", 2, "tiny"), path)
        assert all(torch.equal(v, a.state_dict()[k]) for k, v in fresh.state_dict().items())
        init = build_sr_model("edsr", 2, "tiny")
        rep = load_sr_init(init, path)
        assert all(torch.equal(v, a.state_dict()[k]) for k, v in init.state_dict().items())
        assert rep["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert rep["tensors"] == len(a.state_dict()) and rep["derived_kept"] == 0
    wrapped = _save_basicsr(tmp_path / "dp.pth", {f"module.{k}": v for k, v in a.state_dict().items()})
    load_sr_init(build_sr_model("edsr", 2, "tiny"), wrapped)  # DataParallel prefixes dropped, as BasicSR does


@pytest.mark.parametrize("net", sorted(DIV2K), ids=lambda net: net[0])
def test_every_catalogued_file_layout_fits_the_paper_preset(net, tmp_path):
    model, scale = net[0].rsplit("_x", 1)
    scale = int(scale)
    torch.manual_seed(scale)
    published = _published_arch(model, scale)
    path = _save_basicsr(tmp_path / DIV2K[net], published.state_dict())
    ours = build_sr_model(model, scale, "paper")
    rep = load_sr_init(ours, path, f"{model} x{scale}")
    theirs, mine = published.state_dict(), ours.state_dict()
    derived = [k for k in mine if k.endswith(("attn_mask", "relative_position_index"))]
    assert rep["tensors"] + len(derived) == len(mine) and rep["derived_kept"] == len(derived)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k not in derived)
    if model == "swinir":  # s48 masks vs the paper preset's img_size 64: BasicSR's strict load refuses the file
        assert derived
        with pytest.raises(RuntimeError, match="attn_mask"):
            load_sr_weights(build_sr_model(model, scale, "paper"), path)
    else:
        assert not derived
        load_sr_weights(build_sr_model(model, scale, "paper"), path)  # strict: the very same layout


def test_swinir_s48_file_gives_the_published_network(tmp_path, one_thread):
    torch.manual_seed(0)
    published = _published_arch("swinir", 2).eval()
    path = _save_basicsr(tmp_path / DIV2K[("swinir_x2", "div2k")], published.state_dict())
    ours = build_sr_model("swinir", 2, "paper").eval()
    load_sr_init(ours, path)
    x = torch.rand(1, 3, 48, 48)  # the file's own img_size: its stored masks against ours, computed for 48 x 48
    with torch.no_grad():
        assert torch.allclose(ours(x), published(x), atol=1e-5)


def test_init_file_that_does_not_fit_names_the_tensors(tmp_path):
    tiny = _save_basicsr(tmp_path / "tiny.pth", build_sr_model("edsr", 2, "tiny").state_dict())
    with pytest.raises(SRInitError) as info:
        load_sr_init(build_sr_model("edsr", 2, "paper"), tiny, "edsr x2 (preset paper)")
    msg = str(info.value)
    assert msg.startswith(f"{tiny} does not fit edsr x2 (preset paper) (missing: body.2.conv1.weight, ")
    assert "other shape (file vs network): conv_first.weight (16, 3, 3, 3) vs (64, 3, 3, 3)" in msg
    x4 = _save_basicsr(tmp_path / "x4.pth", build_sr_model("edsr", 4, "tiny").state_dict())
    with pytest.raises(SRInitError, match="not in the network: upsample.2.weight"):
        load_sr_init(build_sr_model("edsr", 2, "tiny"), x4)
    with pytest.raises(SRInitError, match="SR init file not found"):
        load_sr_init(build_sr_model("edsr", 2, "tiny"), tmp_path / "absent.pth")
    torch.save({"params": "not tensors"}, tmp_path / "bad.pth")
    with pytest.raises(SRInitError, match="no state dict found"):
        load_sr_init(build_sr_model("edsr", 2, "tiny"), tmp_path / "bad.pth")


# ------------------------------------------------------------------------------------------------ the catalogue
def test_catalogue_has_the_published_sr_files():
    assert DIV2K == {
        ("edsr_x2", "div2k"): "EDSR_Mx2_f64b16_DIV2K_official-3ba7b086.pth",
        ("edsr_x3", "div2k"): "EDSR_Mx3_f64b16_DIV2K_official-6908f88a.pth",
        ("edsr_x4", "div2k"): "EDSR_Mx4_f64b16_DIV2K_official-0c287733.pth",
        ("rrdb_x4", "div2k"): "ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth",
        **{(f"swinir_x{s}", "div2k"): f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth" for s in (2, 3, 4, 8)}}
    for name in DIV2K.values():
        wf = W.CATALOGUE[name]
        assert wf.sha256 is None  # none is published: BasicSR names a prefix, SwinIR nothing
        if name.startswith("001_"):
            assert wf.url == f"https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/{name}"
            assert wf.hash_prefix is None
        else:  # BasicSR: Google Drive only, so copy-only; checked against the prefix in its name
            assert wf.url is None and name.endswith(f"-{wf.hash_prefix}.pth") and "Google Drive" in wf.sha256_note


def test_a_copy_only_file_is_staged_from_weights_dir_and_checked_against_its_prefix(tmp_path, monkeypatch):
    name = "EDSR_Mx2_f64b16_DIV2K_official-3ba7b086.pth"
    src = tmp_path / "mine"
    src.mkdir()
    (src / name).write_bytes(b"not the published file")
    with pytest.raises(W.WeightsError, match="does not start with the published prefix 3ba7b086"):
        W.stage_file(name, tmp_path / "store", source_dir=src, log=lambda _: None)
    assert not (tmp_path / "store" / name).exists()
    assert W.unavailable([name], tmp_path / "empty", allow_download=True, probe=lambda url: True) == [name]
    msg = W.missing_message([name], None, True)
    assert "(no direct link; see docs/weights.md)" in msg and "sr_edsr.init: div2k" in msg
    # a file whose sha256 starts with the prefix is accepted (the prefix is all BasicSR publishes)
    monkeypatch.setitem(W.CATALOGUE, name, dataclasses.replace(
        W.CATALOGUE[name], hash_prefix=hashlib.sha256(b"not the published file").hexdigest()[:8]))
    doc = W.stage_file(name, tmp_path / "store", source_dir=src, log=lambda _: None)
    assert doc["checked_against"] == "hash prefix" and doc["init"] == "div2k" and doc["network"] == "edsr_x2"


# ------------------------------------------------------------------------------------------------ the run spec
@pytest.mark.parametrize("model,scale", [("edsr", 2), ("edsr", 3), ("rrdb", 4), ("swinir", 4), ("swinir", 8)])
def test_div2k_resolves_to_the_staged_file_and_is_recorded(model, scale, tmp_path):
    spec = build_sr_spec(results=str(tmp_path), dataset="d", degradation=_deg(scale), sr_model=model, seed=1,
                         config_file=PAPER, sets={f"sr_{model}.init": "div2k"})
    name = DIV2K[(f"{model}_x{scale}", "div2k")]
    staged = f"{tmp_path}/weights/{name}"
    s = spec["settings"]
    assert s["init"] == {"network": f"{model}_x{scale}", "init": "div2k", "weights": name, "file": staged,
                         "staged": True, "sha256": None, "url": W.CATALOGUE[name].url}
    assert s["sr"]["init"] == "div2k" and s["sr"]["weights"] == staged
    assert s["sr"]["scale"] == scale and s["sr"]["seed"] == 1  # the run still owns them
    assert W.staged_files(spec) == [name]  # what the workflow stages for train_sr
    other = build_sr_spec(results=str(tmp_path), dataset="d", degradation=_deg(scale), sr_model=model, seed=1,
                          config_file=PAPER, sets={"sr.init": "div2k"}, weights_dir="/staged/here")
    assert other["settings"]["sr"]["weights"] == f"/staged/here/{name}"


def test_paper_default_stays_scratch_and_file_is_used_in_place(tmp_path):
    for model in ("edsr", "rrdb", "swinir"):
        spec = build_sr_spec(results=str(tmp_path), dataset="d", degradation=_deg(2), sr_model=model, seed=0,
                             config_file=PAPER)
        assert spec["settings"]["init"]["init"] == "scratch" and spec["settings"]["sr"]["weights"] is None
        assert W.staged_files(spec) == []
    own = build_sr_spec(results=str(tmp_path), dataset="d", degradation=_deg(2), sr_model="edsr", seed=0,
                        config_file=DEMO, sets={"sr.init": "file", "sr.weights": "/my/edsr.pth"})
    assert own["settings"]["init"]["init"] == "file" and own["settings"]["init"]["file"] == "/my/edsr.pth"
    assert own["settings"]["sr"]["weights"] == "/my/edsr.pth" and W.staged_files(own) == []
    bicubic = build_sr_spec(results=str(tmp_path), dataset="d", degradation=_deg(2), sr_model="bicubic", seed=0,
                            config_file=PAPER, sets={"sr.init": "div2k"})
    assert "init" not in bicubic["settings"] and W.staged_files(bicubic) == []  # an interpolation trains nothing


def _error(fn) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg  # one line
    return msg


def test_div2k_errors_name_the_preset_and_the_published_scales(tmp_path):
    common = dict(results=str(tmp_path), dataset="d", seed=0)
    msg = _error(lambda: build_sr_spec(degradation=_deg(2), sr_model="edsr", config_file=DEMO,
                                       sets={"sr.init": "div2k"}, **common))
    assert "init 'div2k' needs preset 'paper'" in msg and "'tiny' has other shapes" in msg
    msg = _error(lambda: build_sr_spec(degradation=_deg(2), sr_model="rrdb", config_file=PAPER,
                                       sets={"sr_rrdb.init": "div2k"}, **common))
    assert ("no published DIV2K weights for rrdb x2; published for rrdb: "
            "x4 (ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth)") in msg
    assert "sr_rrdb" in msg
    msg = _error(lambda: SRTrainConfig.from_dict({"model_name": "edsr", "scale": 8, "init": "div2k"}))
    assert "published for edsr: x2 (EDSR_Mx2_f64b16_DIV2K_official-3ba7b086.pth), x3 (" in msg
    assert "init 'file' needs weights" in _error(lambda: SRTrainConfig.from_dict({"init": "file"}))
    assert "init is 'scratch'" in _error(lambda: SRTrainConfig.from_dict({"weights": "/a.pth"}))
    assert "must be one of ('scratch', 'div2k', 'file')" in _error(
        lambda: SRTrainConfig.from_dict({"init": "imagenet"}, source="sr"))
    with pytest.raises(ConfigError, match="needs preset 'paper'"):  # the CLI's config check, before any run
        SRTrainConfig.from_dict({"init": "div2k", "preset": "tiny"})


# ------------------------------------------------------------------------------------------------ the trainer
def _pairs(root: Path, n: int = 2, size: int = 32, scale: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("HR", "LR"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        hr = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        hr.save(root / "train" / "HR" / f"t{i}.png")
        hr.resize((size // scale, size // scale), Image.Resampling.BICUBIC).save(root / "train" / "LR" / f"t{i}.png")
    return root


def test_trainer_starts_from_the_init_file_and_records_it(tmp_path, one_thread):
    from baselines.pipeline import sr_train_step

    pairs = _pairs(tmp_path / "pairs")
    torch.manual_seed(123)
    start = build_sr_model("edsr", 2, "tiny").state_dict()
    path = _save_basicsr(tmp_path / "start.pth", start)
    cfg = {"scale": 2, "preset": "tiny", "iters": 1, "batch_size": 2, "lr_patch_size": 8, "lr": 1e-12,
           "num_workers": 0, "checkpoint_every": 1, "log_every": 1, "device": "cpu"}
    res = sr_train_step("edsr", pairs, tmp_path / "ft", {**cfg, "init": "file", "weights": str(path)})
    assert res["init"]["init"] == "file" and res["init"]["file"] == str(path)
    assert res["init"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    final = torch.load(tmp_path / "ft" / "model.pth", map_location="cpu", weights_only=False)
    assert final["config"]["init"] == "file" and final["config"]["weights"] == str(path)
    # one step at lr 1e-12: the trained weights are the init file's (fine-tuning starts from them) ...
    assert all(torch.allclose(final["params"][k], v, atol=1e-6) for k, v in start.items())
    scratch = sr_train_step("edsr", pairs, tmp_path / "scratch", cfg)
    assert scratch["init"] == {"init": "scratch", "file": None}
    other = torch.load(tmp_path / "scratch" / "model.pth", map_location="cpu", weights_only=False)["params"]
    assert not torch.allclose(other["conv_first.weight"], start["conv_first.weight"])  # ... and not scratch's
    with pytest.raises(ValueError, match="it started from init 'scratch', the config now says 'file'"):
        train_sr("edsr", 2, pairs, tmp_path / "scratch", iters=2, batch_size=2, patch_size=16, lr=1e-12,
                 preset="tiny", resume=True, init="file", weights=path)


def test_trainer_without_the_div2k_file_names_it():
    with pytest.raises(ValueError, match=re.escape("--set sr.weights=/path/to/ESRGAN_PSNR_SRx4_DF2K_official-150ff491"
                                                   ".pth")):
        train_sr("rrdb", 4, "unused", "unused", iters=1, init="div2k")
    with pytest.raises(ValueError, match="use init 'file' to start from it"):
        train_sr("edsr", 2, "unused", "unused", iters=1, weights="/a.pth")


# ------------------------------------------------------------------------------------------------ the workflow
def test_paper_dry_run_stages_the_sr_files_before_train_sr(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg["datasets"] = {"nwpu": cfg["datasets"]["nwpu"]}
    cfg["degradations"] = {cfg["main_degradation"]: cfg["degradations"][cfg["main_degradation"]]}
    cfg["seeds"], cfg["sweep"] = [0], {"degradations": [], "methods": []}
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["weights"] = {"dir": str(tmp_path / "no_weights_here"), "allow_download": False}
    cfg["baselines"]["set"] = {"sr_edsr.init": "div2k", "sr_swinir.init": "div2k"}  # RRDB has no x2 file
    (tmp_path / "paper_small.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "2", "all",
                        "--configfile", str(tmp_path / "paper_small.yaml")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    blocks = re.split(r"\n(?=rule |localrule )", out)
    staged = {re.search(r"weights_file=(\S+)", b).group(1) for b in blocks
              if re.match(r"(local)?rule stage_weights:", b)}
    edsr, swinir = DIV2K[("edsr_x2", "div2k")], DIV2K[("swinir_x2", "div2k")]
    assert {edsr, swinir} <= staged
    trains = {re.search(r"sr_model=(\w+)", b).group(1): b.split("output:")[0] for b in blocks
              if b.startswith("rule train_sr:")}
    store = tmp_path / "results" / "weights"
    assert f"{store}/{edsr}.json" in trains["edsr"] and f"{store}/{swinir}.json" in trains["swinir"]
    assert "weights/" not in trains["rrdb"]  # scratch: no staged file to wait for

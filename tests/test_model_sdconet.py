"""The assembled SDCoNet: train/eval contract, ablation variants, routing hooks, parameter summary (tiny preset)."""
from __future__ import annotations

import math

import pytest
import torch

from sdconet.methods import fit_layer_ratios, method_overrides, sdconet_method_ids
from sdconet.models.build import build_model, load_model_config, resolve_config
from sdconet.models.config import ConfigError, preset
from sdconet.models.deformable_encoder import DeformableEncoder
from sdconet.models.sa_encoder import SaliencyAwareEncoder
from sdconet.models.sdconet import SDCoNet
from sdconet.models.serial import SerialSDCoNet
from sdconet.summary import parameter_summary

HR = 64
NUM_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _targets() -> list[dict[str, torch.Tensor]]:
    """Two images: three boxes (HR pixels), and none."""
    return [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 20.0], [30.0, 30.0, 60.0, 62.0], [40.0, 2.0, 52.0, 14.0]]),
             "labels": torch.tensor([0, 2, 1])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]


def _tiny(**kw) -> SDCoNet:
    torch.manual_seed(0)
    return build_model(preset("tiny", scale=2, num_classes=NUM_CLASSES, **kw))


def _images(b: int = 2, hw: int = HR) -> torch.Tensor:
    return torch.randn(b, 3, hw, hw, generator=torch.Generator().manual_seed(1))


def _expected_keys(model) -> set[str]:
    return set(model.detector.criterion.weight_dict)


def test_train_mode_returns_all_weighted_finite_losses() -> None:
    model = _tiny()
    model.train()
    losses = model(_images(), _targets(), epoch=0)
    assert set(losses) == _expected_keys(model) | {"loss_salience", "loss_sr"}
    assert all(v.dim() == 0 and math.isfinite(float(v.detach())) for v in losses.values())
    # already weighted: the L1 box term is the criterion's raw term x 5, loss_sr = 5 x L1
    model.detector.criterion.weight_dict["loss_bbox"] = 1.0
    torch.manual_seed(3)
    unweighted = model(_images(), _targets())["loss_bbox"]
    model.detector.criterion.weight_dict["loss_bbox"] = 5.0
    torch.manual_seed(3)
    assert torch.allclose(model(_images(), _targets())["loss_bbox"], 5.0 * unweighted)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert model.sr_decoder.head.conv_last.weight.grad is not None


def test_eval_detections_inside_image_and_return_sr() -> None:
    model = _tiny()
    model.eval()
    with torch.no_grad():
        dets = model(_images())
        dets2, sr = model(_images(), return_sr=True)
    assert len(dets) == 2
    for d in dets:
        k = d["boxes"].shape[0]
        assert 0 < k <= 300 and d["scores"].shape == (k,) and d["labels"].shape == (k,)
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= HR).all()
        assert (d["boxes"][:, 2:] >= d["boxes"][:, :2]).all()
        assert d["labels"].min() >= 0 and d["labels"].max() < NUM_CLASSES
        assert (d["scores"][:-1] >= d["scores"][1:]).all()
    assert sr.shape == (2, 3, HR, HR)
    assert torch.allclose(dets[0]["scores"], dets2[0]["scores"])


def test_non_square_input_and_no_sr_model_returns_none() -> None:
    model = _tiny(use_sr=False)
    assert model.sr_decoder is None and model.neck.extra_sr is None
    model.eval()
    with torch.no_grad():
        dets, sr = model(torch.randn(1, 3, 64, 96), return_sr=True)
    assert sr is None and (dets[0]["boxes"][:, 0::2] <= 96).all() and (dets[0]["boxes"][:, 1::2] <= 64).all()


def test_offline_lr_input_uses_hr_targets() -> None:
    model = _tiny(lr={"on_the_fly": False, "scale": 2})
    hr = _images()
    tg = [{**t, "hr": hr[i], "size": (HR, HR)} for i, t in enumerate(_targets())]
    model.train()
    losses = model(hr[:, :, ::2, ::2].contiguous(), tg)
    assert "loss_sr" in losses and math.isfinite(float(losses["loss_sr"].detach()))
    model.eval()
    with torch.no_grad():
        dets, sr = model(torch.randn(2, 3, HR // 2, HR // 2), return_sr=True)
    assert sr.shape == (2, 3, HR, HR) and (dets[0]["boxes"] <= HR).all()
    model.train()
    with pytest.raises(ValueError, match="hr"):
        model(hr[:, :, ::2, ::2].contiguous(), _targets())


@pytest.mark.parametrize("method", sdconet_method_ids())
def test_every_ablation_builds_and_trains_one_step(method: str) -> None:
    cfg, train = resolve_config({"model": {"preset": "tiny", "num_classes": NUM_CLASSES, "lr": {"scale": 2}},
                                 "train": {"epochs": 1, "batch_size": 2}}, method=method)
    ov = method_overrides(method)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, SDCoNet if ov["model.shared_encoder"] else SerialSDCoNet)
    assert train["routing"] == ov["train.routing"] and not hasattr(cfg, "routing")  # one owner: the train section
    assert cfg.layer_filter_ratio == fit_layer_ratios(ov["model.layer_filter_ratio"], cfg.enc_layers)
    enc = model.detector.encoder
    assert isinstance(enc, SaliencyAwareEncoder if cfg.use_saliency else DeformableEncoder)
    assert model.detector.saliency is None or model.detector.saliency.alpha.requires_grad == (
        cfg.saliency.alpha_mode == "learnable")
    model.train()
    opt = torch.optim.AdamW([p for g in model.param_groups_spec().values() for p in g], lr=1e-4)
    losses = model(_images(), _targets(), epoch=0)
    assert ("loss_sr" in losses) == cfg.use_sr
    assert ("loss_salience" in losses) == cfg.use_saliency
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    before = next(model.backbone.parameters()).detach().clone()
    sum(losses.values()).backward()
    opt.step()
    assert not torch.equal(before, next(model.backbone.parameters()))


def test_set_sr_trainable_switches_loss_and_gradients() -> None:
    model = _tiny()
    model.train()
    sr_params = model.param_groups_spec()["sr"]
    assert sr_params and model.sr_enabled
    model.set_sr_trainable(False)
    assert not model.sr_enabled and not any(p.requires_grad for p in sr_params)
    losses = model(_images(), _targets())
    assert "loss_sr" not in losses
    sum(losses.values()).backward()
    assert all(p.grad is None for p in sr_params)
    assert all(p.grad is not None for p in model.shared_parameters())
    model.zero_grad(set_to_none=True)
    model.sr_enabled = True  # the routing schedule may set the attribute directly
    losses = model(_images(), _targets())
    assert "loss_sr" in losses
    losses["loss_sr"].backward()
    assert model.sr_decoder.up_layer_pre.upconv.weight.grad is not None
    assert model.neck.extra_sr.conv.weight.grad is not None
    no_sr = _tiny(use_sr=False)
    no_sr.set_sr_trainable(True)
    assert not no_sr.sr_enabled and no_sr.param_groups_spec()["sr"] == []


@pytest.mark.parametrize("kw", [{}, {"shared_encoder": False}])
def test_param_groups_partition_every_parameter(kw: dict) -> None:
    model = _tiny(**kw)
    groups = model.param_groups_spec()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    backbones = [model.backbone] + ([model.sr_backbone] if kw else [])
    assert {id(p) for g in backbones for p in g.parameters()} == {id(p) for p in groups["backbone"]}
    assert {id(p) for p in groups["sr"]} == {id(p) for p in model.sr_decoder.parameters()} | {
        id(p) for p in (model.sr_neck if kw else model.neck.extra_sr).parameters()}


@pytest.mark.parametrize("detach", [True, False])
def test_serial_detach_controls_detection_gradient_into_sr(detach: bool) -> None:
    model = _tiny(shared_encoder=False, serial_detach=detach)
    model.train()
    losses = model(_images(), _targets())
    det = sum(v for k, v in losses.items() if k != "loss_sr")
    det.backward()
    got = model.sr_decoder.head.conv_last.weight.grad
    assert (got is None) == detach
    assert (model.shared_parameters() == []) == detach
    model.eval()
    with torch.no_grad():
        _, sr = model(_images(), return_sr=True)
    assert sr.shape == (2, 3, HR, HR)


def test_deform_residual_and_score_mode_reach_the_encoder() -> None:
    assert preset("tiny", scale=2).deform_residual == "standard"
    enc = _tiny(deform_residual="official", topk_score_mode="fixed").detector.encoder
    assert all(layer.deform_residual == "official" and layer.topk_score_mode == "fixed" for layer in enc.layers)
    with pytest.raises(ConfigError, match="deform_residual"):
        preset("tiny", scale=2, deform_residual="double")
    with pytest.raises(ConfigError, match="shared_encoder"):
        preset("tiny", scale=2, shared_encoder=False, use_sr=False)


def test_run_config_unknown_keys_are_named(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("model: {preset: tiny, lr: {scale: 2}}\ntrain: {epochs: 1, batch_size: 2}\n")
    cfg, train = load_model_config(path, {"model.swin.window_size": 8, "train.lr": 3e-4})
    assert cfg.swin.window_size == 8 and train["lr"] == 3e-4 and train["routing"] == "schedule"
    with pytest.raises(ConfigError, match="swin.windowsize"):
        load_model_config(path, {"model.swin.windowsize": 8})
    with pytest.raises(ConfigError, match="lr_rate"):
        load_model_config(path, {"train.lr_rate": 1})
    with pytest.raises(ConfigError, match="optimizer"):
        load_model_config(path, {"optimizer.lr": 1})
    path.write_text("model: {preset: tiny, lr: {scale: 2}}\ntrain: {epochs: 1, batch_size: 2}\ndata: {}\n")
    with pytest.raises(ConfigError, match="'data'"):
        load_model_config(path)
    with pytest.raises(ValueError, match="baseline"):
        method_overrides("yolov8n_lr")


def test_paper_parameter_summary_matches_spec_appendix_a() -> None:
    """Spec Appendix A (official code, 10 classes): total 84.302 M, SR-only 34.664 M, inference 49.638 M."""
    full = parameter_summary(build_model(preset("paper", scale=2, num_classes=10, sr_decoder={"keep_unused": True})))
    m, c = full["millions"], full["components"]
    assert abs(m["total"] - 84.302) < 0.001 and abs(m["sr_only"] - 34.664) < 0.001
    assert abs(m["inference_path"] - 49.638) < 0.001 and abs(m["detection"] - 49.638) < 0.001
    for name, ref in [("encoder", 27.521), ("neck_sr", 10.620), ("detection_encoder", 9.329), ("decoder", 9.473),
                      ("heads", 0.946), ("sr_decoder", 24.044)]:
        assert abs(m[name] - ref) < 0.001, name
    assert abs((c["neck_det"] + c["neck_sr"]) / 1e6 - 12.735) < 0.001
    assert abs(full["detail"]["sr_decoder_unused"] / 1e6 - 0.375) < 0.001
    assert sum(c.values()) == full["totals"]["total"]
    t = full["totals"]
    assert t["inference_path"] + t["training_only"] + t["unused"] == t["total"]
    # without the never-used parity modules (default): 0.375 M fewer, inference path unchanged
    assert abs(parameter_summary(build_model(preset("paper", scale=2, num_classes=10)))["millions"]["total"] - 83.928) < 0.001
    # DINO-4scale Swin-T (no saliency, no SR): 47.895 M
    dino = parameter_summary(build_model(preset("paper", scale=2, num_classes=10, use_saliency=False, use_sr=False)))
    assert abs(dino["millions"]["total"] - 47.895) < 0.001


def test_paper_serial_summary_differs_from_official_by_unused_neck_parts() -> None:
    """Official serial SA_DINO_SR_TS: 124.558 M; ours omits its never-used 2.116 M SR-stage detection convs and
    10.620 M detector-stage SR conv (spec Appendix A: 124.558 = 111.823 + 12.735)."""
    s = parameter_summary(build_model(preset("paper", scale=2, num_classes=10, shared_encoder=False,
                                             sr_decoder={"keep_unused": True})))
    m = s["millions"]
    assert s["model"] == "SerialSDCoNet" and abs(m["detection"] - 49.638) < 0.001
    assert abs(m["total"] + 12.735 - 124.558) < 0.002
    assert abs(m["sr_only"] + 12.735 - 74.920) < 0.002

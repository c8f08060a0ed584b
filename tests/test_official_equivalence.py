"""Equivalence with the released SDCoNet code on the reference fixture ``../shared/fixtures/official_sdconet_small``.

The fixture (its README describes every file) holds the released mmdetection model's weights (reduced
configuration, perturbed, 2-bit codebooks), a real 2-image input, the released predict path stage by stage, the
SR output, every loss term and 21 gradients of both routing phases, and the denoising (CDN) draws. Here the
weights are converted with :mod:`sdconet.official`, the model is built with :func:`official_config`, and every
stored tensor must be reproduced within the fixture README's tolerances (section 10). The CDN draws are
reproduced by re-seeding the global RNG with 1234 right before the denoising generator, as the released run
did; the generated queries and mask are checked against the stored ones bit for bit.

Skips with a reason when the fixture is absent (``$SDCONET_SHARED_DIR/fixtures/...``, default ``../shared``).
Runs on 2 threads, the released run's setting (1 thread moves features by ~1e-6 relative, far below the
tolerances). ``PYTHONPATH=. python tests/test_official_equivalence.py`` prints the measured differences as
Markdown tables (``docs/official_equivalence.md``).
"""
from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from sdconet.models.build import build_model
from sdconet.models.saliency import key_token_selection
from sdconet.official import (convert_official_state_dict, convert_official_tensor, official_config,
                              official_to_model_name, read_official_checkpoint)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SDCONET_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "official_sdconet_small"
THREADS = 2  # the released run's thread count
DN_SEED = 1234

# README section 10: relative error = max|diff| / max|reference| per tensor.
TOL_FEATURE = 1e-4
TOL_REF_BOX_ABS = 1e-5
TOL_PRED_BOX_PX = 1e-2
TOL_PRED_SCORE_ABS = 1e-6
TOL_LOSS = 1e-5
TOL_GRAD = 1e-4
TOL_TINY_GRAD_NORM = 1e-4  # the three SR-path gradients of norm ~1e-5 (accumulation noise ~5e-4 element-wise)
TOL_TINY_GRAD = 1e-3
TINY_GRAD_NORM = 1e-3

#: Stored predict-path tensors compared as features: fixture key -> tolerance kind.
FEATURES = (["lr", "swin.patch_embed"] + [f"swin.stage{i}" for i in range(4)] + [f"swin.out{i}" for i in (1, 2, 3)]
            + [f"neck.level{i}" for i in range(4)] + ["neck.res_4"] + [f"saliency.logits{i}" for i in range(4)]
            + ["saliency.foreground_score", "encoder.layer0_sorted", "encoder.memory", "two_stage.enc_cls_logits",
               "decoder.hidden_normed"] + [f"sr.sr_stage{i}" for i in range(4)] + ["sr.output"])
REFERENCE_BOXES = ["decoder.init_reference", "decoder.references"]


def official_loss_name(name: str) -> str:
    """This suite's name of a released loss term (``enc_loss_cls`` -> ``enc.loss_cls``, ``sr_loss`` -> ``loss_sr``)."""
    if name == "sr_loss":
        return "loss_sr"
    head, dot, tail = name.rpartition(".")
    for kind in ("enc", "dn"):
        if tail.startswith(f"{kind}_loss_"):
            tail = f"{kind}.{tail[len(kind) + 1:]}"
    return f"{head}{dot}{tail}"


def decode_weights(w: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The released state dict from ``weights.pt`` (README section 4), checksums verified."""
    sd: dict[str, torch.Tensor] = {}
    for name in w["order"]:
        if name in w["exact"]:
            sd[name] = w["exact"][name]
        else:
            e = w["quantized"][name]
            n = math.prod(e["shape"])
            q = ((e["codes"].long()[:, None] >> torch.tensor([0, 2, 4, 6])) & 3).flatten()[:n]
            sd[name] = e["codebook"][q].reshape(e["shape"])
        t, ref = sd[name], w["checksum_f64"][name]
        got = int(t.sum()) if not t.is_floating_point() else float(t.double().sum())
        if got != ref:
            raise ValueError(f"weights.pt: checksum of {name} is {got!r}, expected {ref!r}")
    return sd


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |ours - ref|, that / max |ref|)."""
    if tuple(ours.shape) != tuple(ref.shape):
        raise AssertionError(f"shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}")
    d = (ours.detach().double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    scale = ref.double().abs().max().item() if ref.numel() else 1.0
    return d, d / max(scale, 1e-30)


def _tokens(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, H, W, C) (``channels_last``) or (B, C, H, W) -> (B, H*W, C) row-major tokens."""
    return x.flatten(1, 2) if channels_last else x.flatten(2).transpose(1, 2)


def load_fixture(fixture: Path = FIXTURE) -> dict[str, Any]:
    """Decoded weights, config, inputs, predict and train references."""
    ld = lambda name: torch.load(fixture / name, map_location="cpu", weights_only=True)  # noqa: E731
    return {"weights": decode_weights(ld("weights.pt")), "config": json.loads((fixture / "config.json").read_text()),
            "inputs": ld("inputs.pt"), "predict": ld("predict.pt"), "train": ld("train.pt")}


def build_official_model(fx: dict[str, Any]) -> torch.nn.Module:
    """The suite model of the fixture's config with the converted released weights (conversion must be clean)."""
    model = build_model(official_config(fx["config"]["model_config"]))
    sd, report = convert_official_state_dict(fx["weights"], model)
    assert report.ok, report.format()
    model.load_state_dict(sd)
    return model


def run_predict(model: torch.nn.Module, hr: torch.Tensor) -> dict[str, Any]:
    """Eval forward of image 0 with the SR branch; every stage the fixture stores, in its layouts."""
    cap: dict[str, Any] = {}
    det = model.detector
    hooks = [
        model.backbone.register_forward_pre_hook(lambda m, a: cap.__setitem__("lr", a[0])),
        model.backbone.register_forward_hook(lambda m, a, o: cap.__setitem__("enc", o)),
        model.neck.register_forward_hook(lambda m, a, o: cap.__setitem__("neck", o)),
        det.saliency.register_forward_hook(lambda m, a, o: cap.__setitem__("sal", o)),
        det.encoder.layers[0].register_forward_hook(lambda m, a, o: cap.__setitem__("layer0", o)),
        det.encoder.register_forward_hook(lambda m, a, o: cap.__setitem__("memory", o)),
        det.head.heads.cls_branches[det.head.num_layers].register_forward_hook(
            lambda m, a, o: cap.__setitem__("enc_logits", o)),
        det.head.decoder.register_forward_pre_hook(lambda m, a: cap.__setitem__("init_ref", a[1])),
        det.head.decoder.register_forward_hook(lambda m, a, o: cap.__setitem__("decoder", o)),
    ]
    stages = [(f"swin.stage{i}", m) for i, m in enumerate(model.backbone.layers)]
    stages += [(f"sr.sr_stage{i}", m) for i, m in enumerate(model.sr_decoder.layers)]
    for key, layer in stages:  # channels-last (B, H, W, C) stage outputs -> tokens
        hooks.append(layer.register_forward_hook(lambda m, a, o, key=key: cap.__setitem__(key, _tokens(o, True))))
    model.eval()
    try:
        with torch.no_grad():
            dets, sr = model(hr, return_sr=True)
    finally:
        for h in hooks:
            h.remove()
    enc, (feats, res_4), sal = cap["enc"], cap["neck"], cap["sal"]
    out = {k: v for k, v in cap.items() if k.startswith(("swin.stage", "sr.sr_stage"))}
    out.update({"lr": cap["lr"], "swin.patch_embed": _tokens(enc["res_x"][0], False),
                "swin.hw_shapes": torch.tensor([list(map(int, s)) for s in enc["hw_shapes"]]),
                "neck.res_4": res_4, "saliency.foreground_score": sal.scores, "encoder.memory": cap["memory"],
                "two_stage.enc_cls_logits": cap["enc_logits"], "decoder.init_reference": cap["init_ref"],
                "decoder.hidden_normed": cap["decoder"][0], "decoder.references": torch.stack(cap["decoder"][1]),
                "layer0_flat": cap["layer0"], "sr.output": sr, "pred": dets[0], "level_scores": sal.level_scores})
    out.update({f"swin.out{i}": enc["res_x"][i + 1] for i in (1, 2, 3)})
    out.update({f"neck.level{i}": f for i, f in enumerate(feats)})
    out.update({f"saliency.logits{i}": s for i, s in enumerate(sal.level_logits)})
    return out


def run_train(model: torch.nn.Module, inputs: dict[str, Any], phase: int) -> dict[str, Any]:
    """One loss pass and backward from zeroed gradients (README section 3 step 6); DropPath off, CDN re-seeded."""
    model.train()
    for m in model.modules():
        if type(m).__name__ == "DropPath":
            m.eval()
    model.set_sr_trainable(phase == 2)
    model.zero_grad(set_to_none=True)
    dn_out: dict[str, Any] = {}
    gen = model.detector.head.dn_generator

    def reseed(module: torch.nn.Module, args: Any) -> None:  # the released run re-seeded right before the generator
        torch.manual_seed(DN_SEED)

    hooks = [gen.register_forward_pre_hook(reseed),
             gen.register_forward_hook(lambda m, a, o: dn_out.__setitem__("out", o))]
    targets = [{"boxes": b, "labels": lb} for b, lb in zip(inputs["boxes"], inputs["labels"])]
    try:
        with torch.random.fork_rng(devices=[]):
            losses = model(inputs["hr"], targets)
            total = sum(losses.values())
            total.backward()
    finally:
        for h in hooks:
            h.remove()
    params = dict(model.named_parameters())
    return {"losses": {k: float(v.detach()) for k, v in losses.items()}, "total": float(total.detach()),
            "grads": {k: (None if p.grad is None else p.grad.detach().clone()) for k, p in params.items()},
            "dn": dn_out["out"]}


def predict_rows(fx: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, tuple[int, ...], float, float, float]]:
    """(name, shape, max abs diff, measured value checked against the tolerance, tolerance) per predict tensor."""
    ref = fx["predict"]
    rows = []
    for key in FEATURES:
        r = ref[key]
        if key == "encoder.layer0_sorted":  # stored in token_order; compare in flat order
            order = ref["saliency.token_order"]
            r = torch.zeros_like(r).scatter(1, order[..., None].expand(-1, -1, r.shape[-1]), r)
            mine = ours["layer0_flat"]
        else:
            mine = ours[key]
        d, rel = rel_diff(mine, r)
        rows.append((key, tuple(r.shape), d, rel, TOL_FEATURE))
    for key in REFERENCE_BOXES:
        d, _ = rel_diff(ours[key], ref[key])
        rows.append((key + " (abs)", tuple(ref[key].shape), d, d, TOL_REF_BOX_ABS))
    pred = ours["pred"]
    d, _ = rel_diff(pred["scores"][:100], ref["pred.scores"][:100])
    rows.append(("pred.scores top 100 (abs)", (100,), d, d, TOL_PRED_SCORE_ABS))
    d, _ = rel_diff(pred["scores"], ref["pred.scores"])
    rows.append(("pred.scores all 300, sorted (abs)", (300,), d, d, TOL_PRED_SCORE_ABS))
    d, _ = rel_diff(pred["boxes"][:100], ref["pred.boxes"][:100])
    rows.append(("pred.boxes top 100 (HR px)", (100, 4), d, d, TOL_PRED_BOX_PX))
    return rows


def train_loss_rows(fx: dict[str, Any], ours: dict[str, Any], phase: int) -> list[tuple[str, float, float, float]]:
    """(released name, released value, ours, relative difference) per loss term, then the total."""
    ref = fx["train"][f"phase{phase}"]
    rows = [(k, v, ours["losses"][official_loss_name(k)], abs(ours["losses"][official_loss_name(k)] - v) / abs(v))
            for k, v in ref["losses"].items()]
    rows.append(("total", ref["total"], ours["total"], abs(ours["total"] - ref["total"]) / abs(ref["total"])))
    return rows


def grad_rows(fx: dict[str, Any], ours: dict[str, Any], phase: int) -> list[tuple[str, str, Any, Any, Any]]:
    """(released name, kind, rel, norm rel, |g| released) per stored gradient.

    kind: "elementwise", "norm" (|g| < 1e-3: the tiny SR-path gradients), "none" (no gradient on either side) or
    "one-sided: released <grad or None>, ours <grad or None>" (then the numbers are None).
    """
    rows = []
    for name, g_ref in fx["train"][f"phase{phase}"]["grads"].items():
        target, _ = official_to_model_name(name)
        g = ours["grads"][target]
        if g_ref is None or g is None:
            kind = "none" if g_ref is None and g is None else (
                f"one-sided: released {'None' if g_ref is None else 'grad'}, ours {'None' if g is None else 'grad'}")
            rows.append((name, kind, None, None, None))
            continue
        _, g_ref_m = convert_official_tensor(name, g_ref)
        _, rel = rel_diff(g, g_ref_m)
        n_ref = g_ref.double().norm().item()
        norm_rel = abs(g.double().norm().item() - n_ref) / n_ref
        rows.append((name, "norm" if n_ref < TINY_GRAD_NORM else "elementwise", rel, norm_rel, n_ref))
    return rows


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fx() -> dict[str, Any]:
    if not (FIXTURE / "weights.pt").is_file():
        pytest.skip(f"official reference fixture not found at {FIXTURE} (set SDCONET_SHARED_DIR)")
    return load_fixture(FIXTURE)


@pytest.fixture(scope="module")
def threads():
    prev = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def model(fx, threads) -> torch.nn.Module:
    return build_official_model(fx)


@pytest.fixture(scope="module")
def predicted(fx, model) -> dict[str, Any]:
    return run_predict(model, fx["inputs"]["hr"][0:1])


@pytest.fixture(scope="module")
def predict_table(fx, predicted) -> list[tuple[str, tuple[int, ...], float, float, float]]:
    return predict_rows(fx, predicted)


@pytest.fixture(scope="module")
def trained(fx, model) -> dict[int, dict[str, Any]]:
    return {phase: run_train(model, fx["inputs"], phase) for phase in (1, 2)}


# ---------------------------------------------------------------------------------------------- conversion


def test_every_released_key_is_mapped_and_every_model_key_filled(fx, model) -> None:
    sd, report = convert_official_state_dict(fx["weights"], model)
    assert report.ok, report.format()
    assert len(fx["weights"]) == 446 and len(report.mapped) + len(report.checked) == 446
    # 16 relative-position indices (checked equal to the model's) and the 2 filter-ratio buffers (the config)
    assert len(report.checked) == 18
    assert sorted(report.transformed) == sorted(k for k in fx["weights"] if ".downsample." in k)
    assert set(sd) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == fx["config"]["derived_sizes"]["n_parameters"]
    # the shared memory transform: one released tensor, two names here, one Parameter
    assert report.mapped["memory_trans_fc.weight"] == ["detector.memory_transform.fc.weight",
                                                       "detector.head.memory_transform.fc.weight"]


def test_backbone_mapping_agrees_with_the_swin_weight_loader(fx) -> None:
    """The PatchMerging permutation equals the one ``swin.pretrained`` applies to mmdet checkpoints."""
    from sdconet.models.swin_weights import to_encoder_keys

    bb = {k: v for k, v in fx["weights"].items() if k.startswith("backbone.")}
    loader = to_encoder_keys(bb)
    for name, value in bb.items():
        if name.endswith("relative_position_index"):
            continue
        target, converted = convert_official_tensor(name, value)
        assert target.startswith("backbone.")
        assert torch.equal(converted, loader[target[len("backbone."):]]), name


def test_conversion_reports_unmapped_unfilled_and_mismatched_keys(fx, model) -> None:
    broken = dict(fx["weights"])
    broken["some_new_head.weight"] = torch.zeros(3)
    del broken["query_embedding.weight"]
    broken["level_filter_ratio"] = torch.tensor([1.0, 1.0, 0.5, 1.0])
    broken["bbox_head.cls_branches.0.weight"] = torch.zeros(11, 256)
    _, report = convert_official_state_dict(broken, model)
    assert not report.ok
    assert list(report.unmapped) == ["some_new_head.weight"]
    assert report.unfilled == ["detector.head.heads.cls_branches.0.weight", "detector.head.query_embedding.weight"]
    assert list(report.value_mismatch) == ["level_filter_ratio"]
    assert list(report.shape_mismatch) == ["bbox_head.cls_branches.0.weight"]
    assert "unmapped released key: some_new_head.weight" in report.format()


def test_official_config_flags_and_errors(fx) -> None:
    from sdconet.models.config import ConfigError

    cfg = official_config(fx["config"]["model_config"])
    assert (cfg.deform_residual, cfg.topk_score_mode, cfg.enhance_mcsp) == ("official", "official", "faithful")
    assert cfg.sr_decoder.official_view_quirk and cfg.sr_decoder.keep_unused
    assert (cfg.num_queries, cfg.topk_sa, cfg.num_dn_queries, cfg.enc_layers, cfg.lr.scale) == (50, 50, 30, 2, 2)
    assert cfg.saliency.alpha_mode == "fixed" and not hasattr(cfg, "routing")  # the train section owns it
    full = official_config()
    assert full.swin.depths == (2, 2, 6, 2) and full.deform_residual == "official" and full.num_queries == 300
    bad = json.loads(json.dumps(fx["config"]["model_config"]))
    bad["decoder"]["layer_cfg"]["self_attn_cfg"]["num_heads"] = 4
    with pytest.raises(ConfigError, match="head count"):
        official_config(bad)


# ---------------------------------------------------------------------------------------------- predict path


@pytest.mark.parametrize("key", FEATURES + REFERENCE_BOXES + ["pred"])
def test_predict_stage_matches_released(predict_table, key) -> None:
    rows = [r for r in predict_table if r[0].split(" ")[0] == key or r[0].startswith(key + ".")]
    assert rows
    for name, shape, d, measured, tol in rows:
        assert measured <= tol, f"{name} {shape}: max abs diff {d:.3g}, checked value {measured:.3g} > {tol:g}"


def test_predict_discrete_outputs_match_released(fx, predicted) -> None:
    ref, pred = fx["predict"], predicted["pred"]
    assert torch.equal(predicted["swin.hw_shapes"], ref["swin.hw_shapes"])
    assert torch.equal(pred["labels"][:100], ref["pred.labels"][:100])
    # ranks 101-300 hold adjacent score gaps of 1.3e-7: compare their labels as a multiset
    assert torch.equal(pred["labels"][100:].sort()[0], ref["pred.labels"][100:].sort()[0])
    logits = predicted["two_stage.enc_cls_logits"]
    assert torch.equal(torch.topk(logits.max(-1)[0], 50, dim=1)[1], ref["two_stage.topk_indices"])


def test_saliency_token_order_matches_up_to_ties(fx, predicted) -> None:
    order = fx["predict"]["saliency.token_order"]
    assert torch.equal(order.sort(1)[0], torch.arange(order.shape[1])[None])
    ours = predicted["saliency.foreground_score"].gather(1, order)  # our scores in the released order
    assert (ours[:, 1:] - ours[:, :-1]).max().item() <= 1e-5  # non-increasing up to reimplementation noise
    n = len(predicted["level_scores"])
    sel = key_token_selection(predicted["level_scores"], (1.0,) * n, (1.0, 1.0))
    assert torch.equal(sel.indices.sort(1)[0], order.sort(1)[0])


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("phase", [1, 2])
def test_denoising_queries_reproduce_the_stored_draws(fx, trained, phase) -> None:
    dn = fx["train"]["dn"]
    label_q, box_q, mask, meta = trained[phase]["dn"]
    assert meta["num_dn"] == dn["dn_meta"]["num_denoising_queries"]
    assert meta["num_groups"] == dn["dn_meta"]["num_denoising_groups"]
    assert torch.equal(label_q, dn["dn_label_query"])
    assert torch.equal(box_q, dn["dn_bbox_query"])
    assert torch.equal(mask, dn["attn_mask"])


@pytest.mark.parametrize("phase", [1, 2])
def test_loss_terms_match_released(fx, trained, phase) -> None:
    ref = fx["train"][f"phase{phase}"]["losses"]
    assert set(trained[phase]["losses"]) == {official_loss_name(k) for k in ref}
    for name, theirs, ours, rel in train_loss_rows(fx, trained[phase], phase):
        assert rel <= TOL_LOSS, f"phase {phase} {name}: released {theirs:.7f}, ours {ours:.7f}, rel {rel:.2g}"


@pytest.mark.parametrize("phase", [1, 2])
def test_gradients_match_released(fx, trained, phase) -> None:
    for name, kind, rel, norm_rel, n_ref in grad_rows(fx, trained[phase], phase):
        assert kind in ("none", "norm", "elementwise"), f"phase {phase} {name}: {kind}"
        if kind == "norm":
            assert norm_rel <= TOL_TINY_GRAD_NORM and rel <= TOL_TINY_GRAD, \
                f"phase {phase} {name} (|g| {n_ref:.2g}): norm rel {norm_rel:.2g}, rel {rel:.2g}"
        elif kind == "elementwise":
            assert rel <= TOL_GRAD, f"phase {phase} {name}: rel {rel:.2g}"


# ---------------------------------------------------------------------------------------------- command line


class _HistoryBuffer:
    """Stands for an mmengine object in a released checkpoint (its module is not importable when loading)."""

    def __init__(self) -> None:
        self.data = [1.0, 2.0]


def _save_mmengine_like(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    mod = types.ModuleType("fake_mmengine_logging")
    _HistoryBuffer.__module__ = mod.__name__
    mod._HistoryBuffer = _HistoryBuffer  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    try:
        torch.save({"meta": {"epoch": 12, "iter": 3000, "cfg": "model = dict(...)"}, "state_dict": state_dict,
                    "message_hub": {"log_scalars": {"train/loss": _HistoryBuffer()}}}, path)
    finally:
        del sys.modules[mod.__name__]


def test_read_official_checkpoint_without_mmengine(fx, tmp_path) -> None:
    small = {k: v for k, v in list(fx["weights"].items())[:5]}
    _save_mmengine_like(tmp_path / "ckpt.pth", small)
    sd, meta = read_official_checkpoint(tmp_path / "ckpt.pth")
    assert meta == {"epoch": 12, "iter": 3000}
    assert list(sd) == list(small) and all(torch.equal(sd[k], small[k]) for k in small)
    torch.save(small, tmp_path / "bare.pth")
    assert list(read_official_checkpoint(tmp_path / "bare.pth")[0]) == list(small)


def test_convert_official_cli_writes_a_loadable_checkpoint(fx, model, tmp_path, capsys, monkeypatch) -> None:
    import sdconet.models.build
    from sdconet.checkpoint import load_checkpoint
    from sdconet.cli import main
    from sdconet.models.config import from_dict

    expected_cfg = official_config(fx["config"]["model_config"])

    def reuse_model(cfg):  # the conversion only reads the model: skip building another 40.9 M parameters
        assert cfg == expected_cfg
        return model

    monkeypatch.setattr(sdconet.models.build, "build_model", reuse_model)
    src, out = tmp_path / "released.pth", tmp_path / "run" / "converted.pt"
    _save_mmengine_like(src, fx["weights"])
    assert main(["convert-official", str(src), str(out), "--config", str(FIXTURE / "config.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["report"]["ok"] and res["report"]["unmapped"] == {} and res["report"]["unfilled"] == []
    side = json.loads(out.with_suffix(".json").read_text())
    assert from_dict(side["model"]) == expected_cfg
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    state = load_checkpoint(out, model, restore_rng=False)  # strict: every key present, none extra
    assert state["epoch"] == 11  # released meta epoch 12 = 12 completed epochs
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    # an unmapped key fails (exit 2, nothing written) unless allowed
    sd = dict(fx["weights"])
    sd["extra_branch.weight"] = torch.zeros(2)
    torch.save({"state_dict": sd}, src)
    bad = tmp_path / "bad.pt"
    assert main(["convert-official", str(src), str(bad), "--config", str(FIXTURE / "config.json")]) == 2
    assert "extra_branch.weight" in capsys.readouterr().err
    assert not bad.exists()


# ---------------------------------------------------------------------------------------------- report


def _markdown(fx: dict[str, Any], predicted: dict[str, Any], trained: dict[int, dict[str, Any]]) -> str:
    lines = ["| fixture tensor | shape | max abs diff | checked value | tolerance |", "|---|---|---|---|---|"]
    for name, shape, d, measured, tol in predict_rows(fx, predicted):
        lines.append(f"| {name} | {shape} | {d:.2e} | {measured:.2e} | {tol:g} |")
    lines += ["", "| loss term | released (phase 1) | ours | rel | released (phase 2) | ours | rel |",
              "|---|---|---|---|---|---|---|"]
    r1 = {r[0]: r for r in train_loss_rows(fx, trained[1], 1)}
    r2 = {r[0]: r for r in train_loss_rows(fx, trained[2], 2)}
    for name in r2:
        a = r1.get(name)
        left = f"{a[1]:.6f} | {a[2]:.6f} | {a[3]:.1e}" if a else "absent | absent | -"
        b = r2[name]
        lines.append(f"| {name} | {left} | {b[1]:.6f} | {b[2]:.6f} | {b[3]:.1e} |")
    lines += ["", "| gradient (released name) | phase 1: rel / norm rel / \\|g\\| "
              "| phase 2: rel / norm rel / \\|g\\| |", "|---|---|---|"]
    g1 = {r[0]: r for r in grad_rows(fx, trained[1], 1)}
    g2 = {r[0]: r for r in grad_rows(fx, trained[2], 2)}

    def cell(r: tuple[Any, ...]) -> str:
        return f"{r[2]:.1e} / {r[3]:.0e} / {r[4]:.3g}" if r[2] is not None else (
            "none on both sides" if r[1] == "none" else r[1])
    for name in g2:
        lines.append(f"| {name} | {cell(g1[name])} | {cell(g2[name])} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python tests/test_official_equivalence.py: the tables of docs/official_equivalence.md
    torch.set_num_threads(THREADS)
    fixture = load_fixture()
    m = build_official_model(fixture)
    pred_out = run_predict(m, fixture["inputs"]["hr"][0:1])
    train_out = {p: run_train(m, fixture["inputs"], p) for p in (1, 2)}
    print(_markdown(fixture, pred_out, train_out))

"""The released SDCoNet (mmdetection ``SA_DINO_SR_GR``) in this suite: parameter names, weights and config.

The released code (https://github.com/qiruo-ya/SDCoNet, an overlay on mmdetection 3.3.0) names its 446
state-dict entries in mmdetection's layout. :func:`official_to_model_name` maps each of them to this
model's name (one regular-expression rule per module family, table :data:`RULES`);
:func:`convert_official_state_dict` converts a whole state dict and reports every official key it could not
place and every model key it left empty, so nothing is dropped silently. :func:`official_config` builds the
:class:`~sdconet.models.config.SDCoNetConfig` of a released mmdetection model config with the released
behaviours on (``deform_residual="official"``, ``sr_decoder.official_view_quirk``, raw-logit pre-attention
ranking, the never-used SR parameters kept). ``python -m sdconet convert-official`` is the command-line form.

Layout differences the conversion handles:

* Swin PatchMerging: mmdetection's ``stages.{i}.downsample`` (after stage i) is timm's
  ``layers.{i+1}.downsample`` (before stage i+1), and its 4C inputs are in ``nn.Unfold`` order (channel-major,
  kernel positions (0,0), (0,1), (1,0), (1,1)); timm's are position-major with positions (0,0), (1,0), (0,1),
  (1,1). The reduction weight's columns and the norm's entries are permuted (as mmdetection's own converter
  does in the other direction).
* Several names: mmcv FFN ``ffn.layers.0.0`` / ``ffn.layers.1`` -> ``ffn.0`` / ``ffn.3`` (``mlp.fc1`` /
  ``mlp.fc2`` in Swin), transformer ``norms.{k}`` -> ``norm{k+1}``, the SR blocks' first LayerNorm ``norm9`` ->
  ``norm1``, ``reg_branches.{i}.{0,2,4}`` -> ``reg_branches.{i}.layers.{0,1,2}``, the SR head
  ``sr_module.sr_module.{0,1,3,4}`` -> ``head.{conv_after_body, conv_before_upsample, upsample, conv_last}``.
* ``memory_trans_fc`` / ``memory_trans_norm`` fill the one memory transform that the saliency module and the
  two-stage head share (it appears under two state-dict names here).
* Not loaded, but checked against the model: the Swin ``relative_position_index`` buffers (recomputed from the
  window size) and the ``level_filter_ratio`` / ``layer_filter_ratio`` buffers (configuration here; only the
  first ``enc_layers`` entries of the layer buffer are read by the released code).

Example:
    >>> cfg = official_config(json.load(open("config.json"))["model_config"])
    >>> model = build_model(cfg)
    >>> sd, report = convert_official_state_dict(read_official_checkpoint("sdconet.pth")[0], model)
    >>> assert report.ok, report.format()
    >>> model.load_state_dict(sd)
"""
from __future__ import annotations

import copy
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from sdconet.models.config import ConfigError, SDCoNetConfig, from_dict, preset, to_dict

__all__ = ["OFFICIAL_FLAGS", "RULES", "ConversionError", "ConversionReport", "official_to_model_name",
           "convert_official_tensor", "convert_official_state_dict", "official_config", "config_from_file",
           "read_official_checkpoint", "convert_checkpoint", "unfold_to_timm_order"]

#: Config values that switch on the released behaviours (spec 3.3, 3.5, 9; Appendix B).
OFFICIAL_FLAGS: dict[str, Any] = {
    "deform_residual": "official",
    "topk_score_mode": "official",
    "enhance_mcsp": "faithful",
    "bg_embed_size": 200,
    "sr_decoder": {"official_view_quirk": True, "keep_unused": True, "add_rgb_mean": True, "size_align": "resize"},
    "lr": {"kernel": "bicubic", "on_the_fly": True},
    "head_init": "copies",
    "neck": {"sr_conv_init": "kaiming_fan_out"},
}

_WB = r"(weight|bias)"

#: ``SRNet(upscale=2)``: the released code's constructor default, used when a released config leaves it out (the
#: released configs are all x2). A property of the released code, not a default of this suite's runs.
RELEASED_SR_UPSCALE = 2


def unfold_to_timm_order(t: Tensor, dim: int) -> Tensor:
    """Permute a PatchMerging axis of 4C entries from ``nn.Unfold`` order to timm's order.

    Unfold index ``c * 4 + 2 * dy + dx``; timm index ``p * C + c`` with p = 0, 1, 2, 3 for the kernel positions
    (dy, dx) = (0,0), (1,0), (0,1), (1,1). The same permutation serves weights and their gradients.

    Args:
        t: A tensor with 4C entries along ``dim`` (the reduction weight: dim 1; the norm's weight/bias: dim 0).
        dim: The axis to permute.
    """
    n = t.shape[dim]
    idx = torch.arange(n).view(n // 4, 4)[:, [0, 2, 1, 3]].t().reshape(-1)
    return t.index_select(dim, idx)


_UNFOLD_NORM: Callable[[Tensor], Tensor] = lambda t: unfold_to_timm_order(t, 0)  # noqa: E731
_UNFOLD_REDUCTION: Callable[[Tensor], Tensor] = lambda t: unfold_to_timm_order(t, 1)  # noqa: E731


def _stage_down(m: re.Match[str]) -> str:
    return f"backbone.layers.{int(m[1]) + 1}.downsample.{m[2]}.{m[3]}"


#: (official-name pattern (full match), model-name template or function, value transform or None).
#: Names whose value is derived rather than loaded (``relative_position_index``) map too; see
#: :func:`convert_official_state_dict`.
RULES: list[tuple[str, str | Callable[[re.Match[str]], str], Callable[[Tensor], Tensor] | None]] = [
    # --- shared Swin encoder (mmdet SwinTransformer layout -> timm layout)
    (rf"backbone\.patch_embed\.projection\.{_WB}", r"backbone.patch_embed.proj.\1", None),
    (rf"backbone\.patch_embed\.norm\.{_WB}", r"backbone.patch_embed.norm.\1", None),
    (rf"backbone\.stages\.(\d+)\.blocks\.(\d+)\.(norm1|norm2)\.{_WB}", r"backbone.layers.\1.blocks.\2.\3.\4", None),
    (rf"backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(qkv|proj)\.{_WB}",
     r"backbone.layers.\1.blocks.\2.attn.\3.\4", None),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(relative_position_bias_table|relative_position_index)",
     r"backbone.layers.\1.blocks.\2.attn.\3", None),
    (rf"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.{_WB}", r"backbone.layers.\1.blocks.\2.mlp.fc1.\3",
     None),
    (rf"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.{_WB}", r"backbone.layers.\1.blocks.\2.mlp.fc2.\3",
     None),
    (rf"backbone\.stages\.(\d+)\.downsample\.(norm)\.{_WB}", _stage_down, _UNFOLD_NORM),
    (r"backbone\.stages\.(\d+)\.downsample\.(reduction)\.(weight)", _stage_down, _UNFOLD_REDUCTION),
    (rf"backbone\.norm(\d+)\.{_WB}", r"backbone.norm\1.\2", None),
    # --- neck (same layout)
    (rf"neck\.(convs\.\d+|extra_convs\.\d+|extra_sr)\.(conv|gn)\.{_WB}", r"neck.\1.\2.\3", None),
    # --- saliency-aware encoder
    (rf"encoder\.layers\.(\d+)\.self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.{_WB}",
     r"detector.encoder.layers.\1.self_attn.\2.\3", None),
    (r"encoder\.layers\.(\d+)\.pre_attention\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
     r"detector.encoder.layers.\1.pre_attention.\2", None),
    (rf"encoder\.layers\.(\d+)\.pre_norm\.{_WB}", r"detector.encoder.layers.\1.pre_norm.\2", None),
    (rf"encoder\.layers\.(\d+)\.norms\.0\.{_WB}", r"detector.encoder.layers.\1.norm1.\2", None),
    (rf"encoder\.layers\.(\d+)\.norms\.1\.{_WB}", r"detector.encoder.layers.\1.norm2.\2", None),
    (rf"encoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.{_WB}", r"detector.encoder.layers.\1.ffn.0.\2", None),
    (rf"encoder\.layers\.(\d+)\.ffn\.layers\.1\.{_WB}", r"detector.encoder.layers.\1.ffn.3.\2", None),
    (r"encoder\.(background_embedding\.(?:row|col)_embed\.weight)", r"detector.encoder.\1", None),
    (rf"encoder\.enhance_mcsp\.{_WB}", r"detector.encoder.enhance_mcsp.\1", None),
    # --- DINO decoder
    (r"decoder\.layers\.(\d+)\.self_attn\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
     r"detector.head.decoder.layers.\1.self_attn.\2", None),
    (rf"decoder\.layers\.(\d+)\.cross_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.{_WB}",
     r"detector.head.decoder.layers.\1.cross_attn.\2.\3", None),
    (rf"decoder\.layers\.(\d+)\.norms\.0\.{_WB}", r"detector.head.decoder.layers.\1.norm1.\2", None),
    (rf"decoder\.layers\.(\d+)\.norms\.1\.{_WB}", r"detector.head.decoder.layers.\1.norm2.\2", None),
    (rf"decoder\.layers\.(\d+)\.norms\.2\.{_WB}", r"detector.head.decoder.layers.\1.norm3.\2", None),
    (rf"decoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.{_WB}", r"detector.head.decoder.layers.\1.ffn.0.\2", None),
    (rf"decoder\.layers\.(\d+)\.ffn\.layers\.1\.{_WB}", r"detector.head.decoder.layers.\1.ffn.3.\2", None),
    (rf"decoder\.ref_point_head\.layers\.(\d+)\.{_WB}", r"detector.head.decoder.ref_point_head.layers.\1.\2", None),
    (rf"decoder\.norm\.{_WB}", r"detector.head.decoder.norm.\1", None),
    # --- heads (index num_dec_layers = the two-stage proposal head in both layouts)
    (rf"bbox_head\.cls_branches\.(\d+)\.{_WB}", r"detector.head.heads.cls_branches.\1.\2", None),
    (rf"bbox_head\.reg_branches\.(\d+)\.([024])\.{_WB}",
     lambda m: f"detector.head.heads.reg_branches.{m[1]}.layers.{int(m[2]) // 2}.{m[3]}", None),
    # --- detector-level parameters
    (r"query_embedding\.weight", "detector.head.query_embedding.weight", None),
    (rf"memory_trans_fc\.{_WB}", r"detector.memory_transform.fc.\1", None),
    (rf"memory_trans_norm\.{_WB}", r"detector.memory_transform.norm.\1", None),
    (rf"enc_mask_predictor\.(layer1\.[01]|layer2\.[024])\.{_WB}", r"detector.saliency.mask_predictor.\1.\2", None),
    (r"alpha", "detector.saliency.alpha", None),
    (r"level_embed", "detector.level_embed.weight", None),
    (r"dn_query_generator\.label_embedding\.weight", "detector.head.dn_generator.label_embedding.weight", None),
    (r"(level_filter_ratio|layer_filter_ratio)", r"cfg.\1", None),
    # --- SR decoder (SRNet)
    (rf"sr_module\.(up_layer_pre|up_layer\d+)\.norm\.{_WB}", r"sr_decoder.\1.norm.\2", None),
    (r"sr_module\.(up_layer_pre|up_layer\d+)\.upconv\.weight", r"sr_decoder.\1.upconv.weight", None),
    (rf"sr_module\.layers\.(\d+)\.blocks\.(\d+)\.norm9\.{_WB}", r"sr_decoder.layers.\1.blocks.\2.norm1.\3", None),
    (rf"sr_module\.layers\.(\d+)\.blocks\.(\d+)\.(norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.{_WB}",
     r"sr_decoder.layers.\1.blocks.\2.\3.\4", None),
    (r"sr_module\.layers\.(\d+)\.blocks\.(\d+)\.attn\.(relative_position_bias_table|relative_position_index)",
     r"sr_decoder.layers.\1.blocks.\2.attn.\3", None),
    (rf"sr_module\.norm\.{_WB}", r"sr_decoder.norm.\1", None),
    (rf"sr_module\.patch_unembed\.proj\.{_WB}", r"sr_decoder.patch_unembed.\1", None),
    (rf"sr_module\.sr_module\.0\.{_WB}", r"sr_decoder.head.conv_after_body.\1", None),
    (rf"sr_module\.sr_module\.1\.{_WB}", r"sr_decoder.head.conv_before_upsample.\1", None),
    (rf"sr_module\.sr_module\.3\.(\d+)\.{_WB}", r"sr_decoder.head.upsample.\1.\2", None),
    (rf"sr_module\.sr_module\.4\.{_WB}", r"sr_decoder.head.conv_last.\1", None),
    # never used by the released forward pass; built with sr_decoder.keep_unused
    (rf"sr_module\.input_proj_sr\.(\d+)\.([01])\.{_WB}", r"sr_decoder.input_proj_sr.\1.\2.\3", None),
    (rf"sr_module\.(norm[012])\.{_WB}", r"sr_decoder.\1.\2", None),
]
_COMPILED = [(re.compile(p), t, f) for p, t, f in RULES]


def official_to_model_name(name: str) -> tuple[str, Callable[[Tensor], Tensor] | None] | None:
    """This model's name for a released parameter name, and the value transform (None: copy as is).

    Returns None when no rule matches. ``relative_position_index`` maps to the model's (non-persistent)
    buffer and the filter-ratio buffers to ``cfg.<field>``; those are checked, not loaded.
    """
    for pattern, template, transform in _COMPILED:
        m = pattern.fullmatch(name)
        if m:
            return (template(m) if callable(template) else m.expand(template)), transform
    return None


def convert_official_tensor(name: str, value: Tensor) -> tuple[str, Tensor]:
    """``(model name, value in the model's layout)`` of one released tensor (a weight or its gradient).

    Raises:
        KeyError: no rule maps ``name``.
    """
    hit = official_to_model_name(name)
    if hit is None:
        raise KeyError(f"no mapping for the released parameter {name!r}")
    target, transform = hit
    return target, (transform(value) if transform is not None else value)


@dataclass
class ConversionReport:
    """What :func:`convert_official_state_dict` did with every key.

    Attributes:
        mapped: released name -> the model names it filled (two for the shared memory transform).
        transformed: released names whose values were permuted (PatchMerging).
        checked: released names not loaded because the model derives them, each with what it was checked
            against (all equal).
        unmapped: released name -> why it could not be placed (no rule, or no such model entry).
        unfilled: model state-dict names that no released key filled.
        shape_mismatch: released name -> "model_name: released shape vs model shape".
        value_mismatch: checked released names whose value differs from the model's / the config's.
    """

    mapped: dict[str, list[str]] = field(default_factory=dict)
    transformed: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)
    unfilled: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, str] = field(default_factory=dict)
    value_mismatch: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every released key was placed or checked and every model key was filled."""
        return not (self.unmapped or self.unfilled or self.shape_mismatch or self.value_mismatch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: counts, and every problem key in full."""
        return {"ok": self.ok, "mapped": len(self.mapped), "transformed": list(self.transformed),
                "checked": len(self.checked), "unmapped": dict(self.unmapped), "unfilled": list(self.unfilled),
                "shape_mismatch": dict(self.shape_mismatch), "value_mismatch": dict(self.value_mismatch)}

    def format(self) -> str:
        """Human-readable lines: the counts, then every unmapped / unfilled / mismatched key."""
        lines = [f"mapped {len(self.mapped)} released keys ({len(self.transformed)} permuted), "
                 f"checked {len(self.checked)} derived buffers"]
        for title, items in (("unmapped released key", self.unmapped), ("shape mismatch", self.shape_mismatch),
                             ("value mismatch", self.value_mismatch)):
            lines += [f"{title}: {k} ({v})" for k, v in items.items()]
        lines += [f"unfilled model key: {k}" for k in self.unfilled]
        return "\n".join(lines)


def _alias_groups(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """The model's state dict (tensors kept) and, per name, every name sharing that tensor."""
    own = model.state_dict(keep_vars=True)
    by_id: dict[int, list[str]] = {}
    for k, v in own.items():
        by_id.setdefault(id(v), []).append(k)
    return own, {k: by_id[id(v)] for k, v in own.items()}


def _check_derived(name: str, target: str, value: Tensor, model: nn.Module, report: ConversionReport) -> None:
    """Compare a released buffer that the model derives (index buffer or config ratio) with the model's."""
    if target.startswith("cfg."):
        cfg = getattr(model, "cfg", None)
        if cfg is None:
            report.unmapped[name] = "model has no cfg to check the filter ratio against"
            return
        ours = torch.tensor(getattr(cfg, target[4:]), dtype=torch.float64)
        theirs = value.detach().double().flatten()
        if target.endswith("layer_filter_ratio"):  # the released buffer has 6 entries; enc_layers are read
            theirs = theirs[: ours.numel()]
        if theirs.shape != ours.shape or not torch.equal(theirs, ours):
            report.value_mismatch[name] = f"released {theirs.tolist()} vs {target} {ours.tolist()}"
        else:
            report.checked[name] = target
        return
    module_name, _, attr = target.rpartition(".")
    try:
        ours_t = getattr(model.get_submodule(module_name), attr)
    except AttributeError:
        report.unmapped[name] = f"model has no buffer {target}"
        return
    if not isinstance(ours_t, Tensor) or ours_t.shape != value.shape or not torch.equal(ours_t.cpu().long(),
                                                                                        value.long()):
        report.value_mismatch[name] = f"differs from the model's {target}"
    else:
        report.checked[name] = target


def convert_official_state_dict(official_sd: Mapping[str, Tensor],
                                model: nn.Module) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map a released state dict onto ``model``'s names and layouts.

    Args:
        official_sd: The released (mmdetection) state dict, e.g. ``checkpoint["state_dict"]``.
        model: The target model (an :class:`~sdconet.models.sdconet.SDCoNet` built with
            :func:`official_config`); read only, nothing is loaded into it.

    Returns:
        ``(state_dict, report)``: the converted entries (cast to the model's dtypes; load with
        ``model.load_state_dict(state_dict)`` when ``report.ok``) and the :class:`ConversionReport`.
    """
    own, aliases = _alias_groups(model)
    out: dict[str, Tensor] = {}
    report = ConversionReport()
    for name, value in official_sd.items():
        hit = official_to_model_name(name)
        if hit is None:
            report.unmapped[name] = "no rule for this released name"
            continue
        target, transform = hit
        if target.endswith("relative_position_index") or target.startswith("cfg."):
            _check_derived(name, target, value, model, report)
            continue
        if target not in own:
            report.unmapped[name] = f"model has no {target}"
            continue
        v = transform(value) if transform is not None else value
        if tuple(v.shape) != tuple(own[target].shape):
            report.shape_mismatch[name] = f"{target}: {tuple(v.shape)} vs {tuple(own[target].shape)}"
            continue
        if transform is not None:
            report.transformed.append(name)
        v = v.detach().to(own[target].dtype).contiguous().clone()
        for alias in aliases[target]:
            out[alias] = v
        report.mapped[name] = list(aliases[target])
    report.unfilled = [k for k in own if k not in out]
    return out, report


# ---------------------------------------------------------------------------------------------- config


def _get(d: Mapping[str, Any] | None, path: str, default: Any = None) -> Any:
    node: Any = d
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(f"released config not expressible in this suite: {msg}")


def _match_costs(model_config: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    names = {"FocalLossCost": "cost_class", "BBoxL1Cost": "cost_bbox", "IoUCost": "cost_giou"}
    for cost in _get(model_config, "train_cfg.assigner.match_costs", []) or []:
        key = names.get(str(cost.get("type")))
        _require(key is not None, f"unknown match cost {cost.get('type')!r}")
        out[str(key)] = float(cost.get("weight", 1.0))
    return out


def official_config(model_config: Mapping[str, Any] | None = None, *,
                    num_classes: int | None = None) -> SDCoNetConfig:
    """The suite config of a released mmdetection SDCoNet model config, with the released behaviours on.

    Args:
        model_config: The resolved ``model`` dict of an mmdetection config (``SA_DINO_SR_GR`` or
            ``SA_DINO_SR``), e.g. ``config.json["model_config"]`` of the reference fixture. Absent keys take
            the values of the released ``configs/dino/sa_dino_sr_swin.py`` (and of the released constructors).
            None: the released full-size model (the ``paper`` preset) with the released behaviours.
        num_classes: Overrides ``bbox_head.num_classes`` (default: the config's, else 10).

    Returns:
        The validated :class:`SDCoNetConfig`: :data:`OFFICIAL_FLAGS`, the fixed (``SA_DINO_SR_GR``, alpha 1)
        or learnable (``SA_DINO_SR``) saliency alpha, every filter ratio 1 (the released constructor
        defaults) and the widths, depths and loss settings of ``model_config``.

    Raises:
        ConfigError: a setting the suite cannot express (different head counts or FFN widths in the encoder
            and the decoder, ``max_per_img`` other than 300, another detector type, ...).
    """
    flags = copy.deepcopy(OFFICIAL_FLAGS)
    if model_config is None:
        flags["saliency"] = {"alpha_mode": "fixed", "alpha_init": 1.0}
        flags["lr"]["scale"] = 2
        return preset("paper", num_classes=10 if num_classes is None else num_classes, **flags)
    mc = model_config
    kind = mc.get("type", "SA_DINO_SR_GR")
    _require(kind in ("SA_DINO_SR_GR", "SA_DINO_SR"), f"model.type {kind!r} (SA_DINO_SR_GR or SA_DINO_SR)")
    bb, sr, neck = mc.get("backbone") or {}, mc.get("sr_cfg") or {}, mc.get("neck") or {}
    enc, dec = _get(mc, "encoder.layer_cfg", {}), _get(mc, "decoder.layer_cfg", {})
    heads = {int(_get(enc, "self_attn_cfg.num_heads", 8)), int(_get(dec, "self_attn_cfg.num_heads", 8)),
             int(_get(dec, "cross_attn_cfg.num_heads", 8))}
    _require(len(heads) == 1, f"one head count for every attention, got {sorted(heads)}")
    ffn = {int(_get(enc, "ffn_cfg.feedforward_channels", 2048)), int(_get(dec, "ffn_cfg.feedforward_channels", 2048))}
    _require(len(ffn) == 1, f"one FFN width in encoder and decoder, got {sorted(ffn)}")
    hidden = int(neck.get("out_channels", 256))
    _require(int(_get(mc, "positional_encoding.num_feats", 128)) * 2 == hidden, "positional num_feats != d / 2")
    _require(int(_get(mc, "test_cfg.max_per_img", 300)) == 300, "test_cfg.max_per_img must be 300")
    _require(sr.get("upsampler", "pixelshuffle") == "pixelshuffle" and float(sr.get("img_range", 1.0)) == 1.0,
             "sr_cfg needs upsampler='pixelshuffle' and img_range=1.0")
    _require(_get(mc, "dn_cfg.group_cfg.dynamic", True) is True, "dn_cfg.group_cfg.dynamic must be True")
    sal = mc.get("salience_criterion") or {}
    _require(float(sal.get("noise_scale", 0.0)) == 0.0, "salience_criterion.noise_scale must be 0")
    loss_cls = _get(mc, "bbox_head.loss_cls", {})
    _require(float(loss_cls.get("alpha", 0.25)) == 0.25 and float(loss_cls.get("gamma", 2.0)) == 2.0,
             "bbox_head.loss_cls needs focal alpha 0.25, gamma 2")
    enc_layers = int(_get(mc, "encoder.num_layers", 6))
    swin = {"pretrained": None, "embed_dim": int(bb.get("embed_dims", 96)),
            "depths": tuple(bb.get("depths", (2, 2, 6, 2))), "num_heads": tuple(bb.get("num_heads", (3, 6, 12, 24))),
            "window_size": int(bb.get("window_size", 7)), "mlp_ratio": float(bb.get("mlp_ratio", 4)),
            "drop_path_rate": float(bb.get("drop_path_rate", 0.2)), "patch_size": int(bb.get("patch_size", 4))}
    sr_dec = {**flags.pop("sr_decoder"), "embed_dim": int(sr.get("embed_dim", 768)),
              "depths": tuple(sr.get("depths", (2, 6, 2, 2))), "num_heads": tuple(sr.get("num_heads", (6, 12, 6, 3))),
              "window_size": int(sr.get("window_size", 8)), "mlp_ratio": float(sr.get("mlp_ratio", 2)),
              "drop_path_rate": float(sr.get("drop_path_rate", 0.1))}
    d: dict[str, Any] = {
        "swin": swin, "sr_decoder": sr_dec,
        "lr": {**flags.pop("lr"), "scale": int(sr.get("upscale", RELEASED_SR_UPSCALE))},
        "neck": {"out_channels": hidden, "num_groups": int(_get(neck, "norm_cfg.num_groups", 32)),
                 "sr_channels": 2 * int((neck.get("in_channels") or [192, 384, 768])[-1]), **flags.pop("neck")},
        "saliency": {"alpha_mode": "fixed" if kind == "SA_DINO_SR_GR" else "learnable", "alpha_init": 1.0,
                     "loss_weight": float(sal.get("loss_weight", 2.0)), "focal_alpha": float(sal.get("alpha", 0.25)),
                     "focal_gamma": float(sal.get("gamma", 2.0))},
        "num_classes": int(num_classes if num_classes is not None else _get(mc, "bbox_head.num_classes", 10)),
        "num_queries": int(mc.get("num_queries", 300)),
        "enc_layers": enc_layers, "dec_layers": int(_get(mc, "decoder.num_layers", 6)),
        "hidden_dim": hidden, "nheads": heads.pop(), "dim_feedforward": ffn.pop(),
        "enc_n_points": int(_get(enc, "self_attn_cfg.num_points", 4)),
        "dec_n_points": int(_get(dec, "cross_attn_cfg.num_points", 4)),
        "num_feature_levels": int(neck.get("num_outs", 4)),
        "pos_temperature": float(_get(mc, "positional_encoding.temperature", 20)),
        "level_filter_ratio": (1.0,) * int(neck.get("num_outs", 4)), "layer_filter_ratio": (1.0,) * enc_layers,
        "topk_sa": int(enc.get("topk_sa", 100)),
        "num_dn_queries": int(_get(mc, "dn_cfg.group_cfg.num_dn_queries", 100)),
        "label_noise_scale": float(_get(mc, "dn_cfg.label_noise_scale", 0.5)),
        "box_noise_scale": float(_get(mc, "dn_cfg.box_noise_scale", 1.0)),
        "loss_cls_weight": float(loss_cls.get("loss_weight", 1.0)),
        "loss_bbox_weight": float(_get(mc, "bbox_head.loss_bbox.loss_weight", 5.0)),
        "loss_giou_weight": float(_get(mc, "bbox_head.loss_iou.loss_weight", 2.0)),
        **_match_costs(mc),
        "sr_loss_weight": float(mc.get("sr_loss_weight", 5.0)),
        **flags,
    }
    return from_dict(d)


# ---------------------------------------------------------------------------------------------- checkpoints


class _Opaque:
    """Stand-in for any pickled object that is not a tensor (mmengine message hub, numpy scalars, ...)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Opaque":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


_TENSOR_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                   ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter"),
                   ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size")}


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers; every other global becomes :class:`_Opaque` (nothing runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TENSOR_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                  torch.dtype)):
            return super().find_class(module, name)
        return _Opaque


class _TensorOnlyPickle:
    """``pickle_module`` for :func:`torch.load` built on :class:`_TensorOnlyUnpickler`."""

    Unpickler = _TensorOnlyUnpickler
    __name__ = "sdconet.official._TensorOnlyPickle"

    @staticmethod
    def load(fh: Any, **kwargs: Any) -> Any:
        return _TensorOnlyUnpickler(fh, **kwargs).load()


def read_official_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a released (mmdetection / mmengine) checkpoint without mmengine.

    Tries ``torch.load(weights_only=True)``; a checkpoint with mmengine objects (message hub, optimizer
    wrapper, config) is read again with an unpickler that rebuilds only tensors and plain containers and
    replaces every other object by an inert stand-in, so no pickled code runs and mmengine is not needed.

    Args:
        path: ``.pth`` file: a dict with ``state_dict`` (mmengine checkpoint) or a bare state dict.

    Returns:
        ``(state_dict, meta)``: the tensor entries, and the checkpoint's ``meta`` ``epoch`` / ``iter`` when present
        (plus ``non_tensor_entries``: the names of state-dict entries that are not tensors, if any).

    Raises:
        FileNotFoundError: no such file.
        ValueError: no state dict of tensors inside.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"released checkpoint not found: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = torch.load(str(path), map_location="cpu", weights_only=False,
                         pickle_module=_TensorOnlyPickle)  # type: ignore[arg-type]
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
        meta = {k: v for k, v in obj["meta"].items() if isinstance(v, (int, float, str)) and k in ("epoch", "iter")}
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: neither a state dict nor a dict with 'state_dict'")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise ValueError(f"{path}: no tensors in the state dict")
    others = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if others:
        meta["non_tensor_entries"] = others
    return sd, meta


class ConversionError(ValueError):
    """A released checkpoint that does not convert cleanly (the message holds the whole report)."""


def config_from_file(path: str | Path) -> SDCoNetConfig:
    """:func:`official_config` of a JSON file: an mmdetection model config (``{"type": "SA_DINO_SR_GR", ...}``), a
    dumped mmengine config (``{"model": {...}}``) or the reference fixture's ``config.json`` (``model_config``)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the released config as JSON ({exc})") from None
    for candidate in (doc.get("model_config"), doc, doc.get("model")) if isinstance(doc, Mapping) else ():
        if isinstance(candidate, Mapping) and "type" in candidate:
            return official_config(candidate)
    raise ConfigError(f"{path}: no mmdetection model config in it (a dict with 'type', under 'model' or "
                      "'model_config')")


def convert_checkpoint(src: str | Path, out: str | Path, config: str | Path | None = None,
                       allow_unmapped: bool = False) -> dict[str, Any]:
    """Convert a released checkpoint into a suite checkpoint (``python -m sdconet convert-official``).

    Writes ``out`` in the training-checkpoint format of :mod:`sdconet.checkpoint` (``model`` = the converted state
    dict; ``epoch`` = the released ``meta.epoch`` - 1, i.e. the last completed 0-based epoch, or -1 when unknown;
    no optimiser state) and ``out`` with suffix ``.json``: ``{"model": SDCoNetConfig dict, "converted_from",
    "report"}``, the model settings a run specification needs to evaluate it.

    Args:
        src: The released ``.pth`` (read by :func:`read_official_checkpoint`).
        out: The suite checkpoint to write.
        config: JSON released config (:func:`config_from_file`); None: the released full-size model with the
            checkpoint's number of classes.
        allow_unmapped: Write even when keys stay unmapped or unfilled (unfilled ones keep a seed-0 random init).

    Returns:
        ``{"checkpoint", "model_config", "epoch", "report"}`` (``report``: :meth:`ConversionReport.to_dict`).

    Raises:
        ConversionError: the conversion is not clean and ``allow_unmapped`` is False (nothing is written).
    """
    from benchcore.atomic import atomic_write_json  # noqa: PLC0415
    from sdconet.checkpoint import save_checkpoint  # noqa: PLC0415
    from sdconet.cli import strict_json  # noqa: PLC0415
    from sdconet.models.build import build_model  # noqa: PLC0415

    out = Path(out)
    if out.suffix == ".json":
        raise ValueError(f"{out}: the checkpoint must not end in .json (its settings go to OUT with suffix .json)")
    sd, meta = read_official_checkpoint(src)
    if config is not None:
        cfg = config_from_file(config)
    else:
        cls = sd.get("bbox_head.cls_branches.0.weight")
        cfg = official_config(num_classes=int(cls.shape[0]) if cls is not None else None)
    with torch.random.fork_rng(devices=[]):  # a reproducible init for unfilled keys, the caller's RNG untouched
        torch.manual_seed(0)
        model = build_model(cfg)
    converted, report = convert_official_state_dict(sd, model)
    for name in meta.pop("non_tensor_entries", []):
        report.unmapped[name] = "not a tensor in the checkpoint"
    if not report.ok and not allow_unmapped:
        raise ConversionError(f"{src} does not convert cleanly (pass --allow-unmapped to write it anyway):\n"
                              + report.format())
    model.load_state_dict(converted, strict=report.ok)
    out.parent.mkdir(parents=True, exist_ok=True)
    epoch = int(meta["epoch"]) - 1 if isinstance(meta.get("epoch"), int) else -1
    source = {"converted_from": str(Path(src).resolve()), "released_meta": meta}
    save_checkpoint(out, model, None, None, None, epoch, {"model": to_dict(cfg), **source},
                    extra={**source, "report": report.to_dict()})
    sidecar = out.with_suffix(".json")
    atomic_write_json(sidecar, strict_json({"model": to_dict(cfg), **source, "report": report.to_dict()}))
    return {"checkpoint": str(out), "model_config": str(sidecar), "epoch": epoch, "report": report.to_dict()}

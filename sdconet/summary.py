"""Per-component parameter summary of an SDCoNet / SerialSDCoNet model (compare with spec Appendix A).

Every parameter is counted once, in the first component (in the order of :data:`_COMPONENTS`) that holds it
(e.g. the memory transform shared by the saliency module and the two-stage head counts under ``saliency``).

Totals:

* ``total``: every parameter of the model.
* ``sr_only``: parameters used only by the SR task (SDCoNet: SR decoder + the neck's SR conv; serial: the whole
  SR network). This is the spec's "SR-only (training)" column; it includes the SR decoder's never-used parity
  modules when ``sr_decoder.keep_unused`` is set.
* ``detection``: ``total - sr_only``, the spec's "inference path" column (it includes the 3 k-parameter CDN label
  embedding, which only training uses, as the spec does).
* ``inference_path``: parameters the predict path runs: SDCoNet = ``detection`` (the SR branch is skipped);
  serial = ``total - unused`` (the SR network produces the detector's input; the spec's serial row lists only
  the detector here).
* ``training_only``: parameters only training runs (SDCoNet: ``sr_only - unused``; serial: 0).
* ``unused``: the SR decoder's never-called parity modules (``keep_unused``; 0.374 M for the paper preset).

``inference_path + training_only + unused == total``.

Example::

    python -m sdconet summary --preset paper            # JSON on stdout
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

__all__ = ["parameter_summary", "count"]

Getter = Callable[[nn.Module], list[nn.Module | nn.Parameter | None]]


def count(objs: list[nn.Module | nn.Parameter | None], seen: set[int] | None = None) -> int:
    """Parameters of ``objs`` (modules or parameters; None skipped), each tensor once; marks them in ``seen``."""
    seen = set() if seen is None else seen
    n = 0
    for o in objs:
        if o is None:
            continue
        params = [o] if isinstance(o, nn.Parameter) else list(o.parameters())
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
    return n


def _det(m: nn.Module) -> Any:
    return m.detector


def _sr_unused(m: nn.Module) -> list[nn.Module | None]:
    dec = getattr(m, "sr_decoder", None)
    if dec is None:
        return []
    return [getattr(dec, n, None) for n in ("input_proj_sr", "norm0", "norm1", "norm2")]


_COMPONENTS: list[tuple[str, Getter]] = [
    ("sr_encoder", lambda m: [getattr(m, "sr_backbone", None)]),
    ("encoder", lambda m: [m.backbone]),
    ("neck_sr", lambda m: [getattr(m, "sr_neck", None), getattr(m.neck, "extra_sr", None)]),
    ("neck_det", lambda m: [m.neck]),
    ("saliency", lambda m: [_det(m).saliency, _det(m).memory_transform, _det(m).level_embed]),
    ("heads", lambda m: [_det(m).head.heads]),
    ("detection_encoder", lambda m: [_det(m).encoder]),
    ("decoder", lambda m: [_det(m).head.decoder]),
    ("query_embeddings", lambda m: [_det(m).head.query_embedding, _det(m).head.dn_generator]),
    ("sr_decoder", lambda m: [getattr(m, "sr_decoder", None)]),
]

_DETAIL: list[tuple[str, Getter]] = [
    ("saliency_predictor", lambda m: [_det(m).saliency]),
    ("memory_transform", lambda m: [_det(m).memory_transform]),
    ("level_embed", lambda m: [_det(m).level_embed]),
    ("query_embedding", lambda m: [_det(m).head.query_embedding]),
    ("dn_label_embedding", lambda m: [_det(m).head.dn_generator]),
    ("sr_decoder_unused", _sr_unused),
]


def parameter_summary(model: nn.Module) -> dict[str, Any]:
    """Parameter counts per component and the totals described in the module docstring.

    Args:
        model: An ``SDCoNet`` or ``SerialSDCoNet`` (a DDP wrapper is unwrapped); meta-device models work.

    Returns:
        ``{"model", "components": {name: int}, "detail": {name: int}, "totals": {total, sr_only, detection,
        inference_path, training_only, unused}, "millions": {same keys as components + totals, 3 decimals}}``.
        Components absent from the model (e.g. ``sr_decoder`` without SR branch) are 0.
    """
    model = getattr(model, "module", model)
    seen: set[int] = set()
    comps = {name: count(get(model), seen) for name, get in _COMPONENTS}
    rest = count([model], seen)
    if rest:
        comps["other"] = rest
    detail = {name: count(get(model)) for name, get in _DETAIL}
    total = count([model])
    serial = hasattr(model, "sr_backbone")
    sr_only = comps["neck_sr"] + comps["sr_decoder"] + comps["sr_encoder"]
    unused = detail["sr_decoder_unused"]
    inference = total - unused if serial else total - sr_only
    totals = {"total": total, "sr_only": sr_only, "detection": total - sr_only, "inference_path": inference,
              "training_only": total - inference - unused, "unused": unused}
    millions = {k: round(v / 1e6, 3) for k, v in {**comps, **totals}.items()}
    return {"model": type(model).__name__, "components": comps, "detail": detail, "totals": totals,
            "millions": millions}

"""Multi-scale deformable attention (Deformable-DETR; spec 3.5/3.6 and 10 row 16).

The parameters and their initialisation (zero offset weights, the per-head direction bias grid scaled by the
point index, zero attention weights, Xavier value/output projections) are the maintained ones from ultralytics
(``ultralytics.nn.modules.transformer.MSDeformAttn``). The sampling kernel computes what ultralytics' and
mmcv's ``multi_scale_deformable_attn_pytorch`` compute (``grid_sample(align_corners=False,
padding_mode="zeros")`` on a value laid out as (B, N, heads, C/heads)), reorganised to run twice as fast on the
CPU (see :func:`multi_scale_deformable_attn`; a test holds it equal to ultralytics' kernel).

``forward`` is re-implemented too, because ultralytics' version accepts reference points of shape
(B, Q, 1, 2|4) only (it broadcasts one point over all levels, which is enough for RT-DETR). The encoder
and the DINO decoder need **per-level** reference points (B, Q, L, 2|4) (scaled by the valid ratios of
each level), so the sampling locations are built with mmcv's (B, Q, heads, L, P, 2) layout:

* 2-D points: ``loc = ref + offset / (W_l, H_l)``;
* 4-D boxes: ``loc = ref_xy + offset / P * ref_wh * 0.5``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from ultralytics.nn.modules.transformer import MSDeformAttn as _UltralyticsMSDeformAttn
from ultralytics.nn.modules.utils import multi_scale_deformable_attn_pytorch

from sdconet.models.host import device_tensor

__all__ = ["MSDeformAttn", "multi_scale_deformable_attn", "sampling_by_grid_sample", "shapes_as_list"]


def shapes_as_list(spatial_shapes: Tensor | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(L, 2) spatial shapes (H, W) as a list of int tuples (what the sampling kernel splits by)."""
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


#: Levels with at most this many positions (H*W) are sampled through a dense interpolation matrix (CPU). 64 (the
#: 8x8 and 4x4 levels at 512 HR): at 256 the kernel alone was faster under autograd, the whole training step not.
DENSE_MAX_POSITIONS = 64
_CORNER_DX = (0, 1, 0, 1)
_CORNER_DY = (0, 0, 1, 1)


@contextlib.contextmanager
def sampling_by_grid_sample() -> Iterator[None]:
    """Sample every level with ``grid_sample`` while the block runs (FLOP counting: counters skip
    ``grid_sample``, as they did on the official code, but would count the dense path's matrix product)."""
    global DENSE_MAX_POSITIONS
    saved, DENSE_MAX_POSITIONS = DENSE_MAX_POSITIONS, 0
    try:
        yield
    finally:
        DENSE_MAX_POSITIONS = saved


def _sample_level_dense(value: Tensor, grid: Tensor, weights: Tensor, h: int, w: int) -> Tensor:
    """One small level's weighted bilinear samples as a matrix product: ``value @ A^T``.

    ``A`` (B*heads, Q, H*W) holds, for each query, the attention weight times the bilinear weight of each of the
    four corners around each of its P points (``grid_sample(align_corners=False, padding_mode="zeros")``
    conventions: corners off the map contribute nothing). On a small map (the /32 and /64 levels: 8x8 and 4x4 at
    512 HR) building ``A`` and one batched matmul is cheaper than ``grid_sample`` and its backward, whose
    cost does not shrink with the map; autograd differentiates it like the interpolation it is.

    Args:
        value: (B*heads, C_h, H*W).
        grid: (B*heads, Q, P, 2) sampling points in grid_sample's [-1, 1] (x, y).
        weights: (B*heads, 1, Q, P) attention weights.
        h, w: Level size.

    Returns:
        (B*heads, C_h, Q): sum over the P points of weight x sampled value.
    """
    n, q, p, _ = grid.shape
    xy = (grid + 1) * grid.new_tensor([w / 2, h / 2]) - 0.5  # pixel coordinates, centres at integers
    xy0 = xy.detach().floor()
    frac = xy - xy0
    dx, dy = grid.new_tensor(_CORNER_DX, dtype=torch.long), grid.new_tensor(_CORNER_DY, dtype=torch.long)
    xi = xy0[..., 0].long().unsqueeze(-1) + dx  # (N, Q, P, 4)
    yi = xy0[..., 1].long().unsqueeze(-1) + dy
    fx, fy = frac[..., 0:1], frac[..., 1:2]
    bilinear = torch.cat([1 - fx, fx, 1 - fx, fx], -1) * torch.cat([1 - fy, 1 - fy, fy, fy], -1)
    valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    coef = bilinear * weights.reshape(n, q, p, 1) * valid
    idx = torch.where(valid, yi * w + xi, 0)
    # in the coefficients' dtype: under CPU autocast the value is bf16 while the grid (and so coef) stays fp32
    a = coef.new_zeros(n, q, h * w).scatter_add_(2, idx.view(n, q, p * 4), coef.view(n, q, p * 4))
    return torch.bmm(value, a.transpose(1, 2).to(value.dtype))


def multi_scale_deformable_attn(value: Tensor, spatial_shapes: Tensor | Sequence[Sequence[int]],
                                sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Bilinear multi-scale sampling + weighted sum (pure PyTorch, ``grid_sample`` per level).

    The same computation as ultralytics' (and mmcv's) ``multi_scale_deformable_attn_pytorch``, reorganised for
    speed (same results to float rounding; tested against it): each level's value map and sampling grid are made
    contiguous before ``grid_sample`` (the strided views those kernels pass make the CPU ``grid_sample`` 2.4x
    slower forward and 1.3x backward), each level's samples are weighted and summed at once instead of
    concatenating all levels into one (B*heads, C_h, Q, L*P) tensor first (that concatenation and the product on
    it are most of the time), the attention weights are made level-major so that the product broadcasts a
    contiguous tensor (a strided one runs it 2-3x slower), and the small levels (H*W <= ``DENSE_MAX_POSITIONS``)
    are sampled by one matrix product with a dense interpolation matrix
    (:func:`_sample_level_dense`). ``benchmarks/bench_msda.py``, paper-preset shapes, batch 2, 2 CPU threads:
    encoder (1,360 queries) forward 74 -> 27 ms, forward + backward 187 -> 81 ms; decoder (500 queries)
    16 -> 11 ms and 45 -> 29 ms.

    On CUDA the reference layout runs instead: there the kernels are launch-bound and one ``grid_sample`` per
    level made forward + backward slower (H200: 1.34 -> 1.76 ms at 1,360 queries), so nothing is gained.

    Args:
        value: (B, N_v, heads, C_h), levels concatenated row-major in ``spatial_shapes`` order.
        spatial_shapes: (L, 2) as (H, W); sum(H*W) == N_v.
        sampling_locations: (B, Q, heads, L, P, 2), normalised (x, y) in [0, 1] (top-left corner = 0,
            bottom-right corner = 1; pixel centres at (i + 0.5) / W).
        attention_weights: (B, Q, heads, L, P), already normalised.

    Returns:
        (B, Q, heads * C_h).
    """
    b, n_v, heads, c = value.shape
    _, q, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = shapes_as_list(spatial_shapes)
    if value.device.type != "cpu":  # one grid_sample per level + a product per level: more kernel launches
        return multi_scale_deformable_attn_pytorch(
            value, shapes, sampling_locations.reshape(b, q, heads, n_levels * n_points, 2),
            attention_weights.reshape(b, q, heads, n_levels * n_points))
    # (B*heads, C_h, N_v), (B*heads, Q, L*P, 2) in grid_sample's [-1, 1], (B*heads, 1, Q, L*P)
    # Level-major copies, so that every per-level slice below is contiguous (small tensors: Q*heads*L*P).
    v = value.permute(0, 2, 3, 1).reshape(b * heads, c, n_v)
    # (reshape alone may return a strided view, e.g. at batch 1)
    grids = (2 * sampling_locations - 1).permute(3, 0, 2, 1, 4, 5).contiguous().view(n_levels, b * heads, q, n_points, 2)
    weights = attention_weights.permute(3, 0, 2, 1, 4).contiguous().view(n_levels, b * heads, 1, q, n_points)
    out: Tensor | None = None
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        v_l = v[:, :, start:start + h * w]
        start += h * w
        if h * w <= DENSE_MAX_POSITIONS:
            part = _sample_level_dense(v_l, grids[lvl], weights[lvl], h, w)
        else:
            sampled = F.grid_sample(v_l.reshape(b * heads, c, h, w).contiguous(), grids[lvl], mode="bilinear",
                                    padding_mode="zeros", align_corners=False)  # (B*heads, C_h, Q, P)
            part = (sampled * weights[lvl]).sum(-1)
        out = part if out is None else out + part
    assert out is not None
    return out.view(b, heads * c, q).transpose(1, 2).contiguous()


class MSDeformAttn(_UltralyticsMSDeformAttn):
    """Deformable-DETR attention: each query samples P points per head and level around its reference.

    Parameters (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``) and their init
    come from ultralytics. No residual, no dropout: callers add their own (see the encoder's
    ``deform_residual``). Parameter count: ``4 d^2 + 4 d + d*heads*L*P*3 + heads*L*P*3`` (0.230 M for
    d=256, 8 heads, 4 levels, 4 points).

    Args:
        d_model: Channels d.
        n_levels: Feature levels L.
        n_heads: Heads.
        n_points: Points P per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__(d_model=d_model, n_levels=n_levels, n_heads=n_heads, n_points=n_points)

    def reset_parameters(self) -> None:
        """Re-apply the Deformable-DETR initialisation (after a generic Xavier pass over a parent).

        ultralytics' ``_reset_parameters`` replaces ``sampling_offsets.bias`` by a new CPU Parameter; the
        original Parameter object (device, optimizer identity) is kept and filled in place instead.
        """
        bias = self.sampling_offsets.bias
        self._reset_parameters()
        with torch.no_grad():
            bias.copy_(self.sampling_offsets.bias)
        self.sampling_offsets.bias = bias

    def forward(self, query: Tensor, reference_points: Tensor, value: Tensor,  # type: ignore[override]
                spatial_shapes: Tensor | Sequence[Sequence[int]],
                key_padding_mask: Tensor | None = None) -> Tensor:
        """Attend from ``query`` to the multi-level ``value``.

        Args:
            query: (B, Q, d), position embedding already added.
            reference_points: (B, Q, L or 1, 2) normalised (x, y), or (B, Q, L or 1, 4) normalised
                (cx, cy, w, h); a size-1 level axis is broadcast.
            value: (B, N_v, d) flattened levels (not yet projected).
            spatial_shapes: (L, 2) as (H, W).
            key_padding_mask: (B, N_v) bool, True at padded positions (their values are zeroed).

        Returns:
            (B, Q, d).
        """
        bs, len_q, _ = query.shape
        len_v = value.shape[1]
        shapes = shapes_as_list(spatial_shapes)
        if sum(hh * ww for hh, ww in shapes) != len_v:
            raise ValueError(f"value has {len_v} tokens but spatial_shapes {shapes} sum to another count")
        if len(shapes) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} levels, got {len(shapes)}")
        v = self.value_proj(value)
        if key_padding_mask is not None:
            v = v.masked_fill(key_padding_mask[..., None], 0.0)
        v = v.view(bs, len_v, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(bs, len_q, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(bs, len_q, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(bs, len_q, self.n_heads, self.n_levels, self.n_points)
        ref = reference_points[:, :, None, :, None, :]  # (B, Q, 1, L|1, 1, 2|4)
        if reference_points.shape[-1] == 2:
            normalizer = device_tensor([[w, h] for h, w in shapes], query.dtype, query.device)
            loc = ref + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            loc = ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {reference_points.shape[-1]}")
        out = multi_scale_deformable_attn(v, shapes, loc, weights)
        return self.output_proj(out)


def init_deformable_stack(root: torch.nn.Module, xavier_from: Sequence[torch.nn.Module] | None = None) -> None:
    """mmdet's init for deformable transformers: Xavier-uniform on every >1-D parameter of ``xavier_from``
    (default: ``root`` itself), then the deformable-attention init of every :class:`MSDeformAttn` in ``root``."""
    for module in (xavier_from if xavier_from is not None else [root]):
        for p in module.parameters():
            if p.dim() > 1:
                torch.nn.init.xavier_uniform_(p)
    for m in root.modules():
        if isinstance(m, MSDeformAttn):
            m.reset_parameters()

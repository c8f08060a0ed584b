"""Memory transform + two-stage proposal grid (mmdet ``gen_encoder_output_proposals``), spec 3.4 step 1 / 3.6.

One module, used twice in SDCoNet with the same weights: on ``feat + pos`` before the saliency predictor
(spec 3.4) and on the encoder output for DINO's two-stage query selection (spec 3.6).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from sdconet.models.config import SDCoNetConfig
from sdconet.models.host import device_tensor


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to >= eps (mmdet convention)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def encoder_proposals(spatial_shapes: Tensor, mask: Tensor | None, batch_size: int,
                      device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Base proposal per token: centre ((j+0.5)/valid_W, (i+0.5)/valid_H), size 0.05 * 2**level.

    Args:
        spatial_shapes: (L, 2) long (H_l, W_l).
        mask: (B, N) bool padding mask or None.
        batch_size: B (used when ``mask`` is None).
        device: Device when ``mask`` is None.

    Returns:
        ``(proposals, valid)``: (B, N, 4) normalised cxcywh, and (B, N, 1) bool, True where every
        coordinate lies in (0.01, 0.99) and the token is not padding.
    """
    device = mask.device if mask is not None else (device or spatial_shapes.device)
    props, cur = [], 0
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        if mask is not None:
            m = mask[:, cur:cur + h * w].view(-1, h, w)
            valid_h = (~m[:, :, 0]).sum(1, keepdim=True)
            valid_w = (~m[:, 0, :]).sum(1, keepdim=True)
            scale = torch.cat([valid_w, valid_h], 1).view(-1, 1, 1, 2).float()
        else:
            scale = device_tensor([w, h], torch.float32, device).view(1, 1, 1, 2)
        gy, gx = torch.meshgrid(torch.linspace(0, h - 1, h, dtype=torch.float32, device=device),
                                torch.linspace(0, w - 1, w, dtype=torch.float32, device=device), indexing="ij")
        grid = (torch.stack([gx, gy], -1).unsqueeze(0).expand(batch_size, -1, -1, -1) + 0.5) / scale
        wh = torch.ones_like(grid) * 0.05 * (2.0 ** lvl)
        props.append(torch.cat((grid, wh), -1).view(batch_size, -1, 4))
        cur += h * w
    proposals = torch.cat(props, 1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    if mask is not None:
        valid = valid & ~mask.unsqueeze(-1)
    return proposals, valid


class MemoryTransform(nn.Module):
    """``m = LN(Linear(x))`` with x zeroed at padded / invalid-proposal tokens, plus the proposal grid.

    Args:
        dim: Token width D (256).

    Parameters are named ``fc`` (``memory_trans_fc``, Xavier-uniform weight, default bias) and ``norm``
    (``memory_trans_norm``).
    """

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        nn.init.xavier_uniform_(self.fc.weight)

    def forward(self, memory: Tensor, mask: Tensor | None, spatial_shapes: Tensor) -> tuple[Tensor, Tensor]:
        """Transform tokens and build their two-stage proposals.

        Args:
            memory: (B, N, D) tokens (``feat + pos`` for saliency, the encoder output for two-stage).
            mask: (B, N) bool padding mask or None.
            spatial_shapes: (L, 2) long.

        Returns:
            ``(output_memory, output_proposals)``: (B, N, D), and (B, N, 4) proposals in inverse-sigmoid
            space with ``inf`` at padded / invalid tokens.
        """
        proposals, valid = encoder_proposals(spatial_shapes, mask, memory.shape[0], memory.device)
        proposals = inverse_sigmoid(proposals).masked_fill(~valid, float("inf"))
        out = self.norm(self.fc(memory.masked_fill(~valid, 0.0)))
        return out, proposals


def build_memory_transform(cfg: SDCoNetConfig) -> MemoryTransform:
    """The shared memory transform of width ``cfg.hidden_dim``."""
    return MemoryTransform(cfg.hidden_dim)

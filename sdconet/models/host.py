"""Host data onto the device without a host synchronisation.

On CUDA a blocking host-to-device copy (``torch.tensor(values, device="cuda")``, ``cpu_tensor.to("cuda")``)
synchronises the stream: the host waits until every kernel queued before it has run, and the GPU then idles
while the host queues the next ones. The model builds a few small constants per forward from Python values
(level sizes, normalisation statistics, box scales, matched indices); these helpers copy them non-blocking
instead. From pageable host memory the driver stages the data before the call returns, so the source may be
freed at once, and the copy is ordered on the stream like any kernel. On the CPU nothing is copied. The values
are the same either way; only the waiting goes.

:func:`device_tensor` also keeps each constant it copied (per values, dtype and device; a few dozen in a run), so a
forward pass after the first copies nothing from the host at all: what CUDA-graph capture of the evaluation forward
needs (a pageable host-to-device copy cannot be captured), and less work per step. The kept tensors are shared:
callers read them and take views, never write into them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["device_tensor", "to_device"]


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t.to(device)`` as a non-blocking copy (no stream synchronisation for a host tensor)."""
    return t.to(device, non_blocking=True)


_CONSTANTS: dict[tuple[Any, torch.dtype, torch.device], Tensor] = {}
_MAX_CONSTANTS = 512  # level sizes, statistics and image sizes of a run: far fewer; cleared if ever reached


def _frozen(values: Any) -> Any:
    """Nested lists / tuples of Python numbers as nested tuples (a dictionary key)."""
    return tuple(_frozen(v) for v in values) if isinstance(values, (list, tuple)) else values


def device_tensor(values: Any, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` without the synchronisation a blocking copy costs;
    copied to a non-CPU device once per (values, dtype, device) and shared afterwards (read-only)."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.tensor(values, dtype=dtype)
    key = (_frozen(values), dtype, device)
    t = _CONSTANTS.get(key)
    if t is None:
        if len(_CONSTANTS) >= _MAX_CONSTANTS:
            _CONSTANTS.clear()
        t = _CONSTANTS[key] = to_device(torch.tensor(values, dtype=dtype), device)
    return t

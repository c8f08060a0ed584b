"""Host data onto the device without a host synchronisation.

On CUDA a blocking host-to-device copy (``torch.tensor(values, device="cuda")``, ``cpu_tensor.to("cuda")``)
synchronises the stream: the host waits until every kernel queued before it has run, and the GPU then idles
while the host queues the next ones. The model builds a few small constants per forward from Python values
(level sizes, normalisation statistics, box scales, matched indices); these helpers copy them non-blocking
instead. From pageable host memory the driver stages the data before the call returns, so the source may be
freed at once, and the copy is ordered on the stream like any kernel. On the CPU nothing is copied. The values
are the same either way; only the waiting goes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["device_tensor", "to_device"]


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t.to(device)`` as a non-blocking copy (no stream synchronisation for a host tensor)."""
    return t.to(device, non_blocking=True)


def device_tensor(values: Any, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` without the synchronisation a blocking copy costs."""
    t = torch.tensor(values, dtype=dtype)
    return t if torch.device(device).type == "cpu" else to_device(t, device)

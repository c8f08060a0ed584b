"""Reading the tensors of a weights file, whatever framework wrote it (torchvision, BasicSR, our checkpoints)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Sequence


def load_tensors(path: str | os.PathLike, wrappers: Sequence[str] = ("model", "state_dict"),
                 what: str = "weights file", error: type[Exception] = FileNotFoundError) -> dict[str, Any]:
    """The tensors of the state dict in ``path``: the first of ``wrappers`` that holds a dict is unwrapped (e.g.
    ``{"model": ...}``, BasicSR's ``{"params_ema": ...}``), ``module.`` prefixes (DataParallel) are dropped and
    non-tensor entries left out. Read with ``weights_only=True``; one of our own resumable checkpoints (it pickles
    numpy RNG states) falls back to a full load: only for files the user named. Nothing is downloaded.

    Raises:
        ``error``: the file does not exist (naming ``what``).
    """
    import torch  # noqa: PLC0415  (benchcore stays importable without torch)

    if not Path(path).is_file():
        raise error(f"{what} not found: {path} (nothing is downloaded; docs/weights.md)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(blob, dict):
        for key in wrappers:
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
    if not isinstance(blob, dict):
        return {}
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in blob.items() if torch.is_tensor(v)}

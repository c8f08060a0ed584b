"""No host synchronisation in SDCoNet's forward pass before the Hungarian matcher (issue 13, CPU-testable part).

The model runs on the ``meta`` device, whose tensors have shapes but no data: any read of a device value on the
host (``.item()``, ``.tolist()``, ``.cpu()``, ``nonzero``, a Python ``if`` on a tensor), each a stream
synchronisation on CUDA, fails there. A ``TorchFunctionMode`` also records blocking host-to-device copies
(``torch.tensor(..., device=...)``, ``.to(device)`` without ``non_blocking``), which synchronise on CUDA too.
"""
from __future__ import annotations

import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

from sdconet.models.build import build_model
from sdconet.models.config import preset
from sdconet.models import host
from sdconet.models.host import device_tensor, to_device


class BlockingCopies(TorchFunctionMode):
    """Records where a host tensor or host values are copied to the meta device with a blocking copy."""

    def __init__(self, non_blocking_too: bool = False) -> None:
        super().__init__()
        self.sites: list[str] = []
        self.non_blocking_too = non_blocking_too  # record every host-to-device copy (CUDA-graph capture: none at all)

    def _record(self) -> None:
        """The innermost caller in the model package (or the test itself)."""
        frames = [f for f in traceback.extract_stack()[:-2] if "/sdconet/" in f.filename or "/tests/" in f.filename]
        self.sites.append(f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?")

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor):
            if kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "meta":
                self._record()
        elif func is torch.Tensor.to and args[0].device.type == "cpu" and (
                self.non_blocking_too or not kwargs.get("non_blocking", False)):
            dev = next((a for a in (*args[1:], kwargs.get("device")) if isinstance(a, (str, torch.device))), None)
            if dev is not None and torch.device(dev).type == "meta":
                self._record()
        return func(*args, **kwargs)


@pytest.fixture()
def meta_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(preset("tiny", scale=2)).to("meta")


def _targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 20.0, 90.0, 44.0]], device="meta"),
             "labels": torch.tensor([1, 2], device="meta")} for _ in range(2)]


def _first_failing_file(exc: BaseException) -> list[str]:
    return [f.filename for f in traceback.extract_tb(exc.__traceback__)]


def test_eval_forward_never_reads_the_device(meta_model: torch.nn.Module) -> None:
    x = torch.empty(2, 3, 128, 128, device="meta")
    meta_model.eval()
    with BlockingCopies() as census, torch.no_grad():
        dets, sr = meta_model(x, return_sr=True)
    assert census.sites == []
    assert len(dets) == 2 and dets[0]["boxes"].shape[-1] == 4 and sr.shape == (2, 3, 128, 128)


def test_eval_forward_after_the_first_copies_nothing_from_the_host(meta_model: torch.nn.Module,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The constants made from Python values are copied once and kept (``host.device_tensor``): a later evaluation
    forward makes no host-to-device copy of any kind, as capturing it in a CUDA graph requires."""
    monkeypatch.setattr(host, "_CONSTANTS", {})  # as in a fresh process
    x = torch.empty(1, 3, 128, 128, device="meta")
    meta_model.eval()
    with BlockingCopies(non_blocking_too=True) as first, torch.no_grad():
        meta_model(x)
    with BlockingCopies(non_blocking_too=True) as second, torch.no_grad():
        meta_model(x)
    assert first.sites and second.sites == []


def test_training_forward_first_host_read_is_the_matcher(meta_model: torch.nn.Module) -> None:
    """With label noise off, the first value read back is the matcher's cost matrix (one copy for all sets)."""
    meta_model.train()
    meta_model.set_sr_trainable(True)
    meta_model.detector.head.dn_generator.label_noise_scale = 0.0
    x, targets = torch.empty(2, 3, 128, 128, device="meta"), _targets()
    with BlockingCopies() as census, pytest.raises(NotImplementedError, match="meta") as err:
        meta_model(x, targets)
    files = _first_failing_file(err.value)
    assert any(f.endswith("sdconet/models/matcher.py") for f in files), files
    assert census.sites == []


def test_label_noise_is_the_one_read_before_the_matcher(meta_model: torch.nn.Module) -> None:
    """DINO's label noise picks the noised labels with ``nonzero`` and draws that many new ones (mmdet's draws,
    kept so a seed gives the released code's noise); it is the one device read left before the matcher."""
    meta_model.train()
    x, targets = torch.empty(2, 3, 128, 128, device="meta"), _targets()
    with pytest.raises((NotImplementedError, RuntimeError)) as err:
        meta_model(x, targets)
    files = _first_failing_file(err.value)
    assert any(f.endswith("sdconet/models/denoising.py") for f in files), files


def test_host_helpers_copy_values_unchanged() -> None:
    t = device_tensor([[3, 4], [5, 6]], torch.float32, "cpu")
    assert t.dtype == torch.float32 and t.tolist() == [[3.0, 4.0], [5.0, 6.0]]
    assert device_tensor([1, 2], torch.long, "meta").device.type == "meta"
    assert to_device(torch.arange(3), "meta").shape == (3,)
    with BlockingCopies() as census:
        device_tensor([1.0], torch.float32, "meta")
        torch.tensor([1.0], device="meta")  # the blocking form, for contrast
        torch.arange(2).to("meta")
    assert len(census.sites) == 2


def test_device_constants_are_copied_once_per_values_dtype_and_device() -> None:
    a = device_tensor([[3, 4], [5, 6]], torch.float32, "meta")
    assert device_tensor(((3, 4), (5, 6)), torch.float32, torch.device("meta")) is a
    assert device_tensor([[3, 4], [5, 7]], torch.float32, "meta") is not a
    assert device_tensor([[3, 4], [5, 6]], torch.float16, "meta").dtype == torch.float16
    c1, c2 = device_tensor([1.0], torch.float32, "cpu"), device_tensor([1.0], torch.float32, "cpu")
    assert c1 is not c2 and torch.equal(c1, c2)  # CPU: nothing to copy, a fresh tensor each call

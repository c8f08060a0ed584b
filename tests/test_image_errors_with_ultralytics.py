"""Corrupt images must be skipped and counted even after ultralytics has patched PIL.Image.open."""
from __future__ import annotations

import pytest


def test_corrupt_image_skipped_after_ultralytics_import(tmp_path):
    pytest.importorskip("ultralytics")
    import ultralytics.utils.patches  # noqa: F401  (installs the Image.open patch)

    from data_prep.parsers import read_image_size

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    skipped: list[dict] = []
    assert read_image_size(bad, "bad.jpg", strict=False, skipped=skipped) is None
    assert skipped and skipped[0]["file"].endswith("bad.jpg")

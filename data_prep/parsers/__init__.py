"""Dataset parsers: each turns one dataset's official layout into a list of :class:`RawImage`.

The records are dataset-neutral; ``data_prep.convert.build_coco`` turns them into the COCO json of
``docs/formats.md`` section 1 (clipping, ids, categories). Parsers keep boxes exactly as annotated
(in 0-based pixel corner coordinates) and never clip.

Unreadable images are skipped with a logged warning and recorded in a caller-supplied ``skipped``
list (``{"file": <relative name>, "reason": ...}``), or raise ``CorruptImageError`` when ``strict``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from data_prep.errors import IMAGE_DECODE_ERRORS, AnnotationError, CorruptImageError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})


@dataclass
class RawObject:
    """One annotated object: a horizontal box ``(x1, y1, x2, y2)`` in image pixels.

    ``polygon``: the oriented outline ``(x1, y1, ..., x4, y4)`` as annotated (DOTA), or None for box-only
    datasets; the box is its bounding box. The split measures an oriented object on its polygon.
    """

    bbox: tuple[float, float, float, float]
    category: str
    difficult: int = 0
    source: str = ""  # "file:line" (or "file#objectN" for XML) for error messages
    polygon: tuple[float, ...] | None = None


@dataclass
class RawImage:
    """One image: ``file_name`` is relative to the dataset root, with POSIX separators."""

    file_name: str
    width: int
    height: int
    objects: list[RawObject] = field(default_factory=list)
    negative: bool = False
    split: str | None = None


def list_images(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder`` keyed by stem (hidden files and non-images ignored).

    Raises DataError when two images share a stem (e.g. ``001.jpg`` and ``001.png``).
    """
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in IMAGE_EXTS:
            continue
        if p.stem in out:
            raise DataError(f"two images share the stem {p.stem!r} in {folder}: {out[p.stem].name}, {p.name}")
        out[p.stem] = p
    return out


def list_files(folder: Path, suffix: str) -> dict[str, Path]:
    """Files ``*<suffix>`` (case-insensitive) directly in ``folder`` keyed by stem."""
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() == suffix}


def rel_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with POSIX separators."""
    return path.relative_to(root).as_posix()


def read_image_size(path: Path, rel: str, strict: bool = False,
                    skipped: list[dict] | None = None) -> tuple[int, int] | None:
    """``(width, height)`` from the image header only (no full decode).

    An unreadable file is logged and appended to ``skipped`` (returns None), or raises
    CorruptImageError when ``strict``. Pillow's decompression-bomb limit is lifted for the header
    read: DOTA has legitimate images of up to ~20000 x 20000 px.
    """
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            width, height = im.size
        reason = None if width > 0 and height > 0 else f"invalid image size {width}x{height}"
    except IMAGE_DECODE_ERRORS as exc:  # UnidentifiedImageError is an OSError
        reason = f"unreadable image ({type(exc).__name__}: {exc})"
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    if reason is None:
        return int(width), int(height)
    if strict:
        raise CorruptImageError(f"{path}: {reason}")
    log.warning("skipping %s: %s", path, reason)
    if skipped is not None:
        skipped.append({"file": rel, "reason": reason})
    return None


def check_pairs(images: dict[str, Path], labels: dict[str, Path], what: str) -> None:
    """Raise DataError unless ``images`` and ``labels`` have exactly the same stems."""
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    problems = []
    if no_image:
        problems.append(f"{len(no_image)} annotation file(s) without a matching image, e.g. "
                        + ", ".join(str(labels[s]) for s in no_image[:5]))
    if no_label:
        problems.append(f"{len(no_label)} image(s) without an annotation file, e.g. "
                        + ", ".join(str(images[s]) for s in no_label[:5]))
    if problems:
        raise DataError(f"{what}: " + "; ".join(problems))


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise DataError naming what was expected."""
    if not path.is_dir():
        raise DataError(f"{what}: directory not found: {path}")
    return path


__all__ = ["IMAGE_EXTS", "RawImage", "RawObject", "check_pairs", "list_files", "list_images",
           "read_image_size", "rel_posix", "require_dir"]


def read_json(path: Path, encoding: str = "utf-8") -> object:
    """The parsed json file at ``path``; :class:`AnnotationError` naming the file (and line) when it is not."""
    import json  # noqa: PLC0415

    try:
        return json.loads(Path(path).read_text(encoding=encoding))
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, exc.lineno, f"invalid json: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, None, f"not {encoding} text ({exc})") from None


def read_annotation_lines(path: Path) -> list[tuple[int, str]]:
    """``(1-based line number, line)`` of a UTF-8 (BOM allowed) annotation text file.

    Splits on ``"\n"`` only (not ``str.splitlines``) so line numbers match what editors show; a file that is
    not UTF-8 is an :class:`AnnotationError` naming it.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, None, f"not UTF-8 text ({exc})") from None
    return list(enumerate(text.split("\n"), start=1))

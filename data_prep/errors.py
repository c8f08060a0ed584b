"""Error types of the data stage. Every message names the file (and line or key) at fault."""
from __future__ import annotations


class DataError(ValueError):
    """Base class: bad input data."""


class AnnotationError(DataError):
    """A malformed annotation: raised with ``file:line: message``."""

    def __init__(self, path: object, line: int | None, message: str):
        self.path, self.line = str(path), line
        loc = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{loc}: {message}")


class UnknownClassError(AnnotationError):
    """A class name or id that is not in the dataset's class list."""


class ChecksumError(DataError):
    """A file whose checksum does not match the pinned value."""

    def __init__(self, path: object, algo: str, expected: str, actual: str):
        self.path, self.algo, self.expected, self.actual = str(path), algo, expected, actual
        super().__init__(f"checksum mismatch for {path}: expected {algo} {expected}, got {actual}")


class CorruptImageError(DataError):
    """An image that cannot be decoded (raised only in ``--strict`` mode; otherwise skipped and counted)."""

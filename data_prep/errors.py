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


class ManifestError(DataError):
    """A malformed checksum manifest line: raised with ``manifest:line: message``."""

    def __init__(self, path: object, line: int | None, message: str):
        self.path, self.line = str(path), line
        loc = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{loc}: {message}")


class MissingFileError(DataError):
    """A file that a manifest or a dataset layout lists but that is not on disk."""

    def __init__(self, path: object, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class FetchError(DataError):
    """Fetching a raw dataset failed (bad source, failed download, wrong layout)."""


class SourceMissingError(FetchError):
    """No usable source was given; the message says where to get the data, its terms and the command."""


class UnsafeArchiveError(FetchError):
    """An archive member with an absolute path, ``..`` component or link (zip-slip): nothing is extracted."""


class LayoutError(FetchError):
    """The placed files do not form the expected dataset layout (missing folders, wrong counts)."""


# What decoding a bad image file can raise. PIL raises OSError (UnidentifiedImageError), SyntaxError or
# ValueError; once ultralytics is imported in the process it patches ``PIL.Image.open`` to retry
# unidentified files through the optional ``pi_heif`` plugin, which then raises ImportError instead.
IMAGE_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, ImportError)

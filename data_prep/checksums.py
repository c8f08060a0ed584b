"""File integrity: digests, ``sha256sum``-style manifests (``<hex>  ./relative/path`` per line), verified
downloads and safe reading of archives (no absolute, ``..`` or link members: zip-slip).

Used by ``python -m data_prep fetch`` to verify downloaded archives (md5, as the mirrors publish)
and placed dataset files (sha256 manifests such as ``../shared/data/nwpu_vhr10/MANIFEST.sha256``).
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping

from tqdm import tqdm

from data_prep.errors import ChecksumError, DataError, FetchError, ManifestError, MissingFileError, UnsafeArchiveError

#: hex digest length -> algorithm (how ``sha256sum``/``md5sum`` style manifests are told apart)
ALGO_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
Opener = Callable[[], BinaryIO]
_LINE_RE = re.compile(r"^(\\?)([0-9a-fA-F]+) [ *](.+)$")


def _check_algo(algo: str) -> str:
    algo = algo.lower()
    if algo not in hashlib.algorithms_guaranteed:
        raise ValueError(f"unknown hash algorithm {algo!r} (choose from {sorted(hashlib.algorithms_guaranteed)})")
    return algo


def file_digest(path: str | os.PathLike, algo: str = "md5", chunk: int = 1 << 20) -> str:
    """Hex digest of the file at ``path`` (read in ``chunk``-byte blocks, so any size fits in memory)."""
    h = hashlib.new(_check_algo(algo))
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def normalise_digest(expected: str, algo: str, what: object = "") -> str:
    """Lower-case ``expected`` and check it is a well-formed ``algo`` hex digest (DataError otherwise)."""
    value = expected.strip().lower()
    length = hashlib.new(_check_algo(algo)).digest_size * 2
    if len(value) != length or not re.fullmatch(r"[0-9a-f]+", value):
        raise DataError(f"{what or 'expected checksum'}: {expected!r} is not a {algo} digest ({length} hex digits)")
    return value


def verify_file(path: str | os.PathLike, expected: str, algo: str = "md5") -> str:
    """Check ``path`` against ``expected``; return the actual digest, raise ChecksumError on a mismatch."""
    expected = normalise_digest(expected, algo, f"checksum for {path}")
    if not Path(path).is_file():
        raise MissingFileError(path, f"file not found (expected {algo} {expected})")
    actual = file_digest(path, algo)
    if actual != expected:
        raise ChecksumError(path, algo, expected, actual)
    return actual


def download(url: str, target: Path, md5: str | None, progress: bool = True, timeout: float = 60.0) -> str:
    """Stream ``url`` (http(s) or file://) to a temporary sibling of ``target``, check its md5, rename it.

    Returns the md5. On a mismatch or a failed transfer the partial file is removed and
    ChecksumError / FetchError is raised; ``target`` only ever holds a verified file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp, h = Path(tmp_name), hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=target.name,
                      disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        actual = h.hexdigest()
        if md5 and actual != md5.lower():
            raise ChecksumError(f"{target.name} (downloaded from {url})", "md5", md5.lower(), actual)
        os.replace(tmp, target)
        return actual
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"download of {url} to {target} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _clean_relpath(name: str, manifest: object, lineno: int) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise ManifestError(manifest, lineno, f"path {name!r} is absolute, empty or leaves the dataset root")
    return "/".join(parts)


def read_manifest(path: str | os.PathLike) -> dict[str, str]:
    """Parse a checksum manifest into ``{relative/path: hexdigest}`` (in file order).

    Accepts ``sha256sum``/``md5sum`` output: ``<hex>  ./name`` (two spaces) or ``<hex> *name`` (binary
    marker), names with spaces, ``./`` prefixes, blank lines and ``#`` comments. A malformed line, an
    unsafe path or a path listed twice with different digests raises ManifestError(``file:line``).
    """
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = _LINE_RE.match(line)
            if not m or len(m.group(2)) not in ALGO_BY_LENGTH:
                raise ManifestError(path, lineno, f"expected '<hex digest>  <path>', got {line[:120]!r}")
            name = m.group(3)
            if m.group(1):  # sha256sum escapes names holding a backslash or newline
                name = name.replace("\\n", "\n").replace("\\\\", "\\")
            rel = _clean_relpath(name, path, lineno)
            digest = m.group(2).lower()
            if out.get(rel, digest) != digest:
                raise ManifestError(path, lineno, f"{rel!r} listed twice with different digests")
            out[rel] = digest
    return out


def verify_manifest(root: str | os.PathLike, manifest: str | os.PathLike | Mapping[str, str],
                    subset_prefix: str | tuple[str, ...] | None = None, workers: int = 2) -> dict[str, Any]:
    """Check that every file listed in ``manifest`` exists under ``root`` with the listed digest.

    ``manifest`` is a manifest file or an already parsed ``{relpath: digest}`` mapping; the algorithm
    of each entry follows from its digest length (sha256 for 64 hex digits). ``subset_prefix``
    restricts the check to entries whose path starts with it (or with any of a tuple). Existence is
    checked first, then digests are computed on ``workers`` threads; the first missing file raises
    MissingFileError and the first mismatch (in manifest order) ChecksumError, each naming the file,
    the expected and the actual value. Returns a report with counts.
    """
    t0 = time.monotonic()
    root = Path(root)
    label = str(manifest) if isinstance(manifest, (str, os.PathLike)) else "<manifest mapping>"
    entries = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else dict(manifest)
    total_listed = len(entries)
    if subset_prefix:
        prefixes = (subset_prefix,) if isinstance(subset_prefix, str) else tuple(subset_prefix)
        entries = {k: v for k, v in entries.items() if k.startswith(prefixes)}
    if not entries:
        raise DataError(f"{label}: no entries to verify" + (f" under {subset_prefix!r}" if subset_prefix else ""))
    algos = {}
    for rel, digest in entries.items():
        if len(digest) not in ALGO_BY_LENGTH:
            raise ManifestError(label, None, f"{rel!r}: {digest!r} is not an md5/sha1/sha256/sha512 digest")
        algos[rel] = ALGO_BY_LENGTH[len(digest)]
        if not (root / rel).is_file():
            raise MissingFileError(root / rel, f"listed in {label} with {algos[rel]} {digest}, actual: file not found")
    nbytes = sum((root / rel).stat().st_size for rel in entries)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        digests = pool.map(lambda rel: file_digest(root / rel, algos[rel]), entries)
        for (rel, expected), actual in zip(entries.items(), digests):
            if actual != expected.lower():
                raise ChecksumError(root / rel, algos[rel], expected.lower(), actual)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    by_algo: dict[str, int] = {}
    for a in algos.values():
        by_algo[a] = by_algo.get(a, 0) + 1
    return {"ok": True, "root": str(root), "manifest": label, "subset_prefix": subset_prefix,
            "listed": total_listed, "verified": len(entries), "bytes": nbytes, "algorithms": by_algo,
            "seconds": round(time.monotonic() - t0, 3)}


_JUNK_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _member_name(name: str, archive: Path) -> str | None:
    """Normalised relative path of an archive member; None for junk; UnsafeArchiveError if it escapes."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"[A-Za-z]:", norm) or "\x00" in norm:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} leaves the extraction folder ('..', zip-slip); "
                                 "refusing to extract")
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] in _JUNK_FILES:
        return None
    return "/".join(parts)


def iter_members(source: Path) -> Iterator[tuple[str, Opener]]:
    """Yield ``(relative path, opener)`` for every regular file of a folder, zip or tar(.gz/.bz2/.xz)."""
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            rel_parts = p.relative_to(source).parts
            if ".git" not in rel_parts and p.is_file() and (rel := _member_name("/".join(rel_parts), source)):
                yield rel, (lambda p=p: open(p, "rb"))
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            members = []
            for info in zf.infolist():  # validate every name before extracting anything
                rel = _member_name(info.filename, source)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise UnsafeArchiveError(f"{source}: member {info.filename!r} is a symbolic link; refusing")
                if rel and not info.is_dir():
                    members.append((rel, info))
            for rel, info in members:
                yield rel, (lambda info=info: zf.open(info))
    elif source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source, "r:*") as tf:
            for m in tf:
                rel = _member_name(m.name, source)
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(f"{source}: member {m.name!r} is a link or device; refusing to extract")
                if rel and m.isfile():
                    yield rel, (lambda m=m: tf.extractfile(m))
    else:
        raise FetchError(f"{source}: not a folder, .zip or .tar(.gz/.bz2/.xz) archive")


def stream_digest(opener: Opener, algo: str = "sha256") -> str:
    """Hex digest of the stream returned by ``opener()`` (an archive member)."""
    h = hashlib.new(_check_algo(algo))
    with opener() as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()

"""Fetch and verify a raw dataset: ``python -m data_prep fetch {nwpu,dota,hrrsd} --dest DEST ...``.

Sources are archives or folders the user placed (DOTA/HRRSD have no checksummed download), or an
opt-in download (``allow_download``: NWPU's pinned mirror; an explicit ``url`` + ``md5`` otherwise;
``git clone`` for the HRRSD annotations). Archives are md5-checked, extracted member by member
(absolute, ``..`` and link members are refused) into a hidden staging folder beside DEST, checked
(``sources.check_layout`` and an optional sha256 manifest) and only then renamed into place, item by
item (``NWPU VHR-10 dataset``, ``train/images``, ``OPT2017/Annotations``, ...). On any error the staging
and work folders are removed. ``DEST/fetch_report.json`` records sources, checksums, counts, provenance.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm import tqdm

from data_prep.checksums import (download, file_digest, iter_members, normalise_digest, read_manifest, stream_digest,
                                 verify_manifest)
from data_prep.errors import ChecksumError, DataError, FetchError, SourceMissingError
from data_prep.sources import DatasetSource, check_layout, dota_archive_parts, dota_target, get_source, hrrsd_target
from benchcore.atomic import atomic_write_json
from benchcore.provenance import provenance

REPORT_NAME = "fetch_report.json"
log = logging.getLogger(__name__)


@dataclass
class _Run:
    """State of one fetch: staging/work folders, the source records and warnings for the report."""

    src: DatasetSource
    dest: Path
    stage: Path
    work: Path
    progress: bool
    sources: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    placed: dict[Path, str] = field(default_factory=dict)

    def staged(self, rel: str | None) -> Path | None:
        """Staging path of a DEST-relative path (None stays None: the member is not a dataset file)."""
        return self.stage / rel if rel else None

    def warn(self, msg: str) -> None:
        log.warning(msg)
        self.warnings.append(msg)

    def record(self, path: Path, kind: str, expected_md5: str | None = None) -> dict[str, Any]:
        """Checksum an archive (ChecksumError on mismatch) or note a folder; add it to the report."""
        rec: dict[str, Any] = {"kind": kind, "path": str(path.resolve()), "name": path.name}
        if path.is_dir() and expected_md5:
            self.warn(f"{path}: is a folder; the md5 {expected_md5} given for it is not checked")
        if path.is_file():
            actual = file_digest(path, "md5")
            expected = normalise_digest(expected_md5, "md5", path) if expected_md5 else None
            if expected and actual != expected:
                raise ChecksumError(path, "md5", expected, actual)
            rec.update(bytes=path.stat().st_size, md5=actual, md5_expected=expected, verified=bool(expected))
        self.sources.append(rec)
        return rec

    def obtain(self, url: str, md5: str, download_dir: Path | None) -> Path:
        """Download ``url`` (or reuse a verified copy in ``download_dir``) and record it."""
        name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name) or f"{self.src.name}-download"
        target = (download_dir or self.work) / name
        md5 = normalise_digest(md5, "md5", url)
        if not (target.is_file() and file_digest(target, "md5") == md5):
            download(url, target, md5, self.progress)
        self.sources.append({"kind": "download", "url": url, "name": name, "bytes": target.stat().st_size,
                             "md5": md5, "md5_expected": md5, "verified": True,
                             "path": str(target) if download_dir else None})
        return target

    def extract(self, source: Path, route: Callable[[str], Path | None], rec: dict[str, Any]) -> None:
        """Copy every member that ``route`` maps to a path; identical duplicates are skipped, others refused."""
        n = ignored = dups = 0
        items: set[str] = set()
        try:
            for rel, opener in tqdm(iter_members(source), desc=source.name, unit="file", disable=not self.progress):
                dst = route(rel)
                if dst is None:
                    ignored += 1
                    continue
                if dst in self.placed:
                    if stream_digest(opener) != file_digest(dst, "sha256"):
                        raise FetchError(f"{source} member {rel!r} and {self.placed[dst]} both give {dst} "
                                         "with different content")
                    dups += 1
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                with opener() as fin, open(dst, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                self.placed[dst], n = f"{source} member {rel!r}", n + 1
                if dst.is_relative_to(self.stage):
                    rel_stage = dst.relative_to(self.stage).as_posix()
                    items.update(i for i in self.src.items if rel_stage.startswith(i + "/"))
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
            raise FetchError(f"{source}: corrupt or truncated archive ({e})") from e
        rec.update(files=n, ignored=ignored, duplicates=dups, items=sorted(items))


def _find_dir(base: Path, pred: Callable[[Path], bool], what: str, max_depth: int = 3) -> Path:
    level = [base]
    for _ in range(max_depth + 1):
        hits = [d for d in level if pred(d)]
        if len(hits) > 1:
            raise FetchError(f"{base}: several folders look like {what}: {[str(h) for h in hits[:3]]}")
        if hits:
            return hits[0]
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and c.name not in (".git", "__MACOSX")]
    raise FetchError(f"{base}: no {what} found within {max_depth} folder levels")


def _place_nwpu(run: _Run, archives: list[Path], url: str | None, md5: str | None, allow_download: bool,
                download_dir: Path | None, **_: Any) -> None:
    item, src = run.src.items[0], run.src
    if len(archives) > 1:
        raise FetchError(f"nwpu takes one archive or folder, got {len(archives)}: {[str(a) for a in archives]}")
    if archives:
        path = archives[0]
        expected = md5 or (src.md5 if path.name == src.archive_name else None)
        rec = run.record(path, "folder" if path.is_dir() else "archive", expected)
        if path.is_file() and not expected:
            run.warn(f"{path}: not the official archive name {src.archive_name!r} and no md5 given: its content is "
                     f"unverified (md5 {rec['md5']}); pass --md5 to check it")
    elif allow_download:
        path = run.obtain(url or str(src.url), md5 or str(src.md5), download_dir)
        rec = run.sources[-1]
    else:
        return
    is_root = lambda d: (d / "positive image set").is_dir()  # noqa: E731
    if path.is_dir():
        shutil.copytree(_find_dir(path, is_root, "'NWPU VHR-10 dataset' folder"), run.stage / item)
        rec.update(items=[item])
        return
    raw = run.work / "raw"
    run.extract(path, lambda rel: raw / rel, rec)
    os.replace(_find_dir(raw, is_root, f"'NWPU VHR-10 dataset' folder (in {path})"), run.stage / item)
    rec["items"] = [item]


def _place_dota(run: _Run, archives: list[Path], url: str | None, md5: str | None, allow_download: bool,
                download_dir: Path | None, checksums: Mapping[str, str], **_: Any) -> None:
    if md5 and not url and len(archives) > 1:
        raise FetchError(f"--md5 applies to one archive but {len(archives)} were given; use --checksums FILE")
    single = md5 if md5 and not url and archives else None
    todo = [(a, run.record(a, "folder" if a.is_dir() else "archive", single or _lookup_md5(checksums, a)))
            for a in archives]
    if allow_download and (url or not archives):
        if not (url and md5):
            raise SourceMissingError("DOTA has no pinned download: --allow-download needs --url and --md5.\n"
                                     + run.src.instructions(run.dest))
        todo.append((run.obtain(url, md5, download_dir), run.sources[-1]))
    unverified = [a.name for a, rec in todo if a.is_file() and not rec.get("verified")]
    if unverified:
        run.warn(f"no md5 given for {unverified} (DOTA publishes none): checked by layout and counts only")
    for archive, rec in todo:
        if re.search(r"v1\.0|v2\.0|v2_|v1_0", archive.name, re.IGNORECASE):
            run.warn(f"{archive.name}: looks like a DOTA v1.0/v2.0 archive; this benchmark uses DOTA-v1.5")
        parts = dota_archive_parts(archive)
        run.extract(archive, lambda rel, a=archive, p=parts: run.staged(dota_target(rel, a, p)), rec)


def _git_clone(run: _Run, repo: str) -> Path:
    target = run.work / "annotations-repo"
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        subprocess.run(["git", "clone", "--depth", "1", "--quiet", repo, str(target)], check=True,
                       capture_output=True, text=True, env=env, timeout=3600)
        sha = subprocess.run(["git", "-C", str(target), "rev-parse", "HEAD"], capture_output=True, text=True,
                             env=env, timeout=60).stdout.strip()
    except FileNotFoundError as e:
        raise FetchError(f"git is not installed: clone {repo} yourself and pass --hrrsd-annotations") from e
    except subprocess.CalledProcessError as e:
        raise FetchError(f"git clone {repo} failed (exit {e.returncode}): {e.stderr.strip()[-500:]}") from e
    run.sources.append({"kind": "git", "url": repo, "commit": sha or None, "name": Path(repo).name})
    return target


def _place_hrrsd(run: _Run, archives: list[Path], url: str | None, md5: str | None, allow_download: bool,
                 download_dir: Path | None, checksums: Mapping[str, str], hrrsd_annotations: Path | None,
                 annotations_repo: str | None, **_: Any) -> None:
    single = md5 if len(archives) == 1 and not url else None
    todo = [(a, run.record(a, "folder" if a.is_dir() else "archive", single or _lookup_md5(checksums, a)))
            for a in archives]
    if allow_download and url:
        if not md5:
            raise FetchError(f"--url {url} needs --md5: HRRSD has no pinned image checksum")
        todo.append((run.obtain(url, md5, download_dir), run.sources[-1]))
    if not todo and hrrsd_annotations is None and not allow_download:
        return
    if hrrsd_annotations is not None:
        todo.append((hrrsd_annotations, run.record(hrrsd_annotations, "annotations")))
    for source, rec in todo:
        run.extract(source, lambda rel: run.staged(hrrsd_target(rel)), rec)
    have = lambda rel: (run.stage / rel).is_dir() or (run.dest / rel).is_dir()  # noqa: E731
    if not have("OPT2017/Annotations"):
        if not allow_download:
            raise SourceMissingError(f"no HRRSD annotations given or found in {run.dest}.\n"
                                     + run.src.instructions(run.dest))
        clone = _git_clone(run, annotations_repo or str(run.src.annotations_repo))
        run.extract(clone, lambda rel: run.staged(hrrsd_target(rel)), run.sources[-1])
    if not have("OPT2017/JPEGImages"):
        raise SourceMissingError(f"no HRRSD images given or found in {run.dest} (--archive IMAGES.zip).\n"
                                 + run.src.instructions(run.dest))


def _lookup_md5(checksums: Mapping[str, str], path: Path) -> str | None:
    """md5 for ``path`` from ``checksums``: a key that is a trailing part of its path (``train/images/part1.zip``)
    wins over a bare file name (DOTA's train/val/test archives share names such as ``part1.zip``)."""
    posix = path.resolve().as_posix()
    for key, value in checksums.items():
        key = key.replace("\\", "/").removeprefix("./")
        if "/" in key and posix.endswith("/" + key):
            return value
    return checksums.get(path.name)


def _verify_in(dest: Path, manifest: str | os.PathLike, src: DatasetSource) -> dict[str, Any]:
    """Verify ``manifest`` entries under the dataset items that exist in ``dest``."""
    return verify_manifest(dest, manifest, tuple(i + "/" for i in src.items if (dest / i).exists()))


_PLACERS = {"nwpu": _place_nwpu, "dota": _place_dota, "hrrsd": _place_hrrsd}


def _load_report(dest: Path, dataset: str) -> dict[str, Any] | None:
    try:
        rep = json.loads((dest / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rep if isinstance(rep, dict) and rep.get("dataset") == dataset else None


def _already_fetched(previous: dict[str, Any] | None, given: list[Path], url: str | None) -> bool:
    if not given and not url:
        return True
    seen = {(s.get("path"), s.get("bytes")) for s in (previous or {}).get("sources", [])}
    urls = {s.get("url") for s in (previous or {}).get("sources", [])}
    return (not url or url in urls) and all(
        (str(p.resolve()), p.stat().st_size if p.is_file() else None) in seen for p in given)


def _commit(stage: Path, dest: Path, staged: list[str]) -> None:
    """Move staged items (and the report) into DEST: one rename when DEST is new, else item by item."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)
    if not dest.exists():
        os.replace(stage, dest)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", suffix=".tmp", dir=dest.parent))
    try:
        for i, rel in enumerate([*staged, REPORT_NAME]):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                os.replace(target, trash / str(i))
            os.replace(stage / rel, target)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def fetch_dataset(dataset: str, dest: str | os.PathLike, archives: Sequence[str | os.PathLike] = (),
                  allow_download: bool = False, manifest: str | os.PathLike | None = None, url: str | None = None,
                  md5: str | None = None, hrrsd_annotations: str | os.PathLike | None = None, *,
                  checksums: Mapping[str, str] | str | os.PathLike | None = None, force: bool = False,
                  expected_counts: Mapping[str, int] | None = None, download_dir: str | os.PathLike | None = None,
                  annotations_repo: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Place, verify and record one raw dataset under ``dest``; return the report (also DEST/fetch_report.json).

    ``archives``: user-supplied zips/tars/folders. ``allow_download``: permit the network (NWPU's pinned
    mirror or ``url``; DOTA/HRRSD images need ``url`` + ``md5``; HRRSD annotations are git-cloned from
    ``annotations_repo``). ``md5`` checks a single archive or the download; ``checksums`` maps archive
    names to md5s (or is an md5sum file). ``manifest``: sha256 manifest relative to DEST, checked for the
    placed items. ``expected_counts`` overrides the dataset's counts (``{}``: structure only). A DEST
    that already holds a verified copy is not re-extracted unless ``force``.
    """
    src, dest = get_source(dataset), Path(dest).absolute()
    archives = [archives] if isinstance(archives, (str, os.PathLike)) else list(archives)
    given = [Path(a) for a in archives] + ([Path(hrrsd_annotations)] if hrrsd_annotations else [])
    for p in given:
        if not p.exists():
            raise SourceMissingError(f"{p}: no such archive or folder.\n{src.instructions(dest)}")
    if url and not allow_download:
        raise FetchError(f"a download URL ({url}) was given without allow_download (--allow-download); refusing")
    if checksums is not None and not isinstance(checksums, Mapping):
        checksums = read_manifest(checksums)
    expected = src.expected_counts if expected_counts is None else expected_counts
    previous, warnings, detail = _load_report(dest, src.name), [], ""
    in_place: dict[str, int] | None = None
    try:
        in_place = check_layout(src.name, dest, expected, warnings) if dest.is_dir() else None
    except DataError as e:
        detail = str(e)
    config = {"dataset": src.name, "dest": str(dest), "archives": [str(p) for p in given], "url": url,
              "allow_download": allow_download, "manifest": str(manifest) if manifest else None, "force": force,
              "expected_counts": dict(expected)}
    if in_place is not None and not force and _already_fetched(previous, given, url):
        report = {**(previous or {"sources": [{"kind": "existing", "path": str(dest)}]}),
                  "dataset": src.name, "dest": str(dest), "status": "verified", "skipped": True, "placed": [],
                  "counts": in_place, "warnings": warnings, "terms": src.terms, "citation": src.citation,
                  "manifest": _verify_in(dest, manifest, src) if manifest else (previous or {}).get("manifest"),
                  "provenance": provenance(config)}
        atomic_write_json(dest / REPORT_NAME, report)
        log.info("%s: verified copy already at %s; nothing extracted (force=True re-fetches)", src.title, dest)
        return report
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.work-", suffix=".tmp", dir=dest.parent))
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.stage-", suffix=".tmp", dir=dest.parent))
    try:
        run = _Run(src, dest, stage, work, progress)
        _PLACERS[src.name](run, [Path(a) for a in archives], url=url, md5=md5, allow_download=allow_download,
                           download_dir=Path(download_dir) if download_dir else None, checksums=checksums or {},
                           hrrsd_annotations=Path(hrrsd_annotations) if hrrsd_annotations else None,
                           annotations_repo=annotations_repo)
        staged = [rel for rel in src.items if (stage / rel).exists()]
        if not staged and (archives or url or hrrsd_annotations):
            raise FetchError(f"no {src.title} files found in {[str(p) for p in given] or [url]} "
                             f"(expected layout: {', '.join(src.items)})")
        if not staged and in_place is None:
            raise SourceMissingError(f"{src.title}: no source given and no complete copy at {dest}"
                                     f"{' (' + detail + ')' if dest.is_dir() else ''}.\n{src.instructions(dest)}")
        warnings = list(run.warnings)
        man = None
        try:
            counts = check_layout(src.name, lambda rel: stage / rel if (stage / rel).exists() else dest / rel,
                                  expected, warnings)
            if manifest:
                man = verify_manifest(stage, manifest, tuple(r + "/" for r in staged)) if staged \
                    else _verify_in(dest, manifest, src)
                man["root"] = str(dest)
        except DataError as e:  # name the DEST paths, not the staging folder that is about to vanish
            e.args = (f"{str(e.args[0]).replace(str(stage), str(dest))} (nothing was placed in {dest})",)
            if isinstance(getattr(e, "path", None), str):
                e.path = e.path.replace(str(stage), str(dest))
            raise
        kept = [s for s in (previous or {}).get("sources", []) if s.get("items") and not set(s["items"]) & set(staged)]
        report = {"dataset": src.name, "title": src.title, "dest": str(dest), "status": "verified", "skipped": False,
                  "placed": staged, "sources": run.sources + kept,
                  "checksums": {s.get("path") or s["url"]: {"md5": s["md5"]} for s in run.sources if s.get("md5")},
                  "counts": counts, "manifest": man, "warnings": warnings, "terms": src.terms,
                  "citation": src.citation, "provenance": provenance(config)}
        atomic_write_json((stage if staged else dest) / REPORT_NAME, report)
        if staged:
            _commit(stage, dest, staged)
        log.info("%s: placed %s under %s; counts %s", src.title, staged, dest, counts)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)

"""Pretrained initialisation: the catalogue of published weight files, the ``init`` declarations that name them, and
the weights stage (copy from a user folder or download, sha256 check, a manifest recording the source).

Every trained network declares how it starts (``docs/weights.md``)::

    scratch   random initialisation (the demo and CPU configs say so explicitly)
    imagenet  the recipe's ImageNet checkpoint: Swin-T for SDCoNet, torchvision's ResNet-50 for Faster R-CNN,
              the yolov8{n,s}-cls backbone for YOLOv8
    coco      a COCO-trained detector (Faster R-CNN R50-FPN, YOLOv8n/s): extra, clearly named rows only
    div2k     an SR model's published bicubic-SR weights for the run's scale (BasicSR / SwinIR model zoos),
              fine-tuned on the dataset's pairs; the SR models' option, never their default
    file      a local file the user names (used in place: not staged, no recorded sha256)

``imagenet``, ``coco`` and ``div2k`` name a file of :data:`CATALOGUE` through :data:`INIT_FILES`. The run spec records
the resolved declaration (:func:`resolve_init`) in ``settings.init``, so every ``metrics.json`` carries it (its
``provenance.config.spec``). The workflow's local rule ``stage_weights`` puts each catalogue file a configured run
needs under ``{results_dir}/weights/`` (:func:`stage_file`), before any training job; a real run stops before its
first job when a file can be neither found nor downloaded (:func:`missing_message`).

Nothing here imports torch: the workflow calls it at DAG-parse time.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from benchcore.atomic import atomic_write_json

INITS = ("scratch", "imagenet", "coco", "div2k", "file")
#: File endings that make an ``init`` value a local path rather than a misspelt keyword.
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pkl", ".ckpt")


class WeightsError(ValueError):
    """An unknown declaration, a missing file or a checksum mismatch (the message names the file and the fix)."""


@dataclass(frozen=True)
class WeightFile:
    """One published file.

    Attributes:
        file: The published file name (also its name under ``weights.dir`` and in the staging folder).
        url: Where it is published (None: no stable direct link; copy only).
        sha256: The full sha256, where one is published (None otherwise; see ``sha256_note``).
        hash_prefix: The sha256 prefix its publisher puts in the file name (torch hub, BasicSR), checked when
            ``sha256`` is unknown.
        sha256_note: Where ``sha256`` comes from, or why it is missing.
        layout: The state-dict layout, as the loader that reads it names it.
        network: The network id it initialises (:data:`INIT_FILES`).
        init: ``imagenet``, ``coco`` or ``div2k`` (SR models).
        used_by: Which declaration selects it.
    """

    file: str
    url: str | None
    sha256: str | None
    hash_prefix: str | None
    sha256_note: str
    layout: str
    network: str
    init: str
    used_by: str


_TORCH_PREFIX = "torchvision's file name carries the first 8 hex digits of the sha256 (torch.hub check_hash)"
_BASICSR_PREFIX = ("BasicSR's file name carries the first 8 hex digits of the sha256 (scripts/publish_models.py); "
                   "no full sha256 is published")
_BASICSR_DRIVE = ("BasicSR publishes it on Google Drive only (docs/ModelZoo.md, "
                  "scripts/download_pretrained_models.py): no stable direct URL, so put it in weights.dir")
_SWINIR_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0"
_ULTRA = ("ultralytics publishes no checksum for its release assets; the tag is pinned to the one ultralytics 8.4 "
          "downloads from (v8.4.0), whose files may differ from other tags'")

CATALOGUE: dict[str, WeightFile] = {w.file: w for w in (
    WeightFile(
        file="swin_tiny_patch4_window7_224.pth",
        url="https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth",
        sha256=None, hash_prefix=None,
        sha256_note="Microsoft's release lists no checksum and none was found published; pin the value you "
                    "compute in weights.sha256 (the stage records what it saw in the manifest)",
        layout="microsoft-swin", network="swin_t", init="imagenet",
        used_by="SDCoNet and its ablations (model.swin.pretrained: imagenet)"),
    WeightFile(
        file="resnet50-0676ba61.pth",
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", hash_prefix="0676ba61",
        sha256_note=f"{_TORCH_PREFIX} (ResNet50_Weights.IMAGENET1K_V1); the full value is the one a published Nix "
                    "fetchurl of this URL pins (base32 12pv4bkq7rn9yy9njjrq9mi9gqp5hac8bzfgfcbvwnvrnrhvlxh6), "
                    "which decodes to that prefix",
        layout="torchvision-resnet50", network="frcnn_r50_fpn", init="imagenet",
        used_by="Faster R-CNN (frcnn.init: imagenet)"),
    WeightFile(
        file="fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
        url="https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
        sha256=None, hash_prefix="258fb6c6",
        sha256_note=f"{_TORCH_PREFIX} (FasterRCNN_ResNet50_FPN_Weights.COCO_V1); no full value found published",
        layout="torchvision-fasterrcnn", network="frcnn_r50_fpn", init="coco",
        used_by="Faster R-CNN COCO rows (frcnn.init: coco)"),
    *(WeightFile(
        file=f"yolov8{k}-cls.pt",
        url=f"https://github.com/ultralytics/assets/releases/download/v8.4.0/yolov8{k}-cls.pt",
        sha256=None, hash_prefix=None, sha256_note=_ULTRA,
        layout="ultralytics-classify", network=f"yolov8{k}", init="imagenet",
        used_by=f"YOLOv8{k} (yolo.init: imagenet): its ImageNet backbone layers 0-8") for k in "ns"),
    *(WeightFile(
        file=f"yolov8{k}.pt",
        url=f"https://github.com/ultralytics/assets/releases/download/v8.4.0/yolov8{k}.pt",
        sha256=None, hash_prefix=None, sha256_note=_ULTRA,
        layout="ultralytics-detect", network=f"yolov8{k}", init="coco",
        used_by=f"YOLOv8{k} COCO rows (yolo.init: coco)") for k in "ns"),
    # SR models, init div2k (sr.init / sr_<model>.init): one file per (model, scale), preset paper only.
    *(WeightFile(
        file=f"EDSR_Mx{s}_f64b16_DIV2K_official-{prefix}.pth", url=None, sha256=None, hash_prefix=prefix,
        sha256_note=f"{_BASICSR_PREFIX}; {_BASICSR_DRIVE} (file id {drive_id})",
        layout="basicsr-params", network=f"edsr_x{s}", init="div2k",
        used_by=f"EDSR x{s} (sr_edsr.init: div2k): BasicSR's EDSR-M f64b16 (the EDSR baseline), converted from "
                f"the official EDSR release, trained on DIV2K")
      for s, prefix, drive_id in ((2, "3ba7b086", "1mREMGVDymId3NzIc2u90sl_X4-pb4ZcV"),
                                  (3, "6908f88a", "1EriqQqlIiRyPbrYGBbwr_FZzvb3iwqz5"),
                                  (4, "0c287733", "1bCK6cFYU01uJudLgUUe-jgx-tZ3ikOWn"))),
    WeightFile(
        file="ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth", url=None, sha256=None, hash_prefix="150ff491",
        sha256_note=f"{_BASICSR_PREFIX}; {_BASICSR_DRIVE} (file id 1swaV5iBMFfg-DL6ZyiARztbhutDCWXMM)",
        layout="basicsr-params", network="rrdb_x4", init="div2k",
        used_by="RRDB x4 (sr_rrdb.init: div2k): ESRGAN's PSNR-oriented RRDB_PSNR_x4 in BasicSR's RRDBNet names, "
                "trained on DF2K (DIV2K + Flickr2K; BasicSR's model zoo lists no DIV2K-only RRDB)"),
    *(WeightFile(
        file=f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth",
        url=f"{_SWINIR_RELEASE}/001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth",
        sha256=None, hash_prefix=None,
        sha256_note="the SwinIR release (tag v0.0) lists no checksum and its file names carry none; pin the value you "
                    "compute in weights.sha256 (the stage records what it saw in the manifest)",
        layout="basicsr-params", network=f"swinir_x{s}", init="div2k",
        used_by=f"SwinIR x{s} (sr_swinir.init: div2k): SwinIR-M classical SR, trained on DIV2K with 48 px LR "
                f"patches (s48w8)") for s in (2, 3, 4, 8)),
)}

#: ``(network, init) -> catalogue file``. Networks: ``swin_t`` (SDCoNet's shared encoder), ``frcnn_r50_fpn``
#: (Faster R-CNN, preset paper), ``yolov8n`` / ``yolov8s``, ``<sr model>_x<scale>`` (SR models, preset paper).
INIT_FILES: dict[tuple[str, str], str] = {(w.network, w.init): w.file for w in CATALOGUE.values()}


# ------------------------------------------------------------------------------------------------ declarations
def resolve_init(network: str, init: str | None, store: str | os.PathLike, file: str | None = None,
                 source: str = "init") -> dict[str, Any]:
    """The record a run spec keeps of a network's initialisation (``settings.init``).

    Args:
        network: The network id (:data:`INIT_FILES`), e.g. ``swin_t`` or ``frcnn_r50_fpn``.
        init: ``scratch`` (or None), ``imagenet``, ``coco``, ``file``; or a local path (taken as ``file``), or
            ``timm`` / ``timm:<name>`` (Swin-T only: timm's hub download inside the training job).
        store: The staging folder (``{results_dir}/weights``): where a catalogue file is read from.
        file: A user-named file; with ``imagenet`` / ``coco`` it replaces the staged catalogue file.
        source: The config key, for error messages.

    Returns:
        ``{"network", "init", "weights" (catalogue file name or None), "file" (path the loader reads, or None),
        "staged" (the weights stage provides it), "sha256" (expected, or None), "url"}``.

    Raises:
        WeightsError: an unknown keyword, or no published file for this network and init.
    """
    rec: dict[str, Any] = {"network": network, "init": "scratch", "weights": None, "file": None, "staged": False,
                           "sha256": None, "url": None}
    value = "scratch" if init is None else str(init)
    if value.startswith("timm") and (value == "timm" or value.startswith("timm:")):
        if network != "swin_t":
            raise WeightsError(f"{source}: 'timm' initialises the Swin-T encoder only")
        return {**rec, "init": "timm", "url": f"timm hub ({value})"}
    if value not in INITS:
        if "/" in value or value.endswith(WEIGHT_SUFFIXES):
            value, file = "file", value
        else:
            raise WeightsError(f"{source}: unknown initialisation {init!r}; expected one of {list(INITS)} or the path "
                               f"of a local weights file ({', '.join(WEIGHT_SUFFIXES)})")
    if value == "scratch":
        if file:
            raise WeightsError(f"{source}: init is 'scratch' but a weights file is named ({file}); set init: file "
                               f"to start from it, or drop the file")
        return rec
    if value == "file":
        if not file:
            raise WeightsError(f"{source}: init 'file' needs the path of the file to start from")
        return {**rec, "init": "file", "file": str(file)}
    name = INIT_FILES.get((network, value))
    if name is None:
        have = sorted(i for n, i in INIT_FILES if n == network)
        raise WeightsError(f"{source}: no published {value} checkpoint for {network} (available: "
                           f"{have or 'none'}; or init: scratch / file)")
    wf = CATALOGUE[name]
    if file:  # the user's own copy, used in place
        return {**rec, "init": value, "weights": name, "file": str(file), "url": wf.url}
    return {**rec, "init": value, "weights": name, "file": str(Path(store) / name), "staged": True,
            "sha256": wf.sha256, "url": wf.url}


def staged_files(spec: Mapping[str, Any]) -> list[str]:
    """Catalogue file names a run spec reads from the staging folder (empty for scratch / file / timm runs)."""
    rec = (spec.get("settings") or {}).get("init") or {}
    return [rec["weights"]] if rec.get("staged") else []


def manifest_path(store: str | os.PathLike, name: str) -> Path:
    """The manifest the stage writes beside a staged file: ``{store}/{name}.json``."""
    return Path(store) / f"{name}.json"


def check_pins(pins: Mapping[str, str] | None, source: str = "weights.sha256") -> dict[str, str]:
    """Validate user-pinned sha256 values (``{file name: 64 hex}``); a pin may not contradict the catalogue."""
    out: dict[str, str] = {}
    for name, value in (pins or {}).items():
        if name not in CATALOGUE:
            raise WeightsError(f"{source}: {name!r} is not a catalogue file; known: {sorted(CATALOGUE)}")
        hexval = str(value).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", hexval):
            raise WeightsError(f"{source}.{name}: {value!r} is not a sha256 (64 hex digits)")
        known = CATALOGUE[name].sha256 or ""
        prefix = CATALOGUE[name].hash_prefix or ""
        if (known and hexval != known) or not hexval.startswith(prefix):
            raise WeightsError(f"{source}.{name}: {hexval} contradicts the published "
                               f"{'sha256 ' + known if known else 'hash prefix ' + prefix}")
        out[name] = hexval
    return out


# ------------------------------------------------------------------------------------------------ checks
def sha256sum(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | os.PathLike, name: str, pins: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check a candidate file against the recorded sha256 (catalogue, else the user's pin, else the published
    prefix). Returns ``{"sha256", "checked_against": "sha256" | "pinned sha256" | "hash prefix" | None}``.

    Raises:
        WeightsError: the file's sha256 differs (the message names both values and the file).
    """
    wf = CATALOGUE[name]
    got = sha256sum(path)
    want, how = (wf.sha256, "sha256") if wf.sha256 else ((pins or {}).get(name), "pinned sha256")
    if want:
        if got != want:
            raise WeightsError(f"{path}: sha256 {got} differs from the recorded {how} {want} of {name} "
                               f"(a different or damaged file)")
        return {"sha256": got, "checked_against": how}
    if wf.hash_prefix:
        if not got.startswith(wf.hash_prefix):
            raise WeightsError(f"{path}: sha256 {got} does not start with the published prefix {wf.hash_prefix} "
                               f"of {name} (a different or damaged file)")
        return {"sha256": got, "checked_against": "hash prefix"}
    return {"sha256": got, "checked_against": None}


def find_local(name: str, source_dir: str | os.PathLike | None) -> Path | None:
    """``source_dir/name`` when the user's folder holds it."""
    if not source_dir:
        return None
    cand = Path(source_dir).expanduser() / name
    return cand if cand.is_file() else None


def probe_url(url: str, timeout: float = 10.0) -> bool:
    """Whether ``url`` answers a HEAD request (redirects followed) with a status below 400."""
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "sdconet-bench"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - https URLs of the catalogue
            return int(resp.status) < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def unavailable(names: Iterable[str], source_dir: str | os.PathLike | None, allow_download: bool,
                probe: Callable[[str], bool] = probe_url) -> list[str]:
    """The files (of a stage about to run) that can be neither copied from ``source_dir`` nor downloaded. A copy
    already in the staging folder does not count: Snakemake removes a job's outputs before it runs it.

    Downloads are probed (one HEAD request per URL) only when ``allow_download``; nothing is downloaded here.
    """
    out = []
    for name in dict.fromkeys(names):
        if find_local(name, source_dir) is not None:
            continue
        url = CATALOGUE[name].url
        if allow_download and url and probe(url):
            continue
        out.append(name)
    return out


def missing_message(missing: Sequence[str], source_dir: str | os.PathLike | None, allow_download: bool,
                    used_by: Mapping[str, Sequence[str]] | None = None) -> str:
    """The one message that names each missing file, where it comes from and where to put it."""
    where = (f"the folder weights.dir names ({Path(source_dir).expanduser()})" if source_dir
             else "a folder of your choice, and name it as weights.dir")
    why = ("downloads are allowed, but these URLs could not be reached from this machine" if allow_download
           else "weights.allow_download is false")
    lines = [f"weights: {len(missing)} pretrained file(s) needed by the configured runs are neither in weights.dir "
             f"nor downloadable ({why}). Put each file, under exactly this name, in {where}:"]
    for name in missing:
        wf = CATALOGUE[name]
        who = f"; runs: {', '.join(sorted(used_by[name]))}" if used_by and used_by.get(name) else ""
        lines.append(f"  - {name}  ({wf.used_by}{who})\n      from {wf.url or '(no direct link; see docs/weights.md)'}")
    lines.append("Or allow downloads on a machine with internet (weights.allow_download: true; the local rule "
                 "stage_weights downloads, compute nodes never do), or declare init: scratch for those networks. "
                 "See docs/weights.md.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ staging
def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "sdconet-bench"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as fh:  # noqa: S310
            shutil.copyfileobj(resp, fh, length=1 << 22)
    except (urllib.error.URLError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise WeightsError(f"download of {url} failed: {exc}") from None


def stage_file(name: str, store: str | os.PathLike, source_dir: str | os.PathLike | None = None,
               allow_download: bool = False, pins: Mapping[str, str] | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Put catalogue file ``name`` at ``store/name``: copied from ``source_dir``, else downloaded when allowed;
    verified (:func:`verify`) before it is moved into place; its manifest (``store/name.json``) records the source.

    Returns:
        The manifest: ``{"file", "path", "sha256", "checked_against", "source": {"kind": "copy" | "download",
        "from"}, "url", "layout", "network", "init", "bytes", "staged_at"}``.

    Raises:
        WeightsError: not found and not downloadable (:func:`missing_message`), a failed download, a wrong sha256.
    """
    if name not in CATALOGUE:
        raise WeightsError(f"{name!r} is not a catalogue file; known: {sorted(CATALOGUE)}")
    wf = CATALOGUE[name]
    dest = Path(store) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{name}.{os.getpid()}.part")
    local = find_local(name, source_dir)
    try:
        if local is not None:
            log(f"{name}: copying from {local}")
            shutil.copyfile(local, tmp)
            source = {"kind": "copy", "from": str(local.resolve())}
        elif allow_download and wf.url:
            log(f"{name}: downloading {wf.url}")
            _download(wf.url, tmp)
            source = {"kind": "download", "from": wf.url}
        else:
            raise WeightsError(missing_message([name], source_dir, allow_download))
        check = verify(tmp, name, pins)
        if check["checked_against"] is None:
            log(f"{name}: WARNING no published sha256 to check against; recorded sha256 {check['sha256']} "
                f"(pin it in weights.sha256 to check future copies)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    doc = {"file": name, "path": str(dest), **check, "source": source, "url": wf.url, "layout": wf.layout,
           "network": wf.network, "init": wf.init, "bytes": dest.stat().st_size,
           "staged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(manifest_path(store, name), doc)
    log(f"{name}: staged at {dest} ({check['checked_against'] or 'unverified'}: {check['sha256']})")
    return doc


def catalogue_table() -> list[dict[str, Any]]:
    """The catalogue as plain dicts (docs, ``python -m benchcore``-style listings, tests)."""
    return [asdict(w) for w in CATALOGUE.values()]

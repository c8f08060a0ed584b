"""Where each raw dataset comes from, under which terms, and what a complete copy looks like.

Facts from ``docs/datasets.md`` (shared). ``check_layout`` verifies a placed copy (folders, counts,
image/label pairing) and is what ``data_prep.fetch`` runs before anything is moved into place.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

from data_prep.errors import DataError, FetchError, LayoutError

Locator = Callable[[str], Path]


@dataclass(frozen=True)
class DatasetSource:
    """Provenance, terms and expected content of one raw dataset."""

    name: str
    title: str
    homepage: str
    citation: str
    terms: str
    where_to_get: tuple[str, ...]
    commands: tuple[str, ...]  #: rerun commands, ``{dest}`` is filled in
    items: tuple[str, ...]  #: top-level folders (relative to DEST) that fetch places atomically
    expected_counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    archive_name: str | None = None  #: official archive file name (nwpu)
    url: str | None = None  #: automatic download URL, only where a checksum is pinned too
    md5: str | None = None
    annotations_repo: str | None = None  #: git repository with the annotations (hrrsd)

    def instructions(self, dest: str | Path = "DEST") -> str:
        """Human-readable help: where to get the data, its terms, what to cite and the exact command."""
        lines = [f"Where to get {self.title}:"]
        lines += [f"  - {w}" for w in self.where_to_get]
        lines += [f"Terms: {self.terms}", f"Cite: {self.citation}", "Then run:"]
        lines += [f"  {c.format(dest=dest)}" for c in self.commands]
        return "\n".join(lines)


NWPU = DatasetSource(
    name="nwpu",
    title="NWPU VHR-10",
    homepage="https://hf.co/datasets/torchgeo/vhr10 (TorchGeo mirror; the original NWPU page is offline)",
    citation=("G. Cheng, J. Han, P. Zhou, L. Guo, Multi-class geospatial object detection and geographic image "
              "classification based on collection of part detectors, ISPRS J. Photogramm. Remote Sens. 98 (2014); "
              "G. Cheng, J. Han, A survey on object detection in optical remote sensing images, ISPRS J. 117 (2016); "
              "G. Cheng, P. Zhou, J. Han, Learning rotation-invariant CNNs for object detection in VHR optical "
              "remote sensing images, IEEE TGRS 54(12) (2016)"),
    terms=("research purposes only (the dataset's readme.txt); cite the three Cheng et al. papers. No other "
           "licence; images from Google Earth and ISPRS/DGPF Vaihingen. Do not redistribute it."),
    where_to_get=(
        "automatic (--allow-download): https://hf.co/datasets/torchgeo/vhr10/resolve/"
        "60ecc4be33609184e2224606858cd00b7daba8df/NWPU%20VHR-10%20dataset.zip "
        "(md5 6add6751469c12dd8c8d6223064c6c4d, about 77 MB)",
        "manual: the same 'NWPU VHR-10 dataset.zip' from that URL or the authors' Google Drive / OneDrive copies",
    ),
    commands=('python -m data_prep fetch --dataset nwpu --dest "{dest}" --allow-download',
              'python -m data_prep fetch --dataset nwpu --dest "{dest}" --archive "/path/to/NWPU VHR-10 dataset.zip"'),
    items=("NWPU VHR-10 dataset",),
    expected_counts=MappingProxyType({"positive": 650, "negative": 150, "ground_truth": 650}),
    archive_name="NWPU VHR-10 dataset.zip",
    url=("https://hf.co/datasets/torchgeo/vhr10/resolve/60ecc4be33609184e2224606858cd00b7daba8df/"
         "NWPU%20VHR-10%20dataset.zip"),
    md5="6add6751469c12dd8c8d6223064c6c4d",
)

DOTA = DatasetSource(
    name="dota",
    title="DOTA-v1.5",
    homepage="https://captain-whu.github.io/DOTA/",
    citation=("G.-S. Xia et al., DOTA: A Large-scale Dataset for Object Detection in Aerial Images, CVPR 2018; "
              "J. Ding et al., Object Detection in Aerial Images: A Large-Scale Benchmark and Challenges, "
              "IEEE TPAMI 2021"),
    terms=("academic use only, no commercial use (images and annotations); Google Earth images are also "
           "subject to Google Earth's terms of use. Do not redistribute it."),
    where_to_get=(
        "https://captain-whu.github.io/DOTA/dataset.html -> DOTA-v1.5: Google Drive / Baidu folders (no checksums "
        "published). Get train/images/part*.zip, val/images/part*.zip, test/images/part*.zip and the v1.5 label "
        "archives (OBB, e.g. DOTA-v1.5_train.zip, and optionally the *_hbb ones).",
        "keep the downloaded folder names (train/, val/, test/) or put train/val/test in each archive name so the "
        "part can be detected; OBB and HBB label archives are kept apart (labelTxt/ vs labelTxt_hbb/).",
        "automatic download only with an explicit --allow-download --url URL --md5 MD5 (e.g. a mirror you trust)",
    ),
    commands=('python -m data_prep fetch --dataset dota --dest "{dest}" --archive DOTA/train/images/part1.zip '
              '--archive DOTA/train/images/part2.zip --archive DOTA/train/images/part3.zip '
              '--archive DOTA/train/labelTxt-v1.5/DOTA-v1.5_train.zip --archive DOTA/val/images/part1.zip '
              '--archive DOTA/val/labelTxt-v1.5/DOTA-v1.5_val.zip [--archive ..._hbb.zip]',),
    items=tuple(f"{p}/{s}" for p in ("train", "val", "test") for s in ("images", "labelTxt", "labelTxt_hbb")),
    expected_counts=MappingProxyType({"train_images": 1411, "val_images": 458, "test_images": 937}),
)

HRRSD = DatasetSource(
    name="hrrsd",
    title="HRRSD (TGRS-HRRSD-Dataset, 'HRSSD' in the SDCoNet paper)",
    homepage="https://github.com/CrazyStoneonRoad/TGRS-HRRSD-Dataset",
    citation=("Y. Zhang, Y. Yuan, Y. Feng, X. Lu, Hierarchical and Robust Convolutional Neural Network for Very "
              "High-Resolution Remote Sensing Object Detection, IEEE TGRS 57(8):5535-5548, 2019"),
    terms=("no licence is published; the authors ask for the TGRS 2019 citation. Images come from Google Earth "
           "and Baidu Map, whose terms apply: research use only, do not redistribute."),
    where_to_get=(
        "annotations (OPT2017/Annotations, OPT2017/ImageSets): git clone "
        "https://github.com/CrazyStoneonRoad/TGRS-HRRSD-Dataset (or --allow-download, which clones it)",
        "images (OPT2017/JPEGImages, 21,761 JPEGs): the Baidu / Google Drive archives linked by the authors "
        "(the Drive link is reported dead) or a Kaggle mirror; place the archive locally",
    ),
    commands=('python -m data_prep fetch --dataset hrrsd --dest "{dest}" --archive /path/to/HRRSD_images.zip '
              '--hrrsd-annotations /path/to/TGRS-HRRSD-Dataset',
              'python -m data_prep fetch --dataset hrrsd --dest "{dest}" --archive /path/to/HRRSD_images.zip '
              '--allow-download'),
    items=("OPT2017/JPEGImages", "OPT2017/Annotations", "OPT2017/ImageSets"),
    expected_counts=MappingProxyType({"images": 21761, "train": 5401, "val": 5417, "test": 10943}),
    annotations_repo="https://github.com/CrazyStoneonRoad/TGRS-HRRSD-Dataset",
)

SOURCES: Mapping[str, DatasetSource] = MappingProxyType({"nwpu": NWPU, "dota": DOTA, "hrrsd": HRRSD})
_ALIASES = {"nwpu_vhr10": "nwpu", "nwpu-vhr-10": "nwpu", "vhr10": "nwpu", "dota15": "dota", "dota-v1.5": "dota",
            "dotav1.5": "dota", "hrssd": "hrrsd"}


def get_source(name: str) -> DatasetSource:
    """The DatasetSource for ``name`` (case-insensitive; aliases such as ``hrssd``); DataError if unknown."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SOURCES:
        raise DataError(f"unknown dataset {name!r}: choose one of {sorted(SOURCES)}")
    return SOURCES[key]


def _stems(folder: Path, suffixes: tuple[str, ...]) -> set[str]:
    if not folder.is_dir():
        return set()
    return {f.stem for f in folder.iterdir() if f.suffix.lower() in suffixes and f.is_file()}


def _expect(counts: Mapping[str, int], expected: Mapping[str, int], where: Mapping[str, Path], hint: str) -> None:
    for key, n in counts.items():
        if key in expected and expected[key] != n:
            raise LayoutError(f"{where[key]}: holds {n} files for {key!r}, expected {expected[key]} ({hint})")


def _pairing(a: set[str], b: set[str], a_dir: Path, b_dir: Path) -> None:
    if a != b:
        only_a, only_b = sorted(a - b)[:5], sorted(b - a)[:5]
        raise LayoutError(f"{a_dir} and {b_dir} do not pair up: only in the first {only_a}, "
                          f"only in the second {only_b}")


def _check_nwpu(loc: Locator, expected: Mapping[str, int], warnings: list[str]) -> dict[str, int]:
    root = loc("NWPU VHR-10 dataset")
    dirs = {"positive": root / "positive image set", "negative": root / "negative image set",
            "ground_truth": root / "ground truth"}
    for d in dirs.values():
        if not d.is_dir():
            raise LayoutError(f"{d}: folder missing (expected the original 'NWPU VHR-10 dataset' layout)")
    files = {k: _stems(d, (".txt",) if k == "ground_truth" else (".jpg", ".jpeg")) for k, d in dirs.items()}
    counts = {k: len(v) for k, v in files.items()}
    _expect(counts, expected, dirs, "incomplete or not the original NWPU VHR-10 archive")
    _pairing(files["positive"], files["ground_truth"], dirs["positive"], dirs["ground_truth"])
    return counts


def _check_dota(loc: Locator, expected: Mapping[str, int], warnings: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    present = [p for p in ("train", "val", "test") if any(loc(f"{p}/{s}").is_dir() for s in ("images", "labelTxt"))]
    if not present:
        raise LayoutError(f"{loc('train').parent}: no DOTA part found (expected train/images, val/images, test/images)")
    for part in ("train", "val", "test"):
        if part not in present:
            warnings.append(f"DOTA part {part!r} is not present ({loc(part + '/images')} missing)")
            continue
        img_dir = loc(f"{part}/images")
        images = _stems(img_dir, (".png",))
        if not images:
            raise LayoutError(f"{img_dir}: no .png images; supply the {part} image archives (part*.zip)")
        counts[f"{part}_images"] = len(images)
        _expect({f"{part}_images": len(images)}, expected, {f"{part}_images": img_dir},
                f"DOTA-v1.5 {part}; were all {part} image archives given?")
        for sub in ("labelTxt", "labelTxt_hbb"):
            lab_dir = loc(f"{part}/{sub}")
            if lab_dir.is_dir():
                labels = _stems(lab_dir, (".txt",))
                counts[f"{part}_{sub}"] = len(labels)
                _pairing(images, labels, img_dir, lab_dir)
            elif sub == "labelTxt" and part != "test":
                raise LayoutError(f"{lab_dir}: missing; supply the DOTA-v1.5 OBB label archive for {part} "
                                  f"(e.g. DOTA-v1.5_{part}.zip)")
    return counts


def _check_hrrsd(loc: Locator, expected: Mapping[str, int], warnings: list[str]) -> dict[str, int]:
    img_dir, ann_dir = loc("OPT2017/JPEGImages"), loc("OPT2017/Annotations")
    main = loc("OPT2017/ImageSets") / "Main"
    images, xmls = _stems(img_dir, (".jpg", ".jpeg")), _stems(ann_dir, (".xml",))
    if not images:
        raise LayoutError(f"{img_dir}: no .jpg images; supply the HRRSD image archive")
    if not xmls:
        raise LayoutError(f"{ann_dir}: no .xml annotations; give --hrrsd-annotations (a clone of the official repo)")
    counts = {"images": len(images), "annotations": len(xmls)}
    where: dict[str, Path] = {"images": img_dir, "annotations": ann_dir}
    for split in ("train", "val", "test"):
        f = main / f"{split}.txt"
        if not f.is_file():
            raise LayoutError(f"{f}: split file missing (OPT2017/ImageSets/Main of the official repository)")
        ids = [ln.split()[0] for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        counts[split], where[split] = len(ids), f
        for pool, folder in ((images, img_dir), (xmls, ann_dir)):
            missing = [i for i in ids if i not in pool]
            if missing:
                raise LayoutError(f"{f}: {len(missing)} listed ids have no file in {folder}, e.g. {missing[:5]}")
    _expect(counts, expected, where, "incomplete HRRSD copy")
    return counts


_CHECKS = {"nwpu": _check_nwpu, "dota": _check_dota, "hrrsd": _check_hrrsd}


def check_layout(dataset: str, root: Path | Locator, expected: Mapping[str, int] | None = None,
                 warnings: list[str] | None = None) -> dict[str, int]:
    """Verify a placed copy of ``dataset`` and return its file counts (LayoutError naming the folder otherwise).

    ``root`` is DEST or a function mapping an item path (``"train/images"``) to its folder (fetch uses this
    to check staged items together with already placed ones). ``expected`` overrides the dataset's
    ``expected_counts`` (``{}`` checks structure and pairing only). Notes go to ``warnings``.
    """
    src = get_source(dataset)
    loc: Locator = (lambda rel: root / rel) if isinstance(root, Path) else root
    exp = src.expected_counts if expected is None else expected
    return _CHECKS[src.name](loc, exp, warnings if warnings is not None else [])


def split_names_in(text: str) -> set[str]:
    """The split names (train/val/test) that start a word in ``text`` ('trainval' gives both; 'interval' none)."""
    s, found, last_end = text.lower(), set(), -1
    for m in re.finditer(r"train|val|test", s):
        if m.start() == 0 or not s[m.start() - 1].isalpha() or m.start() == last_end:
            found.add(m.group())
            last_end = m.end()
    return found


def dota_archive_parts(archive: Path) -> set[str]:
    """Split names found in a DOTA archive's file name, else its folder, else the folder above that."""
    for text in (archive.name, archive.parent.name, archive.parent.parent.name):
        if found := split_names_in(text):
            return found
    return set()


def dota_target(rel: str, archive: Path, archive_parts: set[str]) -> str | None:
    """DEST-relative place of DOTA archive member ``rel`` (``train/labelTxt_hbb/P0001.txt``), None if no dataset file.

    ``*.png`` go to ``<part>/images``; ``P*.txt`` to ``<part>/labelTxt`` or, when "hbb" is in the archive
    name or the member path, ``<part>/labelTxt_hbb`` (OBB and HBB archives hold the same file names).
    The part comes from the member path, else ``archive_parts``; FetchError naming archive and member
    when it is missing, ambiguous or contradicts the archive name.
    """
    folder, _, base = rel.rpartition("/")
    if base.lower().endswith(".png"):
        sub = "images"
    elif re.fullmatch(r"P\d+\.txt", base, re.IGNORECASE):
        sub = "labelTxt_hbb" if "hbb" in archive.name.lower() or "hbb" in folder.lower() else "labelTxt"
    else:
        return None
    inner = split_names_in(folder)
    if inner and len(archive_parts) == 1 and inner != archive_parts:
        raise FetchError(f"{archive}: member {rel!r} lies under {sorted(inner)} but the archive name says "
                         f"{sorted(archive_parts)}")
    found = inner or archive_parts
    if len(found) != 1:
        why = f"ambiguous: {sorted(found)}" if found else "no train/val/test in its name, folder or member path"
        raise FetchError(f"{archive}: cannot tell the DOTA part of member {rel!r} ({why}); rename the archive "
                         "(e.g. train_part1.zip) or keep it in a train/, val/ or test/ folder")
    return f"{next(iter(found))}/{sub}/{base}"


def hrrsd_target(rel: str) -> str | None:
    """DEST-relative place of an HRRSD member: JPEGs, ``Annotations/*.xml``, ``ImageSets/Main/*.txt``; else None."""
    parts = rel.split("/")
    base, suffix = parts[-1], Path(parts[-1]).suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return f"OPT2017/JPEGImages/{base}"
    if suffix == ".xml" and "Annotations" in parts[:-1]:
        return f"OPT2017/Annotations/{base}"
    if suffix == ".txt" and parts[-3:-1] == ["ImageSets", "Main"]:
        return f"OPT2017/ImageSets/Main/{base}"
    return None

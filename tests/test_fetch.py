"""fetch + verify of raw datasets, on local files only (file:// URLs, fake archives, the shared NWPU copy)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from data_prep.checksums import file_digest, read_manifest, verify_file, verify_manifest
from data_prep.errors import ChecksumError, FetchError, ManifestError, MissingFileError, SourceMissingError, \
    UnsafeArchiveError
from data_prep.fetch import REPORT_NAME, fetch_dataset
from data_prep.sources import DOTA, HRRSD, NWPU, get_source, split_names_in

FAKE_NWPU = {"positive": 3, "negative": 2, "ground_truth": 3}
ROOT = "NWPU VHR-10 dataset"


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 10, 20)).save(buf, "JPEG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _nwpu_members() -> dict[str, bytes]:
    m = {f"{ROOT}/readme.txt": b"fake readme\n"}
    for i in range(1, 4):
        m[f"{ROOT}/positive image set/{i:03d}.jpg"] = _jpeg(i)
        m[f"{ROOT}/ground truth/{i:03d}.txt"] = f"({i},2),(30,40),{i}\n".encode()
    for i in range(1, 3):
        m[f"{ROOT}/negative image set/{i:03d}.jpg"] = _jpeg(10 + i)
    m["__MACOSX/._junk"] = b"junk"
    return m


def _leftovers(dest: Path) -> list[str]:
    return [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- checksums
def test_digest_and_verify_file(tmp_path: Path) -> None:
    f = tmp_path / "a b.bin"
    f.write_bytes(b"hello")
    assert file_digest(f) == hashlib.md5(b"hello").hexdigest()
    assert file_digest(f, "sha256", chunk=2) == hashlib.sha256(b"hello").hexdigest()
    assert verify_file(f, hashlib.md5(b"hello").hexdigest().upper(), "md5")
    with pytest.raises(ChecksumError) as ei:
        verify_file(f, "0" * 64, "sha256")
    msg = str(ei.value)
    assert str(f) in msg and "0" * 64 in msg and hashlib.sha256(b"hello").hexdigest() in msg


def test_read_manifest_formats_and_errors(tmp_path: Path) -> None:
    h = "ab" * 32
    m = tmp_path / "MANIFEST.sha256"
    m.write_text(f"# comment\n{h}  ./dir with space/file 1.txt\n\n{'cd' * 16} *plain.bin\r\n")
    assert read_manifest(m) == {"dir with space/file 1.txt": h, "plain.bin": "cd" * 16}
    m.write_text(f"{h}  ok.txt\n{h}  ok2.txt\nnot a manifest line\n")
    with pytest.raises(ManifestError, match=r"MANIFEST\.sha256:3: "):
        read_manifest(m)
    m.write_text(f"{h}  ../escape.txt\n")
    with pytest.raises(ManifestError, match=r":1: .*leaves the dataset root"):
        read_manifest(m)


def _real_subset(nwpu_dir: Path, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    wanted = [f"{ROOT}/ground truth/001.txt", f"{ROOT}/positive image set/001.jpg",
              f"{ROOT}/negative image set/150.jpg"]
    lines = [ln for ln in (nwpu_dir / "MANIFEST.sha256").read_text().splitlines() if ln.split("  ./", 1)[-1] in wanted]
    assert len(lines) == 3
    copy = tmp_path / "copy"
    for rel in wanted:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(nwpu_dir / rel, copy / rel)
    manifest = tmp_path / "subset.sha256"
    manifest.write_text("\n".join(lines) + "\n")
    return copy, manifest, wanted


@pytest.mark.realdata
def test_verify_manifest_subset_of_real_files(nwpu_dir: Path, tmp_path: Path) -> None:
    copy, manifest, wanted = _real_subset(nwpu_dir, tmp_path)
    rep = verify_manifest(copy, manifest)
    assert rep["ok"] and rep["verified"] == 3 and rep["algorithms"] == {"sha256": 3}
    one_each = {"positive": 1, "negative": 1, "ground_truth": 1}
    fetched = fetch_dataset("nwpu", tmp_path / "ok", [copy], manifest=manifest, expected_counts=one_each,
                            progress=False)
    assert fetched["manifest"]["verified"] == 3 and fetched["manifest"]["root"] == str(tmp_path / "ok")
    expected = read_manifest(manifest)[wanted[1]]
    target = copy / wanted[1]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as ei:
        verify_manifest(copy, manifest, workers=1)
    msg = str(ei.value)
    assert str(target) in msg and expected in msg and hashlib.sha256(bytes(data)).hexdigest() in msg
    dest = tmp_path / "fetched"  # the same check inside fetch: names the DEST path, places nothing
    with pytest.raises(ChecksumError, match=f"{dest / wanted[1]}: expected sha256 {expected}"):
        fetch_dataset("nwpu", dest, [copy], manifest=manifest, expected_counts=one_each, progress=False)
    assert not dest.exists() and not _leftovers(dest)
    (copy / wanted[2]).unlink()
    with pytest.raises(MissingFileError, match="150.jpg.*not found"):
        verify_manifest(copy, manifest)


@pytest.mark.realdata
def test_verify_full_shared_manifest_in_place(nwpu_dir: Path) -> None:
    rep = verify_manifest(nwpu_dir, nwpu_dir / "MANIFEST.sha256")
    assert rep["ok"] and rep["verified"] == rep["listed"] == 650 + 150 + 650 + 2


# ---------------------------------------------------------------- NWPU
def test_official_zip_md5_mismatch_leaves_nothing(tmp_path: Path) -> None:
    z = _zip(tmp_path / "src" / NWPU.archive_name, _nwpu_members())
    dest = tmp_path / "nwpu"
    with pytest.raises(ChecksumError) as ei:
        fetch_dataset("nwpu", dest, [z], expected_counts=FAKE_NWPU, progress=False)
    msg = str(ei.value)
    assert str(z) in msg and NWPU.md5 in msg and _md5(z) in msg
    assert not dest.exists() and not _leftovers(dest)


def test_zip_with_md5_then_idempotent_then_force(tmp_path: Path) -> None:
    z = _zip(tmp_path / "src" / "vhr10.zip", _nwpu_members())
    dest = tmp_path / "nwpu"
    rep = fetch_dataset("nwpu", dest, [z], md5=_md5(z), expected_counts=FAKE_NWPU, progress=False)
    assert rep["counts"] == FAKE_NWPU and not rep["skipped"] and rep["placed"] == [ROOT]
    assert rep["sources"][0]["verified"] and rep["checksums"][str(z.resolve())]["md5"] == _md5(z)
    assert sorted(p.name for p in (dest / ROOT / "positive image set").iterdir()) == ["001.jpg", "002.jpg", "003.jpg"]
    assert json.loads((dest / REPORT_NAME).read_text())["dataset"] == "nwpu"
    assert "research purposes only" in rep["terms"] and "git_sha" in rep["provenance"]
    mtime = (dest / ROOT / "ground truth" / "001.txt").stat().st_mtime_ns
    again = fetch_dataset("nwpu", dest, [z], md5=_md5(z), expected_counts=FAKE_NWPU, progress=False)
    assert again["skipped"] and again["counts"] == FAKE_NWPU
    assert (dest / ROOT / "ground truth" / "001.txt").stat().st_mtime_ns == mtime
    forced = fetch_dataset("nwpu", dest, [z], md5=_md5(z), expected_counts=FAKE_NWPU, force=True, progress=False)
    assert not forced["skipped"] and not _leftovers(dest)


def test_unknown_zip_without_md5_warns(tmp_path: Path) -> None:
    z = _tar(tmp_path / "mirror.tar.gz", _nwpu_members())
    rep = fetch_dataset("nwpu", tmp_path / "d", [z], expected_counts=FAKE_NWPU, progress=False)
    assert any("unverified" in w and str(z) in w for w in rep["warnings"])
    assert not rep["sources"][0]["verified"]


def test_wrong_counts_fail_before_placing(tmp_path: Path) -> None:
    z = _zip(tmp_path / "x.zip", _nwpu_members())
    dest = tmp_path / "d"
    with pytest.raises(FetchError, match=r"positive image set: holds 3 files for 'positive', expected 650") as ei:
        fetch_dataset("nwpu", dest, [z], md5=_md5(z), progress=False)
    assert str(dest / ROOT) in str(ei.value) and ".stage-" not in str(ei.value)
    assert not dest.exists() and not _leftovers(dest)


def test_download_file_url_right_and_wrong_md5(tmp_path: Path) -> None:
    z = _zip(tmp_path / "srv" / NWPU.archive_name, _nwpu_members())
    url = z.as_uri()
    bad = tmp_path / "bad"
    with pytest.raises(ChecksumError) as ei:
        fetch_dataset("nwpu", bad, allow_download=True, url=url, expected_counts=FAKE_NWPU, progress=False)
    assert NWPU.archive_name in str(ei.value) and NWPU.md5 in str(ei.value) and _md5(z) in str(ei.value)
    assert not bad.exists() and not _leftovers(bad)
    keep = tmp_path / "downloads"
    dest = tmp_path / "good"
    rep = fetch_dataset("nwpu", dest, allow_download=True, url=url, md5=_md5(z), expected_counts=FAKE_NWPU,
                        download_dir=keep, progress=False)
    assert rep["sources"][0]["kind"] == "download" and rep["sources"][0]["url"] == url
    assert (dest / ROOT / "negative image set" / "002.jpg").read_bytes() == _nwpu_members()[
        f"{ROOT}/negative image set/002.jpg"]
    assert _md5(keep / NWPU.archive_name) == _md5(z) and not list(keep.glob(".*part"))
    with pytest.raises(FetchError, match="download of .*missing.zip"):
        fetch_dataset("nwpu", tmp_path / "m", allow_download=True, url=(tmp_path / "missing.zip").as_uri(),
                      md5="0" * 32, progress=False)
    with pytest.raises(FetchError, match="without allow_download"):
        fetch_dataset("nwpu", tmp_path / "m", url=url, progress=False)


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_zip_slip_member_rejected(tmp_path: Path, member: str) -> None:
    members = _nwpu_members()
    members[member] = b"pwned"
    z = _zip(tmp_path / "src" / "slip.zip", members)
    dest = tmp_path / "out" / "nwpu"
    with pytest.raises(UnsafeArchiveError) as ei:
        fetch_dataset("nwpu", dest, [z], md5=_md5(z), expected_counts=FAKE_NWPU, progress=False)
    assert repr(member) in str(ei.value) and str(z) in str(ei.value)
    assert not dest.exists() and not _leftovers(dest) and not list(tmp_path.rglob("evil.txt"))


def test_tar_symlink_member_rejected(tmp_path: Path) -> None:
    t = tmp_path / "links.tar"
    with tarfile.open(t, "w") as tf:
        info = tarfile.TarInfo("train/images/P0001.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="P0001.png.*link"):
        fetch_dataset("dota", tmp_path / "dota", [t], progress=False)
    assert not (tmp_path / "dota").exists()


@pytest.mark.parametrize("name", ["nwpu", "dota", "hrrsd"])
def test_missing_source_explains_where_terms_and_command(tmp_path: Path, name: str) -> None:
    src = get_source(name)
    with pytest.raises(SourceMissingError) as ei:
        fetch_dataset(name, tmp_path / name, progress=False)
    msg = str(ei.value)
    assert src.terms in msg and src.where_to_get[0] in msg
    assert f"python -m data_prep fetch --dataset {name} --dest \"{tmp_path / name}\"" in msg
    assert not (tmp_path / name).exists()
    assert "research purposes only" in NWPU.terms and "academic use only, no commercial use" in DOTA.terms
    assert HRRSD.annotations_repo == "https://github.com/CrazyStoneonRoad/TGRS-HRRSD-Dataset"


@pytest.mark.realdata
def test_real_nwpu_folder_with_shared_manifest(nwpu_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "nwpu"
    rep = fetch_dataset("nwpu", dest, [nwpu_dir], manifest=nwpu_dir / "MANIFEST.sha256", progress=False)
    assert rep["counts"] == dict(NWPU.expected_counts)
    assert rep["manifest"]["verified"] == 1451 and rep["manifest"]["listed"] == 1452
    assert (dest / ROOT / "ground truth" / "650.txt").is_file() and not (dest / "extras").exists()


# ---------------------------------------------------------------- DOTA
def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (seed, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


OBB = b"imagesource:GoogleEarth\ngsd:0.1\n1 1 9 1 9 9 1 9 plane 0\n"
HBB = b"imagesource:GoogleEarth\ngsd:0.1\n1 1 9 1 9 9 1 9 plane 0\n# hbb\n"


def test_dota_obb_and_hbb_kept_apart(tmp_path: Path) -> None:
    dl = tmp_path / "DOTA"
    imgs = _zip(dl / "train" / "images" / "part1.zip", {"images/P0001.png": _png(1), "images/P0002.png": _png(2)})
    obb = _zip(dl / "train" / "labelTxt-v1.5" / "DOTA-v1.5_train.zip", {"P0001.txt": OBB, "P0002.txt": OBB})
    hbb = _tar(dl / "DOTA-v1.5_train_hbb.tar.gz", {"P0001.txt": HBB, "P0002.txt": HBB, "readme.md": b"x"})
    dest = tmp_path / "dota"
    rep = fetch_dataset("dota", dest, [imgs, obb, hbb], checksums={"train/images/part1.zip": _md5(imgs)},
                        expected_counts={"train_images": 2}, progress=False)
    assert (dest / "train" / "labelTxt" / "P0001.txt").read_bytes() == OBB
    assert (dest / "train" / "labelTxt_hbb" / "P0001.txt").read_bytes() == HBB
    assert sorted(p.name for p in (dest / "train" / "images").iterdir()) == ["P0001.png", "P0002.png"]
    assert rep["counts"] == {"train_images": 2, "train_labelTxt": 2, "train_labelTxt_hbb": 2}
    assert [s["verified"] for s in rep["sources"]] == [True, False, False]
    assert any("'val' is not present" in w for w in rep["warnings"])
    val = _zip(tmp_path / "val_images.zip", {"P0003.png": _png(3)})
    val_lab = _zip(tmp_path / "DOTA-v1.5_val.zip", {"labelTxt/P0003.txt": OBB})
    rep2 = fetch_dataset("dota", dest, [val, val_lab], expected_counts={"train_images": 2, "val_images": 1},
                         progress=False)
    assert rep2["placed"] == ["val/images", "val/labelTxt"] and (dest / "train" / "labelTxt_hbb").is_dir()
    assert rep2["counts"]["val_images"] == 1 and rep2["counts"]["train_images"] == 2 and not _leftovers(dest)
    assert {s["name"] for s in rep2["sources"]} >= {"part1.zip", "val_images.zip"}


def test_dota_part_detection_and_checksum_errors(tmp_path: Path) -> None:
    assert split_names_in("DOTA-v1.5_train_hbb") == {"train"} and split_names_in("trainval") == {"train", "val"}
    assert split_names_in("interval_latest") == set() and split_names_in("part1") == set()
    ambiguous = _zip(tmp_path / "trainval.zip", {"images/P0001.png": _png(1)})
    dest = tmp_path / "dota"
    with pytest.raises(FetchError, match=r"trainval\.zip: cannot tell .*ambiguous"):
        fetch_dataset("dota", dest, [ambiguous], progress=False)
    unknown = _zip(tmp_path / "a" / "b" / "part1.zip", {"images/P0001.png": _png(1)})
    with pytest.raises(FetchError, match=r"part1\.zip: cannot tell .*no train/val/test"):
        fetch_dataset("dota", dest, [unknown], progress=False)
    with pytest.raises(ChecksumError, match=r"part1\.zip.*expected md5 f{32}"):
        fetch_dataset("dota", dest, [unknown], checksums={"part1.zip": "f" * 32}, progress=False)
    nothing = _zip(tmp_path / "train_docs.zip", {"readme.txt": b"x"})
    with pytest.raises(FetchError, match=r"no DOTA-v1.5 files found in .*train_docs\.zip"):
        fetch_dataset("dota", dest, [nothing], progress=False)
    assert not dest.exists() and not _leftovers(dest)


# ---------------------------------------------------------------- HRRSD
def _hrrsd_repo(root: Path) -> Path:
    for i in (1, 2, 3):
        (root / "OPT2017" / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "OPT2017" / "Annotations" / f"{i:05d}.xml").write_text(f"<annotation><filename>{i:05d}</filename>"
                                                                        "</annotation>")
    main = root / "OPT2017" / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for split, i in (("train", 1), ("val", 2), ("test", 3)):
        (main / f"{split}.txt").write_text(f"{i:05d}\n")
    (main / "T junction_train.txt").write_text("00001  1\n")
    (root / "OPT2017" / "labels").mkdir()
    (root / "OPT2017" / "labels" / "00001.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    return root


HRRSD_COUNTS = {"images": 3, "train": 1, "val": 1, "test": 1}


def test_hrrsd_annotations_folder_and_image_zip(tmp_path: Path) -> None:
    repo = _hrrsd_repo(tmp_path / "TGRS-HRRSD-Dataset")
    images = _zip(tmp_path / "HRRSD_images.zip", {f"OPT2017/JPEGImages/{i:05d}.jpg": _jpeg(i) for i in (1, 2, 3)})
    dest = tmp_path / "hrrsd"
    rep = fetch_dataset("hrrsd", dest, [images], hrrsd_annotations=repo, expected_counts=HRRSD_COUNTS, progress=False)
    assert rep["counts"] == {**HRRSD_COUNTS, "annotations": 3}
    opt = dest / "OPT2017"
    assert sorted(p.name for p in (opt / "JPEGImages").iterdir()) == ["00001.jpg", "00002.jpg", "00003.jpg"]
    assert (dest / "OPT2017" / "ImageSets" / "Main" / "T junction_train.txt").is_file()
    assert len(list((opt / "Annotations").glob("*.xml"))) == 3 and not (opt / "labels").exists()
    with pytest.raises(SourceMissingError, match="no HRRSD annotations"):
        fetch_dataset("hrrsd", tmp_path / "h2", [images], expected_counts=HRRSD_COUNTS, progress=False)
    assert not (tmp_path / "h2").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_hrrsd_annotations_git_clone_from_local_repo(tmp_path: Path) -> None:
    repo = _hrrsd_repo(tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
           "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fixture"]):
        subprocess.run(git + args, check=True, capture_output=True)
    images = _zip(tmp_path / "imgs.zip", {f"{i:05d}.jpg": _jpeg(i) for i in (1, 2, 3)})
    rep = fetch_dataset("hrrsd", tmp_path / "hrrsd", [images], allow_download=True, annotations_repo=repo.as_uri(),
                        expected_counts=HRRSD_COUNTS, progress=False)
    git_src = [s for s in rep["sources"] if s["kind"] == "git"]
    assert len(git_src) == 1 and len(git_src[0]["commit"]) == 40 and rep["counts"]["annotations"] == 3

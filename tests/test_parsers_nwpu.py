"""NWPU VHR-10 parser: every trap of the genuine files, error messages, layout checks."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from data_prep.classes import NWPU_CLASSES
from data_prep.errors import AnnotationError, CorruptImageError, DataError, UnknownClassError
from data_prep.parsers.nwpu import load_nwpu, parse_nwpu_file, parse_nwpu_line, resolve_nwpu_root


@pytest.mark.parametrize("line, expected", [
    ("(563,478),(630,573),1", (563.0, 478.0, 630.0, 573.0, 1)),
    ("(563,478),(630,573),1 ", (563.0, 478.0, 630.0, 573.0, 1)),          # trailing space
    ("(563,478),(630,573),10 \r", (563.0, 478.0, 630.0, 573.0, 10)),      # CRLF remnant
    ("( 72,305),(133,369),1 ", (72.0, 305.0, 133.0, 369.0, 1)),           # padded x1
    ("(445, 88),(516,168),1", (445.0, 88.0, 516.0, 168.0, 1)),            # padded y1
    ("(  5,  8),( 16, 18),3", (5.0, 8.0, 16.0, 18.0, 3)),                # padded everywhere
    ("\t(1,2), (3,4), 2\t", (1.0, 2.0, 3.0, 4.0, 2)),                    # spaces between groups
])
def test_valid_lines(line: str, expected: tuple) -> None:
    assert parse_nwpu_line(line, "gt/001.txt", 1) == expected


@pytest.mark.parametrize("line", ["", " ", "   \t", "\r", "\n"])
def test_blank_lines_are_none(line: str) -> None:
    assert parse_nwpu_line(line, "gt/001.txt", 1) is None


@pytest.mark.parametrize("line", [
    "(1,2),(3,4)", "(1,2),(3,4),", "(1,2),(3,4),a", "1,2,3,4,1", "(1,2),(3,4),1,5",
    "(1,2),(3,4),1.5", "(1;2),(3,4),1", "(1,2)(3,4),1", "airplane",
])
def test_malformed_line_names_file_and_line(line: str) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_nwpu_line(line, "ground truth/007.txt", 12)
    assert "ground truth/007.txt:12" in str(info.value)
    assert info.value.line == 12 and info.value.path == "ground truth/007.txt"
    assert not isinstance(info.value, UnknownClassError)


@pytest.mark.parametrize("cls", [0, 11, -1, 99])
def test_class_id_out_of_range(cls: int) -> None:
    with pytest.raises(UnknownClassError, match=r"007\.txt:3: class id"):
        parse_nwpu_line(f"(1,2),(3,4),{cls}", "007.txt", 3)


def test_file_with_blank_lines_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "440.txt"
    path.write_text("(1,2),(30,40),1 \n\n  \n( 72,305),(133,369),10 \n(445, 88),(516,168),3 ")
    objects = parse_nwpu_file(path)
    assert [o.category for o in objects] == ["airplane", "vehicle", "storage tank"]
    assert objects[1].bbox == (72.0, 305.0, 133.0, 369.0)
    assert [o.source for o in objects] == [f"{path}:1", f"{path}:4", f"{path}:5"]
    assert all(o.difficult == 0 for o in objects)


def test_file_error_reports_real_line_number(tmp_path: Path) -> None:
    path = tmp_path / "123.txt"
    path.write_text("(1,2),(3,4),1 \n\n(1,2),(3,4) \n")  # blank line 2 still counts
    with pytest.raises(AnnotationError, match=r"123\.txt:3: expected"):
        parse_nwpu_file(path)


def _img(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 80, 120)).save(path)


def _make_root(tmp_path: Path) -> Path:
    root = tmp_path / "NWPU VHR-10 dataset"
    _img(root / "positive image set" / "001.jpg", (64, 48))
    _img(root / "positive image set" / "002.jpg", (50, 40))
    _img(root / "negative image set" / "001.jpg", (32, 30))
    gt = root / "ground truth"
    gt.mkdir(parents=True)
    (gt / "001.txt").write_text("(1,2),(30,40),1 \n( 5, 6),(10,12),10 \n")
    (gt / "002.txt").write_text("\n(0,0),(50,40),5")
    return root


def test_load_nwpu_layout(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    images = load_nwpu(root)
    assert [im.file_name for im in images] == [
        "negative image set/001.jpg", "positive image set/001.jpg", "positive image set/002.jpg"]
    neg, p1, p2 = images
    assert neg.negative and neg.objects == [] and (neg.width, neg.height) == (32, 30)
    assert not p1.negative and (p1.width, p1.height) == (64, 48)
    assert [(o.bbox, o.category) for o in p1.objects] == [((1.0, 2.0, 30.0, 40.0), "airplane"),
                                                          ((5.0, 6.0, 10.0, 12.0), "vehicle")]
    assert p2.objects[0].category == NWPU_CLASSES[4] and all(im.split is None for im in images)
    assert resolve_nwpu_root(tmp_path) == root and resolve_nwpu_root(root) == root


def test_ground_truth_without_image(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "ground truth" / "003.txt").write_text("(1,2),(3,4),1\n")
    with pytest.raises(DataError, match=r"without a matching image.*003\.txt"):
        load_nwpu(root)


def test_image_without_ground_truth(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    _img(root / "positive image set" / "004.jpg", (20, 20))
    with pytest.raises(DataError, match=r"without an annotation file.*004\.jpg"):
        load_nwpu(root)


def test_missing_folder(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "negative image set" / "001.jpg").unlink()
    (root / "negative image set").rmdir()
    with pytest.raises(DataError, match="negative image set"):
        load_nwpu(root)


def test_corrupt_image_skipped_or_strict(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "positive image set" / "002.jpg").write_bytes(b"not a jpeg at all")
    skipped: list[dict] = []
    images = load_nwpu(root, skipped=skipped)
    assert [im.file_name for im in images] == ["negative image set/001.jpg", "positive image set/001.jpg"]
    assert len(skipped) == 1 and skipped[0]["file"] == "positive image set/002.jpg"
    assert "unreadable" in skipped[0]["reason"]
    with pytest.raises(CorruptImageError, match="002.jpg"):
        load_nwpu(root, strict=True)


def test_bad_label_in_real_layout_names_file(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "ground truth" / "002.txt").write_text("(0,0),(50,40),5\n(0,0),(50,40),12\n")
    with pytest.raises(UnknownClassError, match=r"002\.txt:2"):
        load_nwpu(root)


@pytest.mark.realdata
def test_real_ground_truth_files_parse(nwpu_root: Path) -> None:
    """All 650 genuine files parse (traps included) into exactly 3,896 boxes."""
    files = sorted((nwpu_root / "ground truth").glob("*.txt"))
    assert len(files) == 650
    raw = [f.read_text() for f in files]
    assert sum(not t.endswith("\n") for t in raw) >= 14                        # no final newline
    assert sum(line.strip() == "" for t in raw for line in t.split("\n")[:-1]) >= 24  # blank lines
    assert any("( " in t or ", " in t for t in raw)                             # padded numbers
    counts = [0] * 10
    for f in files:
        objs = parse_nwpu_file(f)
        assert objs, f"{f} has no objects"
        for o in objs:
            x1, y1, x2, y2 = o.bbox
            assert x2 > x1 and y2 > y1
            counts[NWPU_CLASSES.index(o.category)] += 1
    assert counts == [757, 302, 655, 390, 524, 159, 163, 224, 124, 598]

"""The Cambridge Landmarks pose-list parser and writer, on the real distributed file and on broken ones."""

from pathlib import Path

import pytest

from geocli.data.formats import cambridge as fmt
from geocli.errors import DataError

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
KINGS_TEST = FIXTURES / "cambridge_kingscollege" / "dataset_test.txt"
HEADER = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "dataset_train.txt"
    path.write_text(header + body, encoding="utf-8")
    return path


@pytest.mark.shared
def test_real_kingscollege_test_list():
    if not KINGS_TEST.is_file():
        pytest.skip(f"reference file {KINGS_TEST} not found (only CI and developer machines have ../shared)")
    rows, problems = fmt.read(KINGS_TEST)
    assert problems == [] and len(rows) == 343  # the port's README says 342; the file has 343 rows
    first = rows[0]
    assert first.image == "seq7/frame00030.png" and first.line == 4
    assert first.xyz == pytest.approx((-20.134839, -16.641770, 1.735459))
    assert first.wpqr == pytest.approx((0.672315, 0.574745, -0.296687, 0.360053))
    assert {r.image.split("/")[0] for r in rows} == {"seq2", "seq3", "seq7"}
    assert [r.image for r in rows] != sorted(r.image for r in rows)  # order kept as distributed
    assert len({r.image for r in rows}) == 343


def test_round_trip_through_the_writer(tmp_path):
    rows = [fmt.PoseRow("seq1/frame00001.png", (1.5, -2.25, 0.125), (1.0, 0.0, 0.0, 0.0)),
            fmt.PoseRow("seq10/frame00002.png", (-20.1, 3.0, 1.7), (0.5, 0.5, -0.5, 0.5))]
    path = fmt.write(tmp_path / "dataset_test.txt", rows)
    assert path.read_text().startswith(HEADER)
    back, problems = fmt.read(path)
    assert problems == []
    assert [(r.image, r.xyz, r.wpqr) for r in back] == [(r.image, r.xyz, r.wpqr) for r in rows]
    assert [r.line for r in back] == [4, 5]


def test_blank_lines_and_windows_line_endings_are_accepted(tmp_path):
    path = tmp_path / "dataset_test.txt"
    path.write_bytes((HEADER + "seq1/a.png 1 2 3 1 0 0 0\n\n").replace("\n", "\r\n").encode())
    rows, _ = fmt.read(path)
    assert len(rows) == 1


@pytest.mark.parametrize("body, line, words", [
    ("seq1/a.png 1 2 3 1 0 0\n", 4, "(8 fields), got 7"),
    ("seq1/a.png 1 2 3 1 0 0 0\nseq1/b.png 1 2 x 1 0 0 0\n", 5, "'x' is not a number"),
    ("seq1/a.png 1 2 3 0 0 0 0\n", 4, "quaternion"),
    ("seq1/a.png 1 2 nan 1 0 0 0\n", 4, "finite"),
    ("../etc/a.png 1 2 3 1 0 0 0\n", 4, "relative"),
    ("/abs/a.png 1 2 3 1 0 0 0\n", 4, "relative"),
])
def test_malformed_rows_name_file_and_line(tmp_path, body, line, words):
    path = write(tmp_path, body)
    with pytest.raises(DataError) as info:
        fmt.read(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and words in message and "\n" not in message


def test_missing_header_is_reported_not_eaten(tmp_path):
    # the port skips 3 lines blindly and would lose the first row of this file
    path = write(tmp_path, "seq1/a.png 1 2 3 1 0 0 0\nseq1/b.png 1 2 3 1 0 0 0\n"
                           "seq1/c.png 1 2 3 1 0 0 0\nseq1/d.png 1 2 3 1 0 0 0\n", header="")
    with pytest.raises(DataError, match=r"dataset_train.txt:1: expected the header line"):
        fmt.read(path)
    with pytest.raises(DataError, match=r":3: expected the header line ''"):
        fmt.read(write(tmp_path, "seq1/a.png 1 2 3 1 0 0 0\n", header=HEADER.rstrip("\n") + "\nnot blank\n"))


def test_empty_list_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        fmt.read(write(tmp_path, ""))
    with pytest.raises(DataError, match="not found"):
        fmt.read(tmp_path / "nope" / "dataset_train.txt")


def test_skip_bad_returns_every_problem(tmp_path):
    path = write(tmp_path, "seq1/a.png 1 2 3 1 0 0 0\nbroken\nseq1/c.png 1 2 3 1 0 0 0\nseq1/d.png 1 y 3 1 0 0 0\n")
    rows, problems = fmt.read(path, skip_bad=True)
    assert [r.image for r in rows] == ["seq1/a.png", "seq1/c.png"]
    assert [p.split(": ")[0] for p in problems] == [f"{path}:5", f"{path}:7"]

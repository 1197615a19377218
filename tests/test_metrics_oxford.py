"""The Oxford5k ground-truth parser, on the real distributed files and on broken ones."""

from pathlib import Path

import pytest

from geocli.errors import DataError
from geocli.metrics.oxford import load_oxford_gt
from geocli.metrics.retrieval import oxford_ap

SHARED_GT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "oxford5k_gt"
needs_shared_gt = pytest.mark.skipif(
    not SHARED_GT.is_dir(),
    reason=f"real Oxford5k ground truth not found at {SHARED_GT} (only the team workspace has ../shared)")


@pytest.mark.shared
@needs_shared_gt
def test_real_oxford_ground_truth():
    queries = load_oxford_gt(SHARED_GT)
    assert len(queries) == 55
    assert len({q.landmark for q in queries}) == 11
    first = queries[0]
    assert first.name == "all_souls_1" and first.landmark == "all_souls"
    assert first.image == "all_souls_000013"  # oxc1_ stripped
    assert first.box == (136.5, 34.1, 648.5, 955.7)
    assert all(isinstance(v, float) for q in queries for v in q.box)
    assert not any(q.image.startswith("oxc1_") for q in queries)
    assert len(first.good) == 25 and len(set(first.good)) == 24


@pytest.mark.shared
@needs_shared_gt
def test_oxford_ap_counts_the_duplicated_good_image_once():
    query = next(q for q in load_oxford_gt(SHARED_GT) if q.name == "all_souls_1")
    ranking = list(dict.fromkeys(query.good + query.ok)) + ["unrelated_1", "unrelated_2"]
    assert oxford_ap(ranking, query.good, query.ok, query.junk) == pytest.approx(1.0)


def _write_query(folder: Path, name: str, query_line: str, good="a\nb\n"):
    (folder / f"{name}_query.txt").write_text(query_line)
    (folder / f"{name}_good.txt").write_text(good)
    (folder / f"{name}_ok.txt").write_text("c\n")
    (folder / f"{name}_junk.txt").write_text("")


def test_small_folder_parses_integer_boxes_and_blank_lines(tmp_path):
    _write_query(tmp_path, "tower_2", "oxc1_tower_000001 78 5 714 1000\n", good="a\n\nb\n")
    (query,) = load_oxford_gt(tmp_path)
    assert (query.name, query.landmark, query.image) == ("tower_2", "tower", "tower_000001")
    assert query.box == (78.0, 5.0, 714.0, 1000.0)
    assert (query.good, query.ok, query.junk) == (["a", "b"], ["c"], [])


def test_broken_query_line_names_file_and_line(tmp_path):
    _write_query(tmp_path, "tower_1", "\noxc1_tower_000001 78 5 x2 1000\n")
    with pytest.raises(DataError, match=r"tower_1_query\.txt:2: box coordinates must be numbers"):
        load_oxford_gt(tmp_path)


def test_broken_list_line_and_missing_files(tmp_path):
    _write_query(tmp_path, "tower_1", "oxc1_tower_000001 1 2 3 4\n", good="a\nb c\n")
    with pytest.raises(DataError, match=r"tower_1_good\.txt:2: expected one image name"):
        load_oxford_gt(tmp_path)
    (tmp_path / "tower_1_good.txt").unlink()
    with pytest.raises(DataError, match=r"tower_1_good\.txt: missing"):
        load_oxford_gt(tmp_path)
    with pytest.raises(DataError, match="folder not found"):
        load_oxford_gt(tmp_path / "tower_1_ok.txt")  # a file is not a folder
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no '\*_query\.txt' files"):
        load_oxford_gt(empty)

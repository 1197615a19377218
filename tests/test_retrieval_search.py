"""Chunked exact top-k search: agreement with a full sort, tie order, bounded memory, writers."""

import json
import tracemalloc

import h5py
import numpy as np
import pytest

from geocli.errors import UsageError
from geocli.retrieval.results import write_ranked_pairs, write_results_json
from geocli.retrieval.search import import_faiss, chunk_sizes, topk_search


def _integer_data(n_query, n_gallery, dim, seed=0):
    """Small integers: float32 products are exact, so a reference sort sees identical scores."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-3, 4, (n_query, dim)).astype(np.float32),
            rng.integers(-3, 4, (n_gallery, dim)).astype(np.float32))


def _reference(queries, gallery, k, metric):
    if metric == "ip":
        scores = queries @ gallery.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        scores = ((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_chunked_search_equals_full_stable_sort(metric):
    queries, gallery = _integer_data(23, 301, 6)  # many exact ties among integer scores
    expected_scores, expected_idx = _reference(queries, gallery, 10, metric)
    for budget in (4 * 6 * 8, 4096, 10**8):  # chunks smaller than k, medium, one chunk
        result = topk_search(queries, gallery, k=10, metric=metric, memory_budget=budget, query_chunk=4)
        np.testing.assert_array_equal(result.indices, expected_idx)
        np.testing.assert_allclose(result.scores, expected_scores)


def test_ties_go_to_the_lower_gallery_index():
    gallery = np.zeros((50, 4), dtype=np.float32)
    gallery[[7, 30, 44]] = [1, 0, 0, 0]  # three identical best rows
    result = topk_search(np.array([[1, 0, 0, 0]]), gallery, k=5, memory_budget=4 * 4 * 8, query_chunk=1)
    assert result.indices[0].tolist() == [7, 30, 44, 0, 1]


def test_k_larger_than_gallery_and_h5py_gallery(tmp_path):
    queries, gallery = _integer_data(3, 12, 5)
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["global"] = gallery
    with h5py.File(tmp_path / "g.h5", "r") as f:
        result = topk_search(queries, f["global"], k=100, memory_budget=4 * 5 * 8)
    assert result.indices.shape == (3, 12)
    np.testing.assert_array_equal(result.indices, _reference(queries, gallery, 12, "ip")[1])


def test_memory_stays_below_the_full_similarity_matrix():
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((400, 32), dtype=np.float32)
    gallery = rng.standard_normal((20000, 32), dtype=np.float32)
    full_matrix_bytes = 400 * 20000 * 4  # 32 MB
    tracemalloc.start()
    topk_search(queries, gallery, k=10, memory_budget=2 * 2**20, query_chunk=128)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < full_matrix_bytes / 4


def test_chunk_sizes_respect_budget():
    gallery_chunk, query_chunk = chunk_sizes(n_query=10**6, dim=4096, budget=256 * 2**20)
    assert gallery_chunk * 4096 * 4 <= 128 * 2**20 and gallery_chunk * query_chunk * 4 <= 128 * 2**20


def test_bad_input_is_rejected():
    queries, gallery = _integer_data(2, 5, 3)
    gallery[3, 1] = np.nan
    with pytest.raises(ValueError, match="gallery row 3 is not finite"):
        topk_search(queries, gallery, k=2)
    with pytest.raises(ValueError, match="3-d"):
        topk_search(queries, np.zeros((5, 4)), k=2)
    with pytest.raises(UsageError, match="ip, l2"):
        topk_search(queries, np.zeros((5, 3)), metric="cosine")


def test_faiss_backend_missing_is_a_clear_error_or_agrees():
    queries, gallery = _integer_data(4, 40, 8)
    if import_faiss() is None:
        with pytest.raises(UsageError, match="pip install faiss-cpu"):
            topk_search(queries, gallery, k=3, backend="faiss")
        return
    result = topk_search(queries, gallery, k=3, backend="faiss")
    np.testing.assert_allclose(result.scores, _reference(queries, gallery, 3, "ip")[0])


def test_progress_is_reported_per_gallery_chunk():
    queries, gallery = _integer_data(2, 30, 4)
    seen = []
    topk_search(queries, gallery, k=2, memory_budget=4 * 4 * 20, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (30, 30) and len(seen) > 1


def test_writers(tmp_path):
    indices = np.array([[2, 0], [1, -1]])
    scores = np.array([[0.9, 0.5], [0.7, np.nan]])
    pairs = write_ranked_pairs(tmp_path / "out" / "pairs.txt", ["q1", "q2"], ["a/x.jpg", "b", "c"], indices)
    assert pairs.read_text() == "q1 c\nq1 a/x.jpg\nq2 b\n"
    doc = json.loads(write_results_json(tmp_path / "r.json", ["q1", "q2"], ["a", "b", "c"], indices,
                                        scores, metric="ip", extra={"model": "delf"}).read_text())
    assert doc["metric"] == "ip" and doc["k"] == 2 and doc["model"] == "delf"
    assert doc["queries"][0]["results"] == [{"rank": 1, "name": "c", "index": 2, "score": 0.9},
                                            {"rank": 2, "name": "a", "index": 0, "score": 0.5}]
    assert len(doc["queries"][1]["results"]) == 1
    with pytest.raises(ValueError, match="whitespace"):
        write_ranked_pairs(tmp_path / "p.txt", ["q 1"], ["a"], np.array([[0]]))
    assert not list(tmp_path.glob(".p.txt.*"))  # no temporary file left behind

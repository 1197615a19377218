"""Descriptor index (exact NumPy / faiss IVF-Flat / IVF-PQ), RANSAC verification and DELF-style local retrieval."""

import os

import numpy as np
import pytest

from geocli.errors import DataError, UsageError
from geocli.retrieval import ann as ann_module
from geocli.retrieval.ann import DescriptorIndex
from geocli.retrieval.search import import_faiss
from geocli.retrieval.local import LocalIndex
from geocli.retrieval.store import FeatureStore
from geocli.retrieval.synthetic import make_local_set, random_affine
from geocli.retrieval.verify import count_inliers, ransac_affine


def test_exact_index_matches_brute_force_and_marks_missing_neighbours():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((20, 8)).astype(np.float32)
    dist, rows = DescriptorIndex.build(data, kind="exact").search(queries, k=5)
    full = np.linalg.norm(queries[:, None] - data[None], axis=2)
    expected = np.argsort(full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, axis=1), rtol=1e-4, atol=1e-4)
    small = DescriptorIndex.build(np.array([[0, 0], [1, 0], [5, 5]], np.float32), kind="exact")
    dist, rows = small.search(np.array([[0, 0]], np.float32), k=5, max_distance=1.5)
    assert rows.tolist() == [[0, 1, -1, -1, -1]] and np.isinf(dist[0, 2:]).all()


def test_faiss_ivf_agrees_with_exact_when_every_cell_is_probed(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((4000, 16)).astype(np.float32)
    queries = rng.standard_normal((30, 16)).astype(np.float32)
    ivf = DescriptorIndex.build(data, kind="ivf", n_cells=16)
    assert ivf.nprobe == 8  # IVF-Flat keeps its default
    exact = DescriptorIndex.build(data, kind="exact")
    _, ivf_rows = ivf.search(queries, k=3, nprobe=16)
    _, exact_rows = exact.search(queries, k=3)
    np.testing.assert_array_equal(ivf_rows, exact_rows)
    _, few = ivf.search(queries, k=1, nprobe=2)
    assert np.mean(few[:, 0] == exact_rows[:, 0]) > 0.4  # approximate with few cells probed
    ivf.save(tmp_path / "ivf")
    reloaded = DescriptorIndex.load(tmp_path / "ivf")
    np.testing.assert_array_equal(reloaded.search(queries, k=3, nprobe=16)[1], exact_rows)
    with pytest.raises(DataError, match="16-d"):
        reloaded.search(np.zeros((1, 8), np.float32))


def test_faiss_ivf_pq_reranks_exactly_and_round_trips(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    data = rng.standard_normal((4000, 16)).astype(np.float32)
    queries = rng.standard_normal((30, 16)).astype(np.float32)
    pq = DescriptorIndex.build(data, kind="ivf-pq", n_cells=16)
    exact_dist, exact_rows = DescriptorIndex.build(data, kind="exact").search(queries, k=3)
    # every cell probed and 3,000 of the 4,000 candidates re-ranked with float vectors: exact answers, exact distances
    dist, rows = pq.search(queries, k=3, nprobe=16, refine=1000)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(dist, exact_dist, rtol=1e-4, atol=1e-4)
    # the 4-bit codes alone (refine 1) rank worse than exact, more re-ranking recovers most of it
    coarse = np.mean(pq.search(queries, k=3, nprobe=16, refine=1)[1] == exact_rows)
    refined = np.mean(pq.search(queries, k=3, nprobe=16, refine=20)[1] == exact_rows)
    assert coarse < 0.5 and refined > 0.9
    _, bounded = pq.search(queries, k=3, nprobe=16, refine=1000, max_distance=float(exact_dist[0, 1]))
    assert bounded[0, :2].tolist() == exact_rows[0, :2].tolist() and bounded[0, 2] == -1
    pq.save(tmp_path / "pq")
    reloaded = DescriptorIndex.load(tmp_path / "pq")
    assert (reloaded.kind, reloaded.refine, reloaded.nprobe) == ("ivf-pq", 2.0, 16)  # its own default nprobe
    np.testing.assert_array_equal(reloaded.search(queries, k=3, nprobe=16, refine=1000)[1], exact_rows)
    monkeypatch.setattr(ann_module, "EXACT_BELOW", 1000)
    assert DescriptorIndex.build(data, kind="auto", n_cells=16).kind == "ivf-pq"
    with pytest.raises(UsageError, match="divide"):
        DescriptorIndex.build(data, kind="ivf-pq", n_cells=16, pq_m=5)
    with pytest.raises(UsageError, match="1 to 1000"):
        pq.search(queries, k=3, refine=0.5)


def test_faiss_import_leaves_the_environment_alone(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert import_faiss() is not None and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert import_faiss() is not None and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_ransac_recovers_a_known_affine():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 500, (60, 2))
    affine = random_affine(rng, (640, 480))
    dst = src @ affine[:, :2].T + affine[:, 2]
    dst[:20] = rng.uniform(0, 500, (20, 2))  # a third of outliers
    matrix, inliers = ransac_affine(src, dst)
    np.testing.assert_allclose(matrix, affine, atol=1e-3)
    assert inliers[20:].all() and inliers[:20].sum() <= 2
    assert count_inliers(src[:2], dst[:2]) == 0  # fewer than three correspondences
    line = np.stack([np.arange(10.0), np.arange(10.0)], axis=1)
    assert count_inliers(line, line * 2) <= 10   # collinear: no crash
    assert count_inliers(src, rng.uniform(0, 500, (60, 2)), residual_threshold=5) < 10
    assert count_inliers(src, dst) == count_inliers(src, dst)  # seeded: reproducible
    with pytest.raises(ValueError):
        count_inliers(src, dst[:5])


def _with_shuffled_copy(synthetic, query):
    """Adds a database image with the query source's descriptors at random places: many votes,
    no geometry. Verification has to demote it below the true image."""
    rng = np.random.default_rng(9)
    source = synthetic.query_sources[query]
    descriptors = list(synthetic.db_descriptors) + [synthetic.db_descriptors[source].copy()]
    locations = list(synthetic.db_locations) + [rng.permutation(synthetic.db_locations[source])]
    return descriptors, locations


@pytest.mark.parametrize("kind", ["exact", "ivf", "ivf-pq"])
def test_right_image_ranks_first_with_many_inliers(kind):
    synthetic = make_local_set(n_images=60, n_features=200, n_queries=3, inlier_share=0.4, seed=4)
    index = LocalIndex.build(synthetic.db_descriptors, synthetic.db_locations, kind=kind, n_cells=16)
    for q, source in enumerate(synthetic.query_sources):
        result = index.query(synthetic.query_locations[q], synthetic.query_descriptors[q], k=5,
                             nprobe=16, verify=20)
        assert result.images[0] == source
        assert result.inliers[0] >= 60  # 80 true correspondences with 1 px noise
        assert np.all(result.inliers[1:] <= 10)
        assert sorted(result.ranking().tolist()) == list(range(60))


def test_verification_demotes_an_image_with_votes_but_no_geometry():
    synthetic = make_local_set(n_images=60, n_features=200, n_queries=1, inlier_share=0.4, seed=4)
    descriptors, locations = _with_shuffled_copy(synthetic, query=0)
    shuffled = len(descriptors) - 1
    index = LocalIndex.build(descriptors, locations)
    result = index.query(synthetic.query_locations[0], synthetic.query_descriptors[0], k=2, max_distance=0.8)
    assert result.votes[shuffled] >= 60  # as many votes as the true image...
    assert result.images[0] == synthetic.query_sources[0] and result.inliers[0] >= 60
    assert result.inliers[result.images == shuffled][0] <= 10  # ...but no consistent geometry


def test_short_list_vs_verify_all_and_the_minimum_of_putative_matches():
    synthetic = make_local_set(n_images=40, n_features=100, n_queries=1, seed=6)
    index = LocalIndex.build(synthetic.db_descriptors, synthetic.db_locations)
    loc, desc = synthetic.query_locations[0], synthetic.query_descriptors[0]
    everything = index.query(loc, desc, k=60, verify=None)
    assert np.all(everything.votes[everything.images] >= 4)
    assert everything.images.size == np.count_nonzero(everything.votes >= 4)  # the last group too
    short = index.query(loc, desc, k=60, verify=3)
    assert short.images.size == 3 and short.images[0] == everything.images[0]
    strict = index.query(loc, desc, k=60, verify=None, min_matches=10 ** 6)
    assert strict.images.size == 0 and strict.ranking()[0] == np.argmax(strict.votes)


def test_index_from_store_save_load_and_empty_query(tmp_path):
    synthetic = make_local_set(n_images=8, n_features=50, n_queries=1, seed=5)
    with FeatureStore(tmp_path / "local.h5") as store:
        for i, (loc, desc) in enumerate(zip(synthetic.db_locations, synthetic.db_descriptors)):
            store.write(f"db/{i:02d}.jpg", {"locations": loc, "descriptors": desc})
        index = LocalIndex.from_store(store)
    assert index.names == [f"db/{i:02d}.jpg" for i in range(8)] and index.n_images == 8
    empty = index.query(np.zeros((0, 2)), np.zeros((0, 40), np.float32))
    assert empty.images.size == 0 and empty.votes.sum() == 0 and empty.ranking().size == 8
    index.save(tmp_path / "index")
    reloaded = LocalIndex.load(tmp_path / "index")
    result = reloaded.query(synthetic.query_locations[0], synthetic.query_descriptors[0], k=5)
    assert reloaded.names == index.names and result.images[0] == synthetic.query_sources[0]
    with pytest.raises(DataError, match="nothing to index"):
        LocalIndex.build([np.zeros((0, 40))], [np.zeros((0, 2))])


def test_delf_index_settings_build_and_query_an_ivf_pq_index(tmp_path):
    from geocli.models.delf import index as idx

    synthetic = make_local_set(n_images=8, n_features=50, n_queries=1, seed=5)
    with FeatureStore(tmp_path / "db.h5") as store:
        for i, (loc, desc) in enumerate(zip(synthetic.db_locations, synthetic.db_descriptors)):
            store.write(f"db/{i}.jpg", {"locations": loc, "descriptors": desc})
    cfg = idx.settings({"retrieve": {"ann": "ivf-pq", "cells": 4, "knn": 5}})
    assert cfg["nprobe"] is None and cfg["refine"] == 2.0  # None: the index's own nprobe
    info = idx.build_index(tmp_path / "db.h5", tmp_path / "index", cfg)
    assert info["ann"] == "ivf-pq" and info["descriptors"] == 400
    index = idx.load_index(tmp_path / "index")
    assert (index.ann.kind, index.ann.nprobe) == ("ivf-pq", 16)
    query = {"locations": synthetic.query_locations[0], "descriptors": synthetic.query_descriptors[0]}
    for nprobe in (None, 4):
        result = idx.query_index(index, [query], {**cfg, "nprobe": nprobe})[0]
        assert result.images[0] == synthetic.query_sources[0] and result.inliers[0] >= 15

"""IVF index, RANSAC verification and DELF-style local retrieval on structured synthetic data."""

import numpy as np
import pytest

from geocli.retrieval.ivf import IVFIndex, train_kmeans
from geocli.retrieval.local import LocalIndex
from geocli.retrieval.store import FeatureStore
from geocli.retrieval.synthetic import make_local_set, random_affine
from geocli.retrieval.verify import count_inliers


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    x = np.repeat(centres, 100, axis=0) + rng.normal(0, 0.3, (400, 2)).astype(np.float32)
    found = train_kmeans(x, 4, iterations=20, seed=3)
    distance_to_nearest = np.linalg.norm(found[:, None] - centres[None], axis=2).min(axis=1)
    assert np.all(distance_to_nearest < 0.2)


def test_ivf_with_all_cells_probed_is_exact():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((20, 8)).astype(np.float32)
    index = IVFIndex.build(data, n_cells=10)
    dist, rows = index.search(queries, k=5, nprobe=10)
    full = np.linalg.norm(queries[:, None] - data[None], axis=2)
    expected = np.argsort(full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, axis=1), rtol=1e-4, atol=1e-4)


def test_ivf_marks_missing_neighbours_and_distance_bound():
    data = np.array([[0, 0], [1, 0], [5, 5]], dtype=np.float32)
    index = IVFIndex.build(data, n_cells=1)
    dist, rows = index.search(np.array([[0, 0]], np.float32), k=5, max_distance=1.5)
    assert rows.tolist() == [[0, 1, -1, -1, -1]]
    assert dist[0, :2].tolist() == [0.0, 1.0] and np.isinf(dist[0, 2:]).all()


def test_count_inliers_exact_affine_degenerate_and_random():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 500, (60, 2))
    affine = random_affine(rng, (640, 480))
    dst = src @ affine[:, :2].T + affine[:, 2]
    assert count_inliers(src, dst) == 60
    assert count_inliers(src[:2], dst[:2]) == 0  # fewer than three correspondences
    line = np.stack([np.arange(10.0), np.arange(10.0)], axis=1)
    assert count_inliers(line, line * 2) <= 10   # collinear: no crash
    random_dst = rng.uniform(0, 500, (60, 2))
    assert count_inliers(src, random_dst, residual_threshold=5) < 10
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


def test_right_image_ranks_first_with_many_inliers():
    synthetic = make_local_set(n_images=60, n_features=200, n_queries=3, inlier_share=0.4, seed=4)
    index = LocalIndex.build(synthetic.db_descriptors, synthetic.db_locations, n_cells=16)
    for q, source in enumerate(synthetic.query_sources):
        result = index.query(synthetic.query_locations[q], synthetic.query_descriptors[q],
                             nprobe=16, shortlist=20)
        assert result.images[0] == source
        assert result.inliers[0] >= 60  # 80 true correspondences with 1 px noise
        assert np.all(result.inliers[1:] <= 10)
        assert sorted(result.ranking().tolist()) == list(range(60))


def test_verification_demotes_an_image_with_votes_but_no_geometry():
    synthetic = make_local_set(n_images=60, n_features=200, n_queries=1, inlier_share=0.4, seed=4)
    descriptors, locations = _with_shuffled_copy(synthetic, query=0)
    shuffled = len(descriptors) - 1
    index = LocalIndex.build(descriptors, locations, n_cells=16)
    result = index.query(synthetic.query_locations[0], synthetic.query_descriptors[0], nprobe=16)
    assert result.votes[shuffled] >= 60  # as many votes as the true image...
    assert result.images[0] == synthetic.query_sources[0] and result.inliers[0] >= 60
    assert result.inliers[result.images == shuffled][0] <= 10  # ...but no consistent geometry


def test_query_without_features_and_index_from_store(tmp_path):
    synthetic = make_local_set(n_images=8, n_features=50, n_queries=1, seed=5)
    with FeatureStore(tmp_path / "local.h5") as store:
        for i, (loc, desc) in enumerate(zip(synthetic.db_locations, synthetic.db_descriptors)):
            store.write(f"db/{i:02d}.jpg", {"locations": loc, "descriptors": desc})
        index = LocalIndex.from_store(store, n_cells=4)
    assert index.names == [f"db/{i:02d}.jpg" for i in range(8)] and index.n_images == 8
    empty = index.query(np.zeros((0, 2)), np.zeros((0, 40), np.float32))
    assert empty.images.size == 0 and empty.votes.sum() == 0 and empty.ranking().size == 8
    result = index.query(synthetic.query_locations[0], synthetic.query_descriptors[0], nprobe=4)
    assert result.images[0] == synthetic.query_sources[0]

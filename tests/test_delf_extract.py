"""DELF extraction: pyramid shapes, selection as the port, incremental HDF5 store, PCA files, warnings."""

import numpy as np
import pytest
from PIL import Image

from delf_tiny import tiny_delf
from geocli.errors import DataError
from geocli.models.delf import extract as ex
from geocli.models.delf.pca import fit_pca, load_pca, save_pca
from geocli.retrieval.store import FeatureStore


@pytest.fixture(scope="module")
def net():
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    return tiny_delf(stride=8)


def _cfg(**kw):
    return ex.settings({"extract": {"stride": 8, "scales": [0.5, 1.0], "score_threshold": 100.0, **kw}})


def _image(seed=0, h=48, w=72):
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.uint8)


def test_bucket_ladder_bounds_the_number_of_shapes_and_the_waste():
    sides = [ex.bucket_side(n, 32, 2) for n in range(1, 2049)]
    assert all(s >= n and s % 32 == 0 for n, s in zip(range(1, 2049), sides))
    assert all(s <= max(64, 1.5 * n) for n, s in zip(range(1, 2049), sides))  # < sqrt(2) waste (+ rounding)
    assert len(set(sides)) <= 12
    assert ex.canvas_shape(700, 1000, ex.settings({"extract": {"pad": "port"}})) == (2048, 2048)
    assert ex.canvas_shape(700, 1000, ex.settings({"extract": {"pad": "none"}})) == (700, 1000)


def test_selection_follows_the_port(net):
    cfg = _cfg()
    feats = ex.Extractor(net, cfg).extract(_image())
    n = len(feats.scores)
    assert n > 10 and feats.descriptors.shape == (n, 16) and feats.locations.shape == (n, 2)
    assert np.all(feats.scores >= 100.0) and np.all(np.diff(feats.scores) <= 0)  # by score, descending
    np.testing.assert_allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, rtol=1e-5)
    assert set(np.unique(feats.scales)) <= {1.0, 2.0}  # 1 / scale, as the port writes it
    # (y, x) centres on the stride grid of each scale, mapped back to the image
    grid = feats.locations * (1.0 / feats.scales)[:, None] / 8.0
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-4)
    assert feats.locations[:, 0].max() < 48 and feats.locations[:, 1].max() < 72
    top = ex.Extractor(net, _cfg(max_features=7)).extract(_image())
    np.testing.assert_array_equal(top.scores, feats.scores[:7])


def test_padding_modes_give_identical_features(net):
    """Padded cells are cropped: bucket, the port's fixed canvas and exact shapes agree."""
    results = {}
    for pad in ("bucket", "port", "none"):
        extractor = ex.Extractor(net, _cfg(pad=pad, port_canvas=128))
        results[pad] = extractor.extract(_image(h=41, w=75))
        results[pad + "_shapes"] = extractor.shapes
    for pad in ("port", "none"):
        np.testing.assert_array_equal(results[pad].locations, results["bucket"].locations)
        np.testing.assert_allclose(results[pad].descriptors, results["bucket"].descriptors, atol=1e-6)
    assert results["port_shapes"] == {(128, 128)}


def test_large_images_are_scaled_down_but_located_in_original_pixels(net):
    small = ex.Extractor(net, _cfg(scales=[1.0])).extract(_image(h=40, w=64))
    image = np.asarray(Image.fromarray(_image(h=40, w=64)).resize((128, 80), Image.BICUBIC))
    capped = ex.Extractor(net, _cfg(scales=[1.0], max_image_side=64)).extract(image)
    assert capped.locations.max() > small.locations.max() * 1.5  # reported at the 128-px scale


def test_threshold_warning_names_count_and_score_range(net, tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(_image(i)).save(tmp_path / "imgs" / f"{i}.png")
    paths, names = ex.list_images(tmp_path / "imgs")
    report = ex.extract_to_store(ex.Extractor(net, _cfg(score_threshold=1e9)), paths, names, tmp_path / "f.h5")
    assert report.extracted == 3 and len(report.empty) == 3
    text = report.warning(1e9)
    assert "3 of 3 images" in text and "scores seen" in text and "extract.score_threshold" in text


def test_store_is_incremental_and_readable_inputs(net, tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_image(1)).save(folder / "a.jpg")
    Image.fromarray(_image(2)[..., 0]).save(folder / "sub" / "gray.png")  # grayscale PNG
    paths, names = ex.list_images(folder)
    assert names == ["a.jpg", "sub/gray.png"]
    extractor = ex.Extractor(net, _cfg())
    first = ex.extract_to_store(extractor, paths, names, tmp_path / "f.h5", attrs={"checkpoint": "x"})
    again = ex.extract_to_store(extractor, paths, names, tmp_path / "f.h5", attrs={"checkpoint": "x"})
    assert (first.extracted, again.extracted, again.skipped) == (2, 0, 2)
    with FeatureStore(tmp_path / "f.h5", mode="r") as store:
        arrays = store.read("sub/gray.png")
        assert set(arrays) == {"locations", "scales", "scores", "descriptors"}
    with pytest.raises(DataError, match="checkpoint"):
        ex.extract_to_store(extractor, paths, names, tmp_path / "f.h5", attrs={"checkpoint": "other"})
    (folder / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg: cannot be read as an image"):
        ex.read_image(folder / "broken.jpg")
    (tmp_path / "list.txt").write_text("imgs/a.jpg\nimgs/missing.jpg\n")
    with pytest.raises(DataError, match="1 listed images do not exist"):
        ex.list_images(tmp_path / "list.txt")


def test_pca_fit_save_load_and_the_port_format(net, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)) @ np.diag([5, 3, 1, 0.5, 0.1, 0.01]) + 2.0
    pca = fit_pca(x)
    np.testing.assert_allclose(pca.mean, x.mean(axis=0, keepdims=True), rtol=1e-5)
    assert np.all(np.diff(pca.variances) <= 0)
    assert abs(pca.matrix[0, 0]) > 0.99  # largest-variance axis first
    save_pca(pca, tmp_path / "pca")
    with pytest.raises(DataError, match="--overwrite"):
        save_pca(pca, tmp_path / "pca")
    loaded = load_pca(tmp_path / "pca", dim=2)
    assert loaded.project(x).shape == (500, 2)
    # the port's files: mean (1, d) and a square matrix, nothing else needed
    port = tmp_path / "port"
    port.mkdir()
    np.save(port / "mean.npy", np.zeros((1, 6), np.float32))
    np.save(port / "pca_proj_mat.npy", np.eye(6, dtype=np.float32))
    np.testing.assert_allclose(load_pca(port, dim=3).project(x[:2]), x[:2, :3], rtol=1e-5)
    np.save(port / "pca_proj_mat.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a plain .npy array"):
        load_pca(port, dim=3)
    with_pca = ex.Extractor(net, _cfg(), pca=load_pca(tmp_path / "pca", dim=2))
    assert with_pca.pca.dim == 2

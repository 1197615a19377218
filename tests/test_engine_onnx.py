"""--engine onnxruntime: the exported graph, cached, gives MindSpore's outputs within the export bound.

One tiny PoseNet (demo preset, 64 px, non-trivial weights and position normalisation) is saved as a
geoloc checkpoint; eval-style batches of odd lengths (padding and splitting of the fixed ONNX batch)
and ``geoloc retrieve --engine onnxruntime`` through the library API are compared with MindSpore.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from geocli import api, config, registry  # noqa: E402
from geocli.errors import UsageError  # noqa: E402

SIZE = 64
BOUND = 1e-4  # geocli.export's default parity tolerance


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import mindspore as ms

    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime import context

    root = tmp_path_factory.mktemp("engine")
    context.setup(root, mode="graph", seed=0, distributed=False)
    cfg = config.apply_overrides(config.load_preset("posenet", "demo"),
                                 ["data.test_hw=[64,64]", f"data.crop={SIZE}", "eval.batch_size=4"])
    backend = registry.load_backend("posenet")
    net = backend.build_network(cfg)
    rng = np.random.default_rng(3)
    for p in net.get_parameters():  # moving statistics and gammas away from their identity values
        if "moving_variance" in p.name or "gamma" in p.name:
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
        elif "moving_mean" in p.name or "beta" in p.name:
            p.set_data(ms.Tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))
    net.set_xyz_normalisation([10.0, -5.0, 1.0], [3.0, 2.0, 0.5])
    path = ckpt.save(root / "run" / "checkpoints" / "last.ckpt", net,
                     meta={"model": "posenet", "preset": "demo", "config": cfg})
    return {"root": root, "cfg": cfg, "backend": backend, "net": net, "ckpt": path}


def test_onnx_runner_matches_mindspore_on_padded_and_split_batches(model):
    from geocli.runtime import engine

    backend, cfg, net = model["backend"], model["cfg"], model["net"]
    cache = model["root"] / "cache"
    ms_run = engine.runner("mindspore", backend, cfg, net)
    ort_run = engine.runner("onnxruntime", backend, cfg, net, batch_size=4, cache_dir=cache)
    assert ort_run.path.parent == cache and ort_run.path.name.startswith("posenet-b4-")
    rng = np.random.default_rng(0)
    for n in (1, 4, 7):  # shorter than the fixed batch (padded), equal, longer (split + padded)
        images = rng.standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)
        want, got = ms_run(images), ort_run(images)
        assert [g.shape for g in got] == [w.shape for w in want] == [(n, 3), (n, 4)]
        diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
        assert diff <= BOUND, diff
        assert float(np.abs(want[0]).max()) > 1.0  # metres through the stored normalisation, not zeros
    # cached: the same weights reuse the file, changed weights export a new one
    mtime = ort_run.path.stat().st_mtime_ns
    again = engine.runner("onnxruntime", backend, cfg, net, batch_size=4, cache_dir=cache)
    assert again.path == ort_run.path and again.path.stat().st_mtime_ns == mtime


def test_retrieve_with_onnxruntime_engine_matches_mindspore(model, tmp_path):
    import cv2

    rng = np.random.default_rng(1)
    images = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (72, 80, 3), dtype=np.uint8))
        images.append(path)
    rows = {}
    for engine in ("mindspore", "onnxruntime"):
        _, out = api.infer("retrieve", "posenet", images, model["ckpt"], out=tmp_path / engine, quiet=True,
                           engine=engine)
        rows[engine] = json.loads((out / "poses.json").read_text())
    cached = list((model["ckpt"].parent / "onnx").glob("posenet-b4-*.onnx"))
    assert len(cached) == 1  # exported next to the checkpoint
    for a, b in zip(rows["mindspore"], rows["onnxruntime"]):
        assert a["image"] == b["image"]
        assert max(abs(a[c] - b[c]) for c in "xyzwpqr") <= BOUND


def test_engine_a_backend_does_not_support_is_refused(model):
    from geocli.runtime import engine

    class MindSporeOnly:
        name = "toy"

    with pytest.raises(UsageError, match="toy retrieve runs on mindspore only"):
        engine.require(MindSporeOnly(), "onnxruntime", "retrieve")
    assert engine.require(model["backend"], "onnxruntime", "eval") == "onnxruntime"


# ---- free axes: one ONNX file for every batch and image size (DELF's pyramid) ------------------------
def test_freed_axes_run_whole_batches_and_a_baked_size_is_refused(tmp_path):
    """The toy network (two Dense layers) takes any batch size once axis 0 is freed, with MindSpore's
    outputs; freeing its feature axis, which the weights fix, fails the check at another size."""
    pytest.importorskip("onnx")
    from geocli.errors import GeolocError
    from geocli.runtime import engine

    cfg = config.load_preset("toy")
    backend = registry.load_backend("toy")
    net = backend.build_network(cfg)
    run = engine.runner("onnxruntime", backend, cfg, net, cache_dir=tmp_path, free_axes=(0,))
    assert run.path.name.startswith("toy-free-")
    x = np.random.default_rng(0).standard_normal((5, cfg["data"]["dim"])).astype(np.float32)
    (got,), (want,) = run(x), engine.runner("mindspore", backend, cfg, net)(x)
    assert got.shape == (5, 1) and float(np.abs(got - want).max()) <= BOUND
    with pytest.raises(GeolocError, match="does not run at other sizes along axes"):
        engine.runner("onnxruntime", backend, cfg, net, cache_dir=tmp_path, free_axes=(1,))
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_delf_extraction_on_onnxruntime_matches_mindspore(cli, tmp_path):
    """`geoloc retrieve delf extract --engine onnxruntime`: one export, images of two shapes (different
    canvases at every scale), the same features as on MindSpore (every cell kept: threshold 0)."""
    pytest.importorskip("onnx")
    import cv2

    from bn_stats import with_statistics
    from geocli.retrieval.store import FeatureStore
    from geocli.runtime import checkpoint as ckpt

    cfg = config.load_preset("delf", "demo")
    network = with_statistics(registry.load_backend("delf").build_network(cfg))
    path = ckpt.save(tmp_path / "run" / "checkpoints" / "last.ckpt", network,
                     meta={"model": "delf", "preset": "demo", "config": cfg, "stage": "attn"})
    rng = np.random.default_rng(4)
    (tmp_path / "img").mkdir()
    for name, shape in (("square.png", (96, 96, 3)), ("wide.png", (70, 130, 3))):
        cv2.imwrite(str(tmp_path / "img" / name), cv2.GaussianBlur(rng.integers(0, 256, shape, np.uint8), (5, 5), 0))
    stores = {}
    for engine in ("mindspore", "onnxruntime"):
        stores[engine] = tmp_path / f"{engine}.h5"
        result = cli("retrieve", "delf", "extract", "--images", tmp_path / "img", "--out", stores[engine],
                     "--checkpoint", path, "--engine", engine, "--set", "extract.score_threshold=0")
        assert result.exit_code == 0, result.output + str(result.stderr)
    assert len(list((path.parent / "onnx").glob("delf-free-*.onnx"))) == 1  # one file for every canvas
    for name in ("square.png", "wide.png"):
        with FeatureStore(stores["mindspore"], mode="r") as a, FeatureStore(stores["onnxruntime"], mode="r") as b:
            want, got = a.read(name), b.read(name)
        assert len(want["scores"]) > 20 and len(got["scores"]) == len(want["scores"])
        order_w = np.lexsort((want["locations"][:, 1], want["locations"][:, 0], want["scales"]))
        order_g = np.lexsort((got["locations"][:, 1], got["locations"][:, 0], got["scales"]))
        np.testing.assert_array_equal(got["locations"][order_g], want["locations"][order_w])
        assert float(np.abs(got["scores"][order_g] - want["scores"][order_w]).max()) <= BOUND
        assert float(np.abs(got["descriptors"][order_g] - want["descriptors"][order_w]).max()) <= BOUND
    # `geoloc match delf --engine onnxruntime` reaches the same extractor, and reuses the cached file
    match = cli("match", "delf", tmp_path / "img" / "square.png", tmp_path / "img" / "wide.png", "--checkpoint", path,
                "--engine", "onnxruntime", "--set", "extract.score_threshold=0", "--out", tmp_path / "match")
    assert match.exit_code == 0, match.output + str(match.stderr)
    assert (tmp_path / "match" / "match.png").is_file()
    assert len(list((path.parent / "onnx").glob("*.onnx"))) == 1

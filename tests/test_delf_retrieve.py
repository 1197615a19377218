"""`geoloc retrieve delf extract | fit-pca | index | query`, and 2-rank distributed extraction."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from delf_tiny import TINY_SETS, use_tiny_delf
from geocli.retrieval.store import FeatureStore


def _database(folder, n=12, size=48, seed=0):
    """n unrelated textures; returns them so queries can be made from some."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    textures = [rng.uniform(0, 255, (size + 16, size + 16, 3)).astype(np.uint8) for _ in range(n)]
    for i, t in enumerate(textures):
        Image.fromarray(t[:size, :size]).save(folder / f"img{i:02d}.png")
    return textures


def test_extract_pca_index_query_pipeline(cli, tmp_path, monkeypatch):
    checkpoint = use_tiny_delf(monkeypatch, tmp_path / "tiny.ckpt")
    textures = _database(tmp_path / "db")
    base = ["--checkpoint", checkpoint, *TINY_SETS]
    raw = cli("retrieve", "delf", "extract", "--images", tmp_path / "db", "--out", tmp_path / "raw.h5", *base)
    assert raw.exit_code == 0, raw.output + str(raw.stderr)
    assert "extracted 12 images" in raw.output and "images/s" in raw.output
    fit = cli("retrieve", "delf", "fit-pca", "--features", tmp_path / "raw.h5", "--out", tmp_path / "pca")
    assert fit.exit_code == 0, fit.output + str(fit.stderr)
    assert {p.name for p in (tmp_path / "pca").iterdir()} == {"mean.npy", "pca_proj_mat.npy", "pca_variances.npy"}

    db = cli("retrieve", "delf", "extract", "--images", tmp_path / "db", "--out", tmp_path / "db.h5",
             "--pca", tmp_path / "pca", *base)
    assert db.exit_code == 0, db.output + str(db.stderr)
    again = cli("retrieve", "delf", "extract", "--images", tmp_path / "db", "--out", tmp_path / "db.h5",
                "--pca", tmp_path / "pca", *base)
    assert "extracted 0 images (12 already there)" in again.output  # incremental
    with FeatureStore(tmp_path / "db.h5", mode="r") as store:
        assert store.read("img03.png")["descriptors"].shape[1] == 8
    wrong_pca = cli("retrieve", "delf", "fit-pca", "--features", tmp_path / "db.h5", "--out", tmp_path / "p2")
    assert wrong_pca.exit_code == 1 and "extracted without --pca" in wrong_pca.stderr

    index = cli("retrieve", "delf", "index", "--features", tmp_path / "db.h5", "--out", tmp_path / "index")
    assert index.exit_code == 0, index.output + str(index.stderr)
    assert "indexed" in index.output and "exact" in index.output

    # queries: shifted (by whole cells) crops of images 3 and 7
    (tmp_path / "q").mkdir()
    for i in (3, 7):
        Image.fromarray(textures[i][8:56, 16:64]).save(tmp_path / "q" / f"q{i}.png")
    # 48-px images: the port's 60 neighbours and 20-px residual would make every image match
    small = ["--set", "retrieve.knn=2", "--set", "retrieve.residual=2"]
    query = cli("retrieve", "delf", "query", tmp_path / "q" / "q3.png", tmp_path / "q" / "q7.png",
                "--index", tmp_path / "index", "--pca", tmp_path / "pca", "--top", 5, "--out", tmp_path / "r",
                *base, *small)
    assert query.exit_code == 0, query.output + str(query.stderr)
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert len(rows) == 10 and rows[0]["image"] == "img03.png" and rows[5]["image"] == "img07.png"
    assert int(rows[0]["inliers"]) >= 4 and int(rows[1]["inliers"]) < int(rows[0]["inliers"])
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["metric"] == "inliers" and doc["queries"][1]["results"][0]["name"] == "img07.png"

    # the same from a feature file, with the port's exhaustive verification
    qfeat = cli("retrieve", "delf", "extract", "--images", tmp_path / "q", "--out", tmp_path / "q.h5",
                "--pca", tmp_path / "pca", *base)
    assert qfeat.exit_code == 0
    every = cli("retrieve", "delf", "query", "--features", tmp_path / "q.h5", "--index", tmp_path / "index",
                "--verify", "all", "--out", tmp_path / "r2", *TINY_SETS, *small)
    assert every.exit_code == 0, every.output + str(every.stderr)
    rows2 = list(csv.DictReader(open(tmp_path / "r2" / "results.csv")))
    assert rows2[0]["image"] == "img03.png" and rows2[0]["inliers"] == rows[0]["inliers"]
    bad = cli("retrieve", "delf", "query", "--features", tmp_path / "raw.h5", "--index", tmp_path / "index",
              "--out", tmp_path / "r3")
    assert bad.exit_code == 1 and "same --pca" in bad.stderr


@pytest.mark.slow
def test_distributed_extraction_over_two_ranks_equals_one_process(cli, tmp_path):
    """The real DELF network (untrained weights saved to a checkpoint), 2 msrun workers on CPU."""
    from geocli import config
    from geocli.models.delf.backend import DelfBackend
    from geocli.registry import get
    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime.launch import msrun_available

    assert msrun_available(), "msrun is installed with mindspore: the distributed path must be testable here"
    cfg = config.resolve("delf", "default", None, [])
    checkpoint = ckpt.save(tmp_path / "delf.ckpt", DelfBackend(get("delf")).build_network(cfg),
                           meta={"model": "delf", "preset": "default", "config": cfg})
    _database(tmp_path / "db", n=5, size=64)
    # untrained attention scores may fall either side of 100: keep every cell; pynative: no graph compiles
    common = ["--images", tmp_path / "db", "--checkpoint", checkpoint, "--set", "extract.scales=[1.0]",
              "--set", "extract.score_threshold=0", "--mode", "pynative"]
    dist = cli("retrieve", "delf", "extract", *common, "--out", tmp_path / "dist.h5", "--distributed",
               "--workers", 2)
    assert dist.exit_code == 0, dist.output + str(dist.stderr)
    assert "merged 5 new images from 2 ranks" in dist.output
    parts = sorted(p.name for p in (tmp_path / "dist.h5.parts").glob("rank*.h5"))
    assert parts == ["rank0.h5", "rank1.h5"]
    single = cli("retrieve", "delf", "extract", *common, "--out", tmp_path / "single.h5")
    assert single.exit_code == 0, single.output + str(single.stderr)
    with FeatureStore(tmp_path / "dist.h5", mode="r") as a, FeatureStore(tmp_path / "single.h5", mode="r") as b:
        assert a.names() == b.names() and len(a.names()) == 5
        assert a.attrs == b.attrs
        for name in a.names():
            x, y = a.read(name), b.read(name)
            assert x.keys() == y.keys() and len(x["scores"]) > 0
            for key in x:
                np.testing.assert_allclose(x[key], y[key], rtol=1e-4, atol=1e-5, err_msg=f"{name}/{key}")
    with FeatureStore(tmp_path / "dist.h5.parts" / "rank1.h5", mode="r") as part:
        assert part.names() == ["img01.png", "img03.png"]  # every second image

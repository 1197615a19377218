"""`geoloc match delf`: putative matches, RANSAC inliers, the side-by-side picture, awkward inputs."""

import numpy as np
from PIL import Image

from delf_tiny import TINY_SETS, use_tiny_delf
from geocli.models.delf.verify import match_features, putative_matches


def test_putative_matches_keep_nearest_within_the_bound():
    d1 = np.eye(4, dtype=np.float32)
    d2 = np.array([[1, 0, 0, 0], [0, 0.9, 0.43589, 0], [0, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]], np.float32)
    pairs = putative_matches(d1, d2, max_distance=0.8)
    assert pairs.tolist() == [[0, 0], [1, 1], [3, 2]]  # the fourth is ~1.0 from everything
    assert putative_matches(d1[:0], d2).shape == (0, 2)


def test_match_features_finds_the_translation():
    rng = np.random.default_rng(0)
    desc = rng.standard_normal((50, 8)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    loc1 = rng.uniform(0, 200, (50, 2))
    loc2 = loc1 + [10.0, -30.0]  # (y, x)
    result = match_features(loc1, desc, loc2[::-1], desc[::-1])
    assert result.n_putative == 50 and result.n_inliers == 50
    np.testing.assert_allclose(result.affine, [[1, 0, -30], [0, 1, 10]], atol=1e-6)  # x, y order


def test_match_cli_different_sizes_grayscale_png_and_bad_input(cli, tmp_path, monkeypatch):
    checkpoint = use_tiny_delf(monkeypatch, tmp_path / "tiny.ckpt")
    rng = np.random.default_rng(0)
    scene = rng.uniform(0, 255, (64, 96, 3)).astype(np.uint8)
    Image.fromarray(scene).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(scene[8:56, 16:80].mean(axis=2).astype(np.uint8)).save(tmp_path / "b.png")  # gray crop
    result = cli("match", "delf", tmp_path / "a.jpg", tmp_path / "b.png", "--checkpoint", checkpoint,
                 *TINY_SETS, "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output + str(result.stderr)
    assert "putative" in result.output and "inliers" in result.output
    picture = Image.open(tmp_path / "m" / "match.png")
    assert picture.size == (96 + 64, 64)

    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    bad = cli("match", "delf", tmp_path / "a.jpg", tmp_path / "bad.jpg", "--checkpoint", checkpoint,
              *TINY_SETS, "--out", tmp_path / "m2")
    assert bad.exit_code == 1
    assert "bad.jpg: cannot be read as an image" in bad.stderr and "Traceback" not in bad.stderr
    one = cli("match", "delf", tmp_path / "a.jpg", "--checkpoint", checkpoint, "--out", tmp_path / "m3")
    assert one.exit_code == 2 and "exactly two images" in one.stderr

"""DELF evaluation: the port's metrics and mAP.txt, the protocols' ground truth, and `geoloc eval delf`
on stand-in images named as the real Oxford5k (all 55 queries, both protocols)."""

from pathlib import Path

import numpy as np
import pytest

from delf_tiny import TINY_SETS
from geocli.metrics.retrieval import format_port_metrics, port_metrics

SHARED_GT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "oxford5k_gt"


def test_port_metrics_by_hand():
    # 2 queries over 12 images; query 0: positives 0, 3 with junk 1 ranked before 3
    ranks = np.array([[0, 1, 2, 3] + list(range(4, 12)), [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 10, 11]])
    gnd = [{"ok": np.array([0, 3]), "junk": np.array([1])}, {"ok": np.array([0]), "junk": np.array([], int)},
           {"ok": np.array([], int), "junk": np.array([], int)}]
    ranks = np.vstack([ranks, ranks[:1]])
    r = port_metrics(ranks, gnd, pr_ranks=(1, 10))
    # query 0: adjusted positions 0, 2 -> AP = ((1 + 1) + (1/2 + 2/3)) / 2 / 2 = 0.7917
    assert r["ap"][0] == pytest.approx((2 + 0.5 + 2 / 3) / 4)
    # query 1: position 5 -> AP = (0 + 1/6) / 2
    assert r["ap"][1] == pytest.approx(1 / 12)
    assert np.isnan(r["ap"][2]) and r["map"] == pytest.approx((r["ap"][0] + r["ap"][1]) / 2)
    # P@k uses min(last positive's 1-based position, k): q0 k=10 -> 2/3, q1 k=10 -> 1/6; R@1: 0.5, 0
    np.testing.assert_allclose(r["precisions"][:2, 1], [2 / 3, 1 / 6])
    np.testing.assert_allclose(r["recalls"][:2, 0], [0.5, 0.0])
    with pytest.raises(ValueError, match="at least that many"):
        port_metrics(ranks, gnd, pr_ranks=(100,))


def test_map_txt_has_the_port_format():
    values = {"hard": {"map": 0.7048, "mp": np.full(9, 0.5), "mr": np.linspace(0.1, 0.9, 9)},
              "easy": {"map": 0.91851, "mp": np.full(9, 0.9), "mr": np.full(9, 0.25)},
              "medium": {"map": 0.8209, "mp": np.full(9, 1.0), "mr": np.full(9, 0.123456)}}
    text = format_port_metrics(values)
    lines = text.splitlines()
    assert len(lines) == 12 and lines[0::4] == ["easy", "hard", "medium"]
    assert lines[1] == "  mAP=91.85"
    assert lines[2] == "  mP@k[10 20 30 40 50 60 70 80 90] [90. 90. 90. 90. 90. 90. 90. 90. 90.]"
    assert lines[3] == "  mR@k[10 20 30 40 50 60 70 80 90] [25. 25. 25. 25. 25. 25. 25. 25. 25.]"
    assert lines[5] == "  mAP=70.48"
    assert lines[11] == "  mR@k[10 20 30 40 50 60 70 80 90] [12.35 12.35 12.35 12.35 12.35 12.35 12.35 12.35 12.35]"
    # the port's reader: 4 lines per protocol, mAP after '=', scores inside the second brackets
    for i in range(0, 12, 4):
        assert float(lines[i + 1].split("=")[1]) > 0
        assert len(lines[i + 2].split("[")[2].split("]")[0].split()) == 9


# ------------------------------------------------------------------------------------- Oxford5k CLI

def _landmark(name: str) -> str:
    return name.rsplit("_", 1)[0]


def _stand_in_oxford(folder: Path, gt: Path, size: int = 48) -> int:
    """One small image per name in the real ground truth; images of one landmark share a texture
    (shifted, noisy), so retrieval has something to find. Returns the number of images."""
    from PIL import Image

    from geocli.metrics.oxford import load_oxford_gt

    queries = load_oxford_gt(gt)
    names = sorted({n for q in queries for n in q.good + q.ok + q.junk + [q.image]})
    rng = np.random.default_rng(0)
    bases = {}
    (folder / "jpg").mkdir(parents=True)
    for name in names:
        landmark = _landmark(name)
        if landmark not in bases:
            bases[landmark] = rng.uniform(0, 255, (2 * size, 2 * size, 3))
        dy, dx = 8 * rng.integers(0, 3, 2)  # whole feature cells: shifted views share descriptors
        image = bases[landmark][dy:dy + size, dx:dx + size] + rng.normal(0, 8, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / "jpg" / f"{name}.jpg", quality=95)
    return len(names)


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    from delf_tiny import use_tiny_delf

    return use_tiny_delf(monkeypatch, tmp_path / "tiny.ckpt")


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_GT.is_dir(), reason=f"real Oxford5k ground truth not found at {SHARED_GT} "
                    "(only the team workspace has ../shared)")
def test_eval_oxford5k_both_protocols_on_stand_in_images(cli, tmp_path, tiny_checkpoint, monkeypatch):
    import json
    import shutil

    from geocli.metrics.oxford import load_oxford_gt
    from geocli.metrics.retrieval import oxford_ap
    from geocli.models.delf import tasks

    built = []  # each evaluation folds (or exports) the network once, the PCA sample included
    real = tasks.extraction_network
    monkeypatch.setattr(tasks, "extraction_network", lambda *a, **k: built.append(1) or real(*a, **k))

    data = tmp_path / "data" / "oxford5k"
    n_images = _stand_in_oxford(data, SHARED_GT)
    shutil.copytree(SHARED_GT, data / "gt")
    common = ["--checkpoint", tiny_checkpoint, "--data", data, "--dataset", "oxford5k",
              *TINY_SETS, "--set", "eval.pca_images=20", "--set", "retrieve.verify=20"]
    original = cli("eval", "delf", *common, "--out", tmp_path / "evals" / "original")
    assert original.exit_code == 0, original.output + str(original.stderr)
    assert list((tmp_path / "evals").glob("delf-features-oxford5k-*/pca")) and len(built) == 1  # PCA fitted
    port = cli("eval", "delf", *common, "--protocol", "port", "--out", tmp_path / "evals" / "port")
    assert port.exit_code == 0, port.output + str(port.stderr)

    m_orig = json.loads((tmp_path / "evals" / "original" / "metrics.json").read_text())["metrics"]
    m_port = json.loads((tmp_path / "evals" / "port" / "metrics.json").read_text())["metrics"]
    assert m_orig["queries"] == m_port["queries"] == 55 and m_orig["database_images"] == n_images
    per_query = (tmp_path / "evals" / "original" / "per_query.csv").read_text().splitlines()
    assert len(per_query) == 56 and per_query[0] == "query,ap,positives,top1,top1_inliers"
    port_rows = (tmp_path / "evals" / "port" / "per_query.csv").read_text().splitlines()
    assert len(port_rows) == 56
    map_txt = (tmp_path / "evals" / "port" / "mAP.txt").read_text().splitlines()
    assert map_txt[0::4] == ["easy", "hard", "medium"] and map_txt[1] == f"  mAP={m_port['mAP_easy']}"
    assert m_port["verify"] == "all"  # the port verifies every candidate

    # a random ranking under the original protocol, for scale: the pipeline must beat it clearly
    queries = load_oxford_gt(SHARED_GT)
    rng = np.random.default_rng(1)
    db = sorted(p.stem for p in (data / "jpg").glob("*.jpg"))
    random_map = 100 * np.mean([oxford_ap(list(rng.permutation(db)), q.good, q.ok, q.junk + [q.image])
                                for q in queries])
    print(f"stand-in Oxford5k: original mAP {m_orig['mAP']:.2f} (random ranking {random_map:.2f}); "
          f"port easy/medium/hard {m_port['mAP_easy']}/{m_port['mAP_medium']}/{m_port['mAP_hard']}")
    assert m_orig["mAP"] > random_map + 10
    # the port counts the query image (which matches itself) as a positive in easy: a higher figure
    assert m_port["mAP_easy"] > m_orig["mAP"]

    # the second evaluation re-used the database features of the first (same cache beside --out)
    log = "\n".join(p.read_text() for p in (tmp_path / "evals" / "port" / "logs").glob("*.log"))
    assert f"{n_images} of {n_images} images already in" in log


def test_eval_revisited_dataset_from_a_gnd_pickle(cli, tmp_path, tiny_checkpoint):
    """roxford5k: imlist/qimlist/gnd with easy/hard/junk indices, queries cropped to bbx, three settings."""
    import json
    import pickle

    from PIL import Image

    rng = np.random.default_rng(0)
    data = tmp_path / "roxford5k"
    (data / "jpg").mkdir(parents=True)
    imlist, qimlist, gnd = [], [], []
    for k in range(3):
        base = rng.uniform(0, 255, (80, 80, 3))
        names = [f"lm{k}_{i}" for i in range(5)]
        for i, name in enumerate(names):
            dy, dx = 8 * rng.integers(0, 3, 2)
            Image.fromarray(base[dy:dy + 48, dx:dx + 48].astype(np.uint8)).save(data / "jpg" / f"{name}.jpg", quality=95)
        imlist += names[1:]
        qimlist.append(names[0])
        first = len(imlist) - 4
        gnd.append({"bbx": [0.0, 0.0, 40.0, 40.0], "easy": [first, first + 1], "hard": [first + 2],
                    "junk": [first + 3]})
    with open(data / "gnd_roxford5k.pkl", "wb") as fh:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, fh)
    result = cli("eval", "delf", "--checkpoint", tiny_checkpoint, "--data", data, "--dataset", "roxford5k",
                 *TINY_SETS, "--set", "eval.pca_images=12", "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output + str(result.stderr)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["queries"] == 3 and metrics["database_images"] == 12
    assert {"mAP_easy", "mAP_medium", "mAP_hard", "mP@1_easy", "mP@10_hard"} <= set(metrics)
    assert metrics["mAP_medium"] > 50  # shifted copies of one texture per landmark: found first
    port = cli("eval", "delf", "--checkpoint", tiny_checkpoint, "--data", data, "--dataset", "roxford5k",
               "--protocol", "port", "--out", tmp_path / "ev2")
    assert port.exit_code == 2 and "original Oxford/Paris lists" in port.stderr

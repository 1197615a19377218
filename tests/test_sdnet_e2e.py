"""SDNet end to end through the CLI: synth -> npz-prep -> train -> eval (learnability) -> match, export
parity (MINDIR here, ONNX in a fresh process), a 2-worker msrun step, and clear errors on bad input."""

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from geocli.data import sen12_npz
from geocli.data.synth.sen12 import SynthSpec, generate

PREP = {"max_per_image": 10, "min_distance": 10, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    from geocli import config

    root = tmp_path_factory.mktemp("sdnet")
    generate(root / "raw", spec=SynthSpec(seasons=2, scenes=4, patches=6, size=128, seed=3))
    cfg = {**config.resolve("sdnet", "default", None, [])["prep"], **PREP}
    summary = sen12_npz.prepare(root / "raw", root / "npz", cfg, seed=0)
    assert summary["train_rows"] >= 150 and summary["test_rows"] >= 60
    return root / "npz"


@pytest.fixture(scope="module")
def trained(npz, tmp_path_factory):
    from typer.testing import CliRunner

    from geocli.cli.main import app

    out = tmp_path_factory.mktemp("run")
    r = CliRunner().invoke(app, ["train", "sdnet", "--preset", "demo", "--data", str(npz), "--out", str(out),
                                 "--set", "train.batch_size=32", "--set", "train.steps=60"])
    assert r.exit_code == 0, r.output
    assert "trained 60 steps" in r.output
    return out / "checkpoints" / "last.ckpt"


def test_eval_reports_fpr95_and_accuracy_and_learns(cli, npz, trained, tmp_path):
    r = cli("eval", "sdnet", "--data", npz, "--checkpoint", trained, "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    assert "fpr95" in r.output and "published_fpr95" in r.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["published_fpr95"] == 0.00914 and metrics["published_accuracy"] == 0.97958
    assert (tmp_path / "ev" / "distances.png").is_file()
    # learnability: the untrained network (same seed, same init) against the briefly trained one
    from geocli import api
    from geocli.data.sen12_npz import open_pairs
    from geocli.models.sdnet.backend import pair_distances, patch_metrics

    test = open_pairs(npz / "test.npz")
    untrained = api.load_model("sdnet", None, preset="demo")
    before = patch_metrics(pair_distances(untrained.network, test, 256), test.labels)
    after = metrics
    print(f"\nFPR95 untrained {before['fpr95']:.3f} -> trained (60 steps of 32) {after['fpr95']:.3f}; "
          f"accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}")
    assert before["fpr95"] > 0.5  # an untrained descriptor is near chance (HardNet issue #18)
    assert after["fpr95"] < before["fpr95"] - 0.25
    assert after["accuracy"] > before["accuracy"] + 0.1


def test_eval_on_onnxruntime_gives_mindspores_figures(cli, npz, trained, tmp_path):
    """--engine onnxruntime runs the exported ``descriptors`` graph (parity-checked when it is exported)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is the optional inference engine (pip install onnxruntime)")
    figures = {}
    for engine in ("mindspore", "onnxruntime"):
        r = cli("eval", "sdnet", "--data", npz, "--checkpoint", trained, "--out", tmp_path / engine, "--engine", engine)
        assert r.exit_code == 0, r.output
        figures[engine] = json.loads((tmp_path / engine / "metrics.json").read_text())["metrics"]
    assert figures["onnxruntime"]["fpr95"] == pytest.approx(figures["mindspore"]["fpr95"], abs=0.01)
    assert figures["onnxruntime"]["accuracy"] == pytest.approx(figures["mindspore"]["accuracy"], abs=0.01)
    assert list((trained.parent / "onnx").glob("sdnet-descriptors-*.onnx"))  # cached beside the checkpoint


def test_match_registers_a_pair_and_writes_the_picture(cli, trained, tmp_path):
    from geocli.models.sdnet.demo import warped_pair

    optical, sar, _ = warped_pair(160)
    cv2.imwrite(str(tmp_path / "o.png"), optical)
    cv2.imwrite(str(tmp_path / "s.png"), sar)
    r = cli("match", "sdnet", tmp_path / "o.png", tmp_path / "s.png", "--checkpoint", trained,
            "--out", tmp_path / "m", "--set", "match.model=affine", "--set", "match.grid_step=8")
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "m" / "registration.json").read_text())
    assert info["mutual_matches"] > 0 and info["model"] == "affine"
    picture = cv2.imread(info["picture"])
    assert picture.shape[0] == 160 and picture.shape[1] == 2 * 160 + 4
    r = cli("match", "sdnet", tmp_path / "o.png", "--checkpoint", trained, "--out", tmp_path / "m2")
    assert r.exit_code != 0 and "two images, OPTICAL then SAR" in r.output


def test_registration_recovers_a_known_transform(trained):
    """The pipeline (keypoints, 64x64 patches, SDNet descriptors, mutual NN, RANSAC, transform direction)
    on a pair with a known affine map; both images go through the optical branch, so the geometry, not
    a 60-step network's cross-modal accuracy, is what is checked.

    The transform is judged where the registration has support, at its inlier keypoints: this image's
    matches lie in a diagonal band, so an affine fitted to them is loosely pinned across the band and its
    error at the far corners (the whole-image figure, printed) says more about where texture is than
    about the pipeline. The whole-image error must still beat the identity, which a transform applied in
    the wrong direction does not."""
    from geocli import api
    from geocli.models.sdnet import register as reg
    from geocli.models.sdnet.backend import descriptor_fn

    loaded = api.load_model("sdnet", trained)
    from geocli.data.synth.sen12 import registration_pair

    optical = cv2.cvtColor(registration_pair(160, seed=5)[0], cv2.COLOR_RGB2GRAY)
    a = cv2.getRotationMatrix2D((80, 80), 5.0, 1.0)
    a[:, 2] += (6.0, -4.0)
    moved = cv2.warpAffine(optical, a, (160, 160), borderMode=cv2.BORDER_REFLECT)
    truth = np.linalg.inv(np.vstack([a, [0, 0, 1]]))
    describe = descriptor_fn(loaded.network, loaded.cfg, "optical")
    cfg = {**loaded.cfg["match"], "model": "affine", "grid_step": 4, "ransac_threshold": 3.0}
    result = reg.register(describe, describe, optical, moved, cfg)
    assert result.transform is not None and result.inliers >= 20

    def apply(m, points):
        return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), m).reshape(-1, 2)

    correct = np.linalg.norm(result.dst - apply(truth, result.src), axis=1) < 3.0  # descriptor matching
    inliers = result.src[result.inlier_mask]
    supported = np.linalg.norm(apply(result.transform, inliers) - apply(truth, inliers), axis=1).mean()
    whole = reg.reprojection_error(result.transform, truth, optical.shape)
    identity = reg.reprojection_error(np.eye(3), truth, optical.shape)
    print(f"\nregistration: {result.inliers} inliers of {result.matches} matches, {correct.mean():.0%} of the "
          f"matches within 3 px of the truth; error {supported:.2f} px at the inliers, {whole:.2f} px over the "
          f"image (identity {identity:.2f})")
    assert correct.mean() >= 0.8
    assert supported < 1.5  # SAR-side grid every 4 px: up to 2.8 px per point, averaged by the fit
    assert whole < identity / 2


def test_training_refuses_non_matches_in_train_npz(cli, tmp_path):
    w = sen12_npz.RowWriter(tmp_path / "train.npz", 16)
    for label in (1, 0, 1, 1):
        w.add(np.zeros((64, 128), np.uint8), label)
    w.finish()
    r = cli("train", "sdnet", "--data", tmp_path, "--set", "train.batch_size=2", "--out", tmp_path / "r")
    assert r.exit_code != 0
    assert "1 rows are labelled 0" in r.output + getattr(r, "stderr", "")


def test_export_mindir_parity_three_graphs(cli, tmp_path):
    r = cli("export", "sdnet", "--format", "mindir", "--out", tmp_path / "sdnet")
    assert r.exit_code == 0, r.output
    for name in ("descriptors", "optical", "sar"):
        assert (tmp_path / f"sdnet-{name}.mindir").is_file()
    diffs = [float(x) for x in re.findall(r"max abs difference (\S+)", r.output)]
    assert len(diffs) == 3 and max(diffs) <= 1e-5


def test_export_onnx_parity_in_a_fresh_process(tmp_path):
    code = ("from geocli.export import export\n"
            f"rs = export('sdnet', None, 'onnx', out=r'{tmp_path / 'sdnet'}')\n"
            "print([(r.path.name, r.max_abs_diff) for r in rs])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "sdnet-descriptors.onnx"), providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in sess.get_inputs()] == [(1, 1, 64, 64), (1, 1, 64, 64)]
    for name in ("optical", "sar"):
        sess = ort.InferenceSession(str(tmp_path / f"sdnet-{name}.onnx"), providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 1, 64, 64), np.float32)})[0]
        assert out.shape == (1, 128)
    diffs = re.findall(r"(\d\.\d+e-\d+|0\.0)\)", p.stdout)
    assert len(diffs) == 3 and max(float(d) for d in diffs) <= 1e-4, p.stdout


def test_two_msrun_workers_take_a_step_and_agree(cli, npz, tmp_path, ranks_agree):
    from geocli.runtime.launch import msrun_available

    assert msrun_available()
    r = cli("train", "sdnet", "--data", npz, "--out", tmp_path / "dist", "--distributed", "--workers", 2,
            "--set", "train.batch_size=8", "--set", "train.steps=2", "--set", "train.log_every=1",
            "--set", "train.eval_every_epoch=false", "--set", "train.checkpoint_every_epoch=false")
    assert r.exit_code == 0, r.output + getattr(r, "stderr", "")
    meta = ranks_agree(tmp_path / "dist")
    assert meta["group_size"] == 2 and meta["step"] == 2

"""DELF training on the synthetic GLDv2 set: the attn stage's guards, the learning-rate schedule, and a
2-worker msrun step. That both stages learn (and what the attn stage freezes) is asserted by the demo's
end-to-end test, tests/test_delf_demo.py, which trains them once for retrieval too."""

import numpy as np
import pytest

from geocli import api, config
from geocli.errors import CheckpointError, UsageError

#: DELF at a quarter of its width, 48 px crops, batch 8: the real code paths within the tests' CPU budget
SMALL = ["model.width=0.25", "data.image_size=48", "data.eval_size=48", "train.batch_size=8", "train.log_every=10"]


@pytest.fixture(scope="module")
def gld(tmp_path_factory):
    """5 synthetic landmarks x 20 views (80 px), converted: 6 validation images per landmark."""
    from geocli.data import gldv2_mindrecord
    from geocli.data.synth import gldv2 as synth

    root = tmp_path_factory.mktemp("gld")
    summary = synth.synthesize(root, synth.GldSynthSpec(landmarks=5, views=20, distractors=2, missing=1, size=80))
    assert summary["images"] == 5 * 20 + 2 - 1
    report = gldv2_mindrecord.convert(root, shards=2, val_split=0.3)
    assert report.classes == 5 and report.count("missing") == 1
    return root / "mindrecord"


def test_lr_schedule_is_the_ports_polynomial_decay_per_stage():
    from geocli.models.delf.backend import schedule
    from geocli.runtime.schedules import lr_values

    cfg = config.load_preset("delf")
    lr = lr_values(cfg["optim"]["lr"], schedule(cfg), 500_000)
    s = np.array([0, 1, 250_000, 499_999])
    np.testing.assert_allclose(lr[s], (0.01 - 1e-4) * (1 - s / 500_000) + 1e-4, rtol=1e-5)


def test_attn_stage_needs_the_tuning_checkpoint(gld, tmp_path):
    with pytest.raises(UsageError, match="--stage attn trains only the attention branch.*--weights"):
        api.train("delf", preset="demo", data=gld, out=tmp_path / "a", quiet=True,
                  overrides=SMALL + ["train.stage=attn", "train.steps=1", "train.eval_every=0"])


def test_attn_stage_refuses_weights_without_the_tuned_backbone(gld, tmp_path):
    import mindspore as ms

    fake = tmp_path / "backbone_only.ckpt"
    ms.save_checkpoint([{"name": "backbone.conv1.bias", "data": ms.Tensor(np.zeros(64, np.float32))}], str(fake))
    with pytest.raises(CheckpointError, match="--stage attn starts from the tuning stage's checkpoint"):
        api.train("delf", preset="demo", data=gld, out=tmp_path / "b", quiet=True, weights=fake,
                  overrides=SMALL + ["train.stage=attn", "train.steps=1", "train.eval_every=0"])


def test_two_msrun_workers_train_one_step(cli, gld, tmp_path, ranks_agree):
    result = cli("train", "delf", "--data", gld, "--out", tmp_path / "dist", "--distributed", "--workers", 2,
                 "--preset", "demo", "--set", "train.stage=tuning", "--set", "train.steps=2",
                 "--set", "train.batch_size=4", "--set", "data.image_size=32", "--set", "train.eval_every=0")
    assert result.exit_code == 0, result.output + result.stderr
    meta = ranks_agree(tmp_path / "dist")
    assert meta["group_size"] == 2 and meta["step"] == 2 and meta["stage"] == "tuning"


def test_optimizer_is_the_ports_sgd_except_in_the_demo_preset():
    from geocli.errors import ConfigError
    from geocli.models.delf.backend import optimizer_spec

    assert optimizer_spec(config.load_preset("delf"), []).kind == "sgd"
    assert optimizer_spec(config.load_preset("delf"), []).options == {"momentum": 0.9}
    assert optimizer_spec(config.resolve("delf", "demo", None, []), []).kind == "adam"
    with pytest.raises(ConfigError, match="optim.kind='rmsprop'"):
        optimizer_spec(config.resolve("delf", "default", None, ["optim.kind=rmsprop"]), [])

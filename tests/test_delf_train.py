"""DELF training end to end on the synthetic GLDv2 set: both stages learn, the attn stage's guards, the
learning-rate schedule, and a 2-worker msrun step."""

import re

import numpy as np
import pytest

from geocli import api, config
from geocli.errors import CheckpointError, UsageError

CHANCE = 1 / 5
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


def test_two_stages_on_synthetic_landmarks_learn_above_chance(gld, tmp_path, capsys):
    # From scratch in 100 steps SGD needs a higher rate than the port's 0.01 (measured: at 0.01, 48 px,
    # batch 8 the tuning loss stayed at ln 5 for 60 steps); 32 px crops of at least half the image, batch 16.
    fast = ["data.image_size=32", "data.eval_size=32", "train.batch_size=16", "data.crop_scale=[0.5, 1.0]"]
    tuning = api.train("delf", preset="demo", data=gld, out=tmp_path / "tuning", quiet=True,
                       overrides=SMALL + fast + ["optim.lr=0.03", "optim.end_lr=0.0003", "train.stage=tuning",
                                                 "train.steps=100", "train.eval_every=100"])
    attn = api.train("delf", preset="demo", data=gld, out=tmp_path / "attn", quiet=True, weights=tuning.last_checkpoint,
                     overrides=SMALL + fast + ["optim.lr=0.003", "optim.end_lr=0.00003", "train.stage=attn",
                                               "train.steps=100", "train.eval_every=100"])
    desc, attn_top1 = tuning.eval_metrics["val_desc_top1"], attn.eval_metrics["val_attn_top1"]
    with capsys.disabled():
        print(f"\nDELF on 5 synthetic landmarks (chance {CHANCE:.2f}): tuning val desc top-1 {desc:.2f}; "
              f"attn val attn top-1 {attn_top1:.2f}, desc top-1 {attn.eval_metrics['val_desc_top1']:.2f}")
    # 29 validation images: 11 correct (0.38) by chance has p ~ 0.01; measured 0.45 (13 of 29) under load
    assert attn_top1 >= CHANCE + 0.15, attn.eval_metrics

    from geocli.runtime import checkpoint as ckpt

    params, meta = ckpt.load(attn.last_checkpoint)
    assert meta["stage"] == "attn" and meta["num_classes"] == 5
    tuned, _ = ckpt.load(tuning.last_checkpoint)
    # the attn stage froze the backbone's weights and the descriptor classifier ...
    for name in ("backbone.res3b.branch2b.weight", "backbone.conv1.weight", "desc.weight"):
        np.testing.assert_array_equal(params[name].asnumpy(), tuned[name].asnumpy(), err_msg=name)
    # ... but, as in the port, BatchNorm ran in training mode and kept updating its moving statistics
    assert not np.array_equal(params["backbone.res3b.bn_branch2b.moving_mean"].asnumpy(),
                              tuned["backbone.res3b.bn_branch2b.moving_mean"].asnumpy())

    # the checkpoint loads strictly into the extraction network C2's commands use
    loaded = api.load_model("delf", attn.last_checkpoint)
    assert loaded.network.mode == "test"


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


def test_two_msrun_workers_train_one_step(cli, gld, tmp_path):
    from geocli.runtime import checkpoint as ckpt

    result = cli("train", "delf", "--data", gld, "--out", tmp_path / "dist", "--distributed", "--workers", 2,
                 "--preset", "demo", "--set", "train.stage=tuning", "--set", "train.steps=2",
                 "--set", "train.batch_size=4", "--set", "data.image_size=32", "--set", "train.eval_every=0")
    assert result.exit_code == 0, result.output + result.stderr
    for rank in (0, 1):
        log = (tmp_path / "dist" / "logs" / f"rank{rank}.log").read_text()
        match = re.search(r"parameters of 2 ranks agree to (\S+) \(relative\)", log)
        assert match and float(match.group(1)) <= 1e-5, log[-2000:]
    meta = ckpt.read_meta(tmp_path / "dist" / "checkpoints" / "last.ckpt")
    assert meta["group_size"] == 2 and meta["step"] == 2 and meta["stage"] == "tuning"

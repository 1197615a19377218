"""Presets, --config files and typed --set overrides."""

import pytest

from geocli import config
from geocli.errors import ConfigError


def test_default_preset_loads():
    cfg = config.resolve("toy")
    assert cfg["train"]["steps"] == 40 and cfg["optim"]["body_lr"] == 0.01


@pytest.mark.parametrize("text,key,value", [
    ("train.steps=7", "train.steps", 7),
    ("optim.body_lr=1e-4", "optim.body_lr", 1e-4),
    ("optim.body_lr=1", "optim.body_lr", 1.0),       # int given for a float key becomes float
    ("train.steps=2e3", "train.steps", 2000),        # integral float for an int key becomes int
    ("optim.schedule=cosine", "optim.schedule", "cosine"),
])
def test_override_typing(text, key, value):
    cfg = config.apply_overrides(config.resolve("toy"), [text])
    got = config.get(cfg, key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text,fragment", [
    ("train.steps=1.5", "expects int"),
    ("train.steps=abc", "expects int"),
    ("optim.body_lr=fast", "expects float"),
    ("optim.lrr=3", "closest valid keys"),
    ("nothing", "expected KEY=VALUE"),
    ("train.steps.deeper=1", "unknown config key"),
])
def test_override_errors(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config.apply_overrides(config.resolve("toy"), [text])


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError) as err:
        config.apply_overrides(config.resolve("toy"), ["optim.body_lrr=0.1"])
    assert "optim.body_lr" in str(err.value)


def test_config_file_merges_and_rejects_unknown(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("train:\n  steps: 5\n")
    assert config.resolve("toy", config_file=good)["train"]["steps"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.stepz'.*train.steps"):
        config.resolve("toy", config_file=bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.resolve("toy", config_file=broken)


def test_precedence_preset_then_file_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  steps: 5\n  batch_size: 4\n")
    cfg = config.resolve("toy", config_file=f, overrides=["train.steps=9"])
    assert cfg["train"]["steps"] == 9 and cfg["train"]["batch_size"] == 4


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*Valid presets: default"):
        config.resolve("toy", "nope")


def test_dump_round_trip(tmp_path):
    cfg = config.resolve("toy")
    path = config.save(cfg, tmp_path / "config.yaml")
    import yaml

    assert yaml.safe_load(path.read_text()) == cfg


def test_a_checkpoint_config_gets_the_keys_added_since(tmp_path):
    """A checkpoint stores the config it was trained with; keys added to the model later come from its
    default.yaml (so --set reaches them), while every stored value wins over the defaults."""
    from geocli import api, registry
    from geocli.runtime import checkpoint as ckpt

    stored = config.load_preset("toy")
    stored["data"]["n_train"] = 100
    stored["optim"].pop("clip")
    del stored["model"]  # as if written before model.dropout existed
    net = registry.load_backend("toy").build_network(config.load_preset("toy"))
    path = ckpt.save(tmp_path / "old.ckpt", net, meta={"model": "toy", "preset": "default", "config": stored})
    loaded = api.load_model("toy", path, overrides=["model.dropout=0.0", "optim.clip=2.0"])
    assert loaded.cfg["model"] == {"dropout": 0.0} and loaded.cfg["optim"]["clip"] == 2.0
    assert loaded.cfg["data"]["n_train"] == 100
    assert config.with_defaults({"a": {"b": 1}}, {"a": {"b": 2, "c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}

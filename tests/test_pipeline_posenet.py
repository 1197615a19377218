"""PoseNet offered the streaming path: `data.stream: true` reads frames per batch in worker processes and
builds exactly the batches of the in-memory path."""

import cv2
import numpy as np

from geocli import config
from geocli.data.cambridge_mindrecord import SCHEMA, SCHEMA_NAME
from geocli.models.posenet import data as pdata


def write_scene(folder, n=24):
    """A train split of ``n`` textured 40x60 frames with their poses, as `convert-mindrecord` writes it."""
    from mindspore.mindrecord import FileWriter

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    writer = FileWriter(str(folder / "train.mindrecord"), shard_num=1, overwrite=True)
    writer.add_schema(SCHEMA, SCHEMA_NAME)
    rows = []
    for i in range(n):
        image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        ok, png = cv2.imencode(".png", image)
        pose = np.concatenate([rng.standard_normal(3), [1, 0, 0, 0]]).astype(np.float32)
        rows.append({"image": png.tobytes(), "image_pose": pose, "file_name": f"seq1/frame{i:05d}.png"})
    writer.write_raw_data(rows)
    writer.commit()
    return folder


OVERRIDES = ["data.resize=fixed", "data.train_hw=[36, 48]", "data.crop=32", "model.heads=global",
             "train.batch_size=4"]


def test_stream_loader_builds_the_in_memory_batches(tmp_path):
    scene = write_scene(tmp_path / "scene")
    cfg = config.apply_overrides(config.load_preset("posenet"), OVERRIDES)
    frames = pdata.load_split(scene, "train", cfg)
    record = pdata.find_record(scene, "train")
    stream = pdata.StreamLoader(record, pdata.read_poses(record)[1], cfg)
    memory = pdata.train_loader(frames, cfg)
    for indices, seed in ((np.array([3, 17, 0, 9]), (1, 0, 0, 0)), (np.array([23, 5]), (1, 2, 7, 1))):
        xs, ps = stream(indices, seed=seed)
        xm, pm = memory(indices, seed=seed)
        np.testing.assert_array_equal(xs, xm)
        np.testing.assert_array_equal(ps, pm)


def test_train_plan_streams_with_workers_through_the_config(tmp_path):
    from geocli import registry
    from geocli.runtime import context

    scene = write_scene(tmp_path / "scene")
    ctx = context.setup(tmp_path / "run", seed=0)
    backend = registry.load_backend("posenet")
    streamed = backend.train_plan(config.resolve("posenet", overrides=OVERRIDES + ["data.stream=true",
                                                                                  "data.workers=1"]), scene, ctx)
    in_memory = backend.train_plan(config.resolve("posenet", overrides=OVERRIDES), scene, ctx)
    assert streamed.data.workers == 1 and in_memory.data.workers == 0
    try:
        for a, b in zip(streamed.data.epoch(1, start=2), in_memory.data.epoch(1, start=2)):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    finally:
        streamed.data.close()

"""The offset head's fit on frozen descriptors (``train.head_fit_steps``): the folded standardisation is
exact, and the fit lowers the error on the pairs it was fitted to, inside a real training run."""

from __future__ import annotations

import numpy as np
import pytest

from geocli.models.vigor.headfit import fold_into_dense, standardise


def test_standardisation_folds_into_the_first_layer_exactly():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 0.2, (50, 6))
    x[:, 2] = 1.5  # a constant column must pass through, not divide by zero
    mu, sd = standardise(x)
    assert sd[2] == 1.0 and np.all(sd > 0)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    w2, b2 = fold_into_dense(w, b, mu, sd)
    np.testing.assert_allclose(x @ w2.T + b2, ((x - mu) / sd) @ w.T + b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_training_run_ends_with_the_fit_and_saves_the_fitted_head(tmp_path):
    from geocli import config, registry
    from geocli.data.synth.vigor import SynthSpec, synthesize
    from geocli.runtime import checkpoint as ckpt
    from geocli.runtime import context
    from geocli.runtime.trainer import train

    synthesize(tmp_path / "data", SynthSpec(grid=4, panos_per_tile=2, tile_px=48, pano_hw=(32, 64)))
    ctx = context.setup(tmp_path / "run", mode="graph", seed=0, distributed=False)
    cfg = config.resolve("vigor", "demo", None, ["model.width=0.0625", "train.steps=2", "train.batch_size=4",
                                                 "train.head_fit_steps=60", "train.head_fit_batch_size=16"])
    backend = registry.load_backend("vigor")
    plan = backend.train_plan(cfg, tmp_path / "data", ctx)
    assert len(plan.finish_hooks) == 1
    result = train(plan, ctx, meta={"model": "vigor", "preset": "demo", "config": cfg})
    saved, meta = ckpt.load(result.last_checkpoint)
    for name in ("head.fc1.weight", "head.fc2.bias"):  # last.ckpt holds the fitted head, not the joint one
        np.testing.assert_array_equal(saved[name].asnumpy(), plan.network.parameters_dict()[name].asnumpy())
    figures = meta["head_fit"]
    print(f"\nfit on the 64 training pairs: median {figures['head_fit_median_m_centre']:.2f} m at the tile "
          f"centre -> {figures['head_fit_median_m']:.2f} m")
    assert figures["head_fit_median_m"] < 0.8 * figures["head_fit_median_m_centre"]

"""Fit VIGOR's offset head alone, on frozen descriptors, after the network's training (``train.head_fit_*``).

Why: the reference trains the head jointly with both branches in its stage 2 (15 epochs, ~90k steps on
the real dataset). Its input is the raw SAFA descriptors, whose elements share a large common
component; a head fed such inputs needs thousands of updates before its output moves away from a
constant (measured on the demo's descriptors, docs/vigor.md "Offset head": raw inputs, 1,000 Adam steps
still 11.5 m against 11.7 m for the tile centre). A short run such as the demo's cannot give it that.

What: with ``train.head_fit_steps > 0`` the training run ends with this step. The trained branches
(eval mode, as at inference) describe every training panorama and its positive tile; the head is
re-initialised as configured and trained on those descriptors *standardised* per element (mean and
standard deviation over the training pairs), with the reference's offset loss and Adam, the learning
rate decaying 10x over the fit. The standardisation is then folded into the first layer
(``W' = W / sd``, ``b' = b - W' mu``), so the head keeps the reference's architecture, checkpoint names
and export graph exactly. Default 0: the reference recipe, untouched.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np

from geocli.data.formats import vigor as fmt


def head_inputs(cfg: Dict[str, Any], grd: np.ndarray, grd_norm: np.ndarray, sat: np.ndarray,
                sat_norm: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(satellite, ground) inputs of the head from L2-normalised descriptors and their raw norms: the raw
    descriptors (reference) or the normalised ones (``model.offset_input: normalised``, the port)."""
    if cfg["model"]["offset_input"] == "raw":
        return sat * sat_norm[:, None], grd * grd_norm[:, None]
    return sat, grd


def standardise(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (a constant column gets 1, so it passes unscaled)."""
    mu = x.mean(0)
    sd = x.std(0)
    return mu, np.where(sd > 1e-8, sd, 1.0)


def fold_into_dense(weight: np.ndarray, bias: np.ndarray, mu: np.ndarray, sd: np.ndarray):
    """A Dense layer trained on ``(x - mu) / sd`` as one on ``x``: ``W / sd`` and ``b - (W / sd) mu``
    (MindSpore's Dense weight is out x in)."""
    w = weight.astype(np.float64) / sd[None, :]
    return w.astype(np.float32), (bias.astype(np.float64) - w @ mu).astype(np.float32)


def fit_offset_head(net, cfg: Dict[str, Any], split: fmt.VigorSplit, prep: Dict[str, Any],
                    log: Callable[[str], None] = lambda _m: None) -> Dict[str, float]:
    """Train ``net.head`` alone on the training pairs; returns the training-set median metre error of the
    tile centre and of the fitted head (logged, so a run shows what the fit did)."""
    import mindspore as ms
    from mindspore import nn

    from geocli.models.vigor import predict as pred
    from geocli.models.vigor.loss import offset_loss
    from geocli.models.vigor.net import OffsetHead

    t, o = cfg["train"], cfg["optim"]
    steps, batch, lr = int(t["head_fit_steps"]), int(t["head_fit_batch_size"]), float(t["head_fit_lr"])
    was_training = net.training
    net.set_train(False)
    pos = split.positive
    used, row = np.unique(pos, return_inverse=True)  # only the positive tiles: a split may hold many more
    grd, grd_norm, sat, sat_norm = pred.describe_split(net, split, prep, int(cfg["eval"]["batch_size"]), tiles=used)
    s_in, g_in = head_inputs(cfg, grd, grd_norm, sat[row], sat_norm[row])
    x = np.concatenate([s_in, g_in], 1).astype(np.float64)
    mu, sd = standardise(x)
    xs = ((x - mu) / sd).astype(np.float32)
    target = (split.deltas[:, 0] / 320.0).astype(np.float32)
    dim = s_in.shape[1]

    head = OffsetHead(dim, cfg["model"]["head_init"])

    class Loss(nn.Cell):
        def __init__(self, cell):
            super().__init__()
            self.cell = cell

        def construct(self, sat_x, grd_x, y):
            return offset_loss(self.cell(sat_x, grd_x), y)

    table = (lr * 0.1 ** (np.arange(steps) / steps)).astype(np.float32)
    opt = nn.Adam(head.trainable_params(), learning_rate=ms.Tensor(table), beta1=float(o["beta1"]),
                  beta2=float(o["beta2"]), eps=float(o["eps"]))
    step = nn.TrainOneStepCell(Loss(head), opt)
    step.set_train(True)
    rng = np.random.default_rng(int(cfg["seed"]))
    n = len(xs)
    for _ in range(steps):
        idx = rng.choice(n, size=min(batch, n), replace=False)
        step(ms.Tensor(xs[idx, :dim]), ms.Tensor(xs[idx, dim:]), ms.Tensor(target[idx]))
    w1, b1 = fold_into_dense(head.fc1.weight.asnumpy(), head.fc1.bias.asnumpy(), mu, sd)
    net.head.fc1.weight.set_data(ms.Tensor(w1))
    net.head.fc1.bias.set_data(ms.Tensor(b1))
    net.head.fc2.weight.set_data(ms.Tensor(head.fc2.weight.asnumpy()))
    net.head.fc2.bias.set_data(ms.Tensor(head.fc2.bias.asnumpy()))
    net.set_train(was_training)

    fitted = net.head(ms.Tensor(s_in.astype(np.float32)), ms.Tensor(g_in.astype(np.float32))).asnumpy()
    before = float(np.median(pred.metre_errors(split, pos, None)))
    after = float(np.median(pred.metre_errors(split, pos, fitted)))
    log(f"vigor: offset head fitted alone ({steps} steps, batch {batch}, lr {lr:g}) on {n} training pairs: "
        f"median error on them {before:.2f} m at the tile centre -> {after:.2f} m")
    return {"head_fit_median_m_centre": before, "head_fit_median_m": after}

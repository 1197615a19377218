"""Build MindSpore optimizers and gradient transforms from :class:`OptimizerSpec` data."""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from geocli.errors import ConfigError
from geocli.runtime.plan import Clip, OptimizerSpec
from geocli.runtime.schedules import lr_values

KINDS = ("adam", "adamw", "sgd", "momentum", "adagrad")


def build_optimizer(spec: OptimizerSpec, total_steps: int):
    """The optimizer of one group; its own state (moments, step, lr) is renamed ``<group>.<name>`` so
    several optimizers can live in one compiled step and one checkpoint without name clashes."""
    opt = _make(spec, total_steps)
    own = {id(p) for p in spec.params}
    for param in optimizer_state(opt, spec.params):
        if id(param) not in own:
            param.name = f"{spec.name}.{param.name}"
    return opt


def optimizer_state(opt, trained_params) -> list:
    """The optimizer's own parameters (moments, global step, lr), not the network's it updates."""
    own = {id(p) for p in trained_params}
    return [p for p in opt.get_parameters(expand=True) if id(p) not in own]


def _make(spec: OptimizerSpec, total_steps: int):
    import mindspore as ms
    from mindspore import nn

    if spec.kind not in KINDS:
        raise ConfigError(f"optimizer {spec.name!r}: unknown kind {spec.kind!r}; choose one of {', '.join(KINDS)}")
    if not spec.params:
        raise ConfigError(f"optimizer {spec.name!r} has no parameters to train")
    lr = ms.Tensor(lr_values(spec.lr, spec.schedule, total_steps))
    o = dict(spec.options)
    wd = spec.weight_decay
    params = spec.params
    if spec.decay_all and wd > 0:  # one parameter group: MindSpore then decays every parameter in it
        params, wd = [{"params": list(spec.params), "weight_decay": wd}], 0.0
    if spec.kind == "adam":
        return nn.Adam(params, learning_rate=lr, beta1=o.get("beta1", 0.9), beta2=o.get("beta2", 0.999),
                       eps=o.get("eps", 1e-8), weight_decay=wd)
    if spec.kind == "adamw":
        return nn.AdamWeightDecay(params, learning_rate=lr, beta1=o.get("beta1", 0.9),
                                  beta2=o.get("beta2", 0.999), eps=o.get("eps", 1e-6), weight_decay=wd)
    if spec.kind == "sgd":
        return nn.SGD(params, learning_rate=lr, momentum=o.get("momentum", 0.0),
                      nesterov=o.get("nesterov", False), weight_decay=wd)
    if spec.kind == "momentum":
        return nn.Momentum(params, learning_rate=lr, momentum=o.get("momentum", 0.9),
                           use_nesterov=o.get("nesterov", False), weight_decay=wd)
    return nn.Adagrad(params, accum=o.get("accum", 0.1), learning_rate=lr, weight_decay=wd)


def make_clipper(clip: Optional[Clip]) -> Callable[[tuple], tuple]:
    """A graph-compilable function that clips a tuple of gradients; the mode is chosen here, in Python,
    so the jitted step contains no string comparisons."""
    from mindspore import ops

    if clip is None:
        return lambda grads: grads
    limit = float(clip.max)
    if clip.mode == "value":
        return lambda grads: ops.clip_by_value(grads, -limit, limit)

    def sum_of_squares(g):
        """``sum(g * g)`` as one dot product of the flattened tensor with itself. Why: MindSpore 2.10's CPU
        ``ReduceSum`` over large gradients was the slow part of the clip: ``ops.clip_by_global_norm`` over
        ResNet50's 23.6 M gradient values took 167 ms a step on this 2-core machine, the same clip through
        this dot product 38 ms, equal within 2e-9 (docs/performance.md)."""
        flat = g.reshape(1, -1)
        return ops.matmul(flat, flat.T).reshape(())

    hyper_map = ops.HyperMap()
    if clip.mode == "global_norm":  # g * max / max(||all||, max), as ops.clip_by_global_norm

        def clip_all(grads):
            total = ops.sqrt(ops.addn(hyper_map(sum_of_squares, grads)))
            return hyper_map(ops.partial(ops.mul, limit / ops.maximum(total, limit)), grads)

        return clip_all
    if clip.mode == "norm":  # each tensor on its own: g * min(1, max / ||g||), the PoseNet port's clip

        def clip_one(g):
            return g * ops.minimum(1.0, limit / (ops.sqrt(sum_of_squares(g)) + 1e-12))

        return lambda grads: hyper_map(clip_one, grads)
    raise ConfigError(f"unknown gradient clip mode {clip.mode!r}; choose value, norm or global_norm")


def make_scaler(factor: float) -> Callable[[tuple], tuple]:
    from mindspore import ops

    if factor == 1.0:
        return lambda grads: grads
    hyper_map = ops.HyperMap()

    def scale_one(g):  # a named function: graph mode refuses a lambda with a free variable in HyperMap
        return g * factor

    return lambda grads: hyper_map(scale_one, grads)


def parameter_names(params: List[Any]) -> List[str]:
    return [p.name for p in params]

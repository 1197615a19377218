"""``toy``: a two-layer regression network on generated data, hidden from listings.

It exists so the runtime (trainer, checkpoints, resume, msrun data parallelism, export) is tested in
seconds through the same registry and CLI paths as the real models. It trains two parameter groups
with two optimizers minimising two different loss terms, like the larger backends do.
"""

from geocli.registry import ModelSpec, register

register(ModelSpec(
    name="toy",
    summary="Tiny regression network for runtime smoke tests (hidden).",
    tasks=("train", "eval", "export"),
    backend="geocli.models.toy.backend:ToyBackend",
    hidden=True,
))

"""``toy``: a two-layer regression network on generated data, hidden from listings.

It exists so the runtime (trainer, checkpoints, resume, msrun data parallelism, export) is tested in
seconds through the same registry and CLI paths as the real models. It trains two parameter groups
with two optimizers minimising two different loss terms, like the larger backends do. Its two flags
exercise the CLI's model-flag mechanism (``geoloc train toy --schedule cosine``) in the CLI tests.
"""

from geocli.registry import Flag, ModelSpec, register

register(ModelSpec(
    name="toy",
    summary="Tiny regression network for runtime smoke tests (hidden).",
    tasks=("train", "eval", "export"),
    backend="geocli.models.toy.backend:ToyBackend",
    hidden=True,
    flags={
        "schedule": Flag("optim.schedule", ("constant", "linear", "poly", "step", "cosine"), ("train",),
                         "Learning-rate schedule of both optimizers."),
        "test-size": Flag("data.n_test", ("16", "64", "256"), ("eval",), "Held-out samples to evaluate on."),
    },
))

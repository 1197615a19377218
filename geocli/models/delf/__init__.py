"""DELF (Noh, Araujo, Sim, Weyand, Han. ICCV 2017): attentive local features for landmark retrieval.

Faithful to the MindSpore ModelZoo port (research/cv/delf); the package reads as net, loss, data
(GLDv2 MindRecord batches), weights (Keras h5 and the port's names), backend (network + two-stage
training), tasks (extraction, match, retrieve, eval, demo), train_commands / commands (the Typer
commands it adds). Registering here imports no MindSpore.
"""

from geocli.registry import Flag, ModelSpec, register

register(ModelSpec(
    name="delf",
    summary="Landmark retrieval with attentive local features (GLDv2 training; Oxford5k/Paris6k eval).",
    tasks=("train",),
    backend="geocli.models.delf.backend:DelfBackend",
    paper="Noh, Araujo, Sim, Weyand, Han. Large-Scale Image Retrieval with Attentive Deep Local Features. "
          "ICCV 2017.",
    extra={"port": "mindspore-ai/models research/cv/delf", "dataset": "Google Landmarks v2 (clean)"},
    flags={
        "stage": Flag("train.stage", ("tuning", "attn"), ("train",),
                      "Training stage: tuning (backbone + descriptor classifier) or attn (attention branch "
                      "only, starting from the tuning checkpoint given with --weights)."),
        "dataset": Flag("eval.dataset", ("oxford5k", "paris6k", "roxford5k", "rparis6k"), ("eval",),
                        "Retrieval benchmark to evaluate on (resolved from `geoloc data download NAME`)."),
        "protocol": Flag("eval.protocol", ("original", "port"), ("eval",),
                         "original: the dataset's published protocol; port: the ModelZoo port's "
                         "easy/medium/hard from the original lists, mP@k/mR@k, mAP.txt."),
    },
))

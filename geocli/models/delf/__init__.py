"""DELF (Noh, Araujo, Sim, Weyand, Han. ICCV 2017): attentive local features for landmark retrieval.

Faithful to the MindSpore ModelZoo port (research/cv/delf); the package reads as net, loss, data
(GLDv2 MindRecord batches), weights (Keras h5 and the port's names), backend (network + two-stage
training), tasks (extraction, match, retrieve, eval, demo), train_commands / commands (the Typer
commands it adds). Registering here imports no MindSpore.
"""

from geocli.registry import Flag, ModelSpec, register, register_data_command

register(ModelSpec(
    name="delf",
    summary="Landmark retrieval with attentive local features (GLDv2 training; Oxford5k/Paris6k eval).",
    tasks=("train", "eval", "export", "match", "retrieve", "demo"),
    commands={"retrieve": "geocli.models.delf.commands:retrieve_app"},
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

register_data_command(
    "convert-mindrecord", "gldv2", "geocli.models.delf.train_commands:convert_gldv2",
    "GLDv2-clean CSVs + train/<a>/<b>/<c>/<id>.jpg -> sharded MindRecord {file_id, label, data} "
    "with relabeling.csv and a per-landmark train/validation split")
register_data_command(
    "synth", "gldv2", "geocli.models.delf.train_commands:synth_gldv2",
    "small learnable landmark set in the GLDv2 layout (DELF demo and tests)")
register_data_command(
    "convert-weights", "keras-resnet50", "geocli.models.delf.train_commands:convert_keras_resnet50",
    "Keras ResNet50 ImageNet h5 (the port's Keras-1 file or keras-applications' Keras-2 file) -> "
    "MindSpore checkpoint for `geoloc train delf --weights`")

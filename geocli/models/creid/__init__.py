"""Centroids-ReID (Wieczorek, Rychalska, Dabrowski, ICONIP 2021): person re-identification and retrieval
with class centroids, faithful to the reference mikwieczorek/centroids-reid (a1825b7).

The package reads as net (ResNet50 + BNNeck), loss (CE, triplet, centre, centroid triplet), sampler
(P x K), data (augmentation), centroids and scoring (evaluation), features and retrieve (HDF5 gallery,
top-k), weights (torchvision and Lightning checkpoints), backend, demo, commands. Registering here
imports no MindSpore.
"""

from geocli.registry import Flag, ModelSpec, register, register_data_command

register(ModelSpec(
    name="creid",
    summary="Person re-identification and retrieval with class centroids (Market-1501, DukeMTMC-reID).",
    tasks=("train", "eval", "export", "retrieve", "demo"),
    backend="geocli.models.creid.backend:CReIDBackend",
    paper="Wieczorek, Rychalska, Dabrowski. On the Unreasonable Effectiveness of Centroids in Image "
          "Retrieval. ICONIP 2021.",
    extra={"reference": "mikwieczorek/centroids-reid", "dataset": "Market-1501, DukeMTMC-reID, MSMT17"},
    flags={
        "protocol": Flag("eval.protocol", ("fixed", "reference"), ("eval",),
                         "Centroid evaluation: fixed (true gallery cameras, every gallery identity kept) or "
                         "reference (its wrong-offset camera ids, #21/#41, and no gallery-only centroids)."),
        "gallery": Flag("retrieve.gallery", (), ("retrieve",),
                        "Gallery to search: an image folder (Market/Duke names or one folder per identity; "
                        "embedded once into an HDF5 feature store) or a FEATURES.h5 store."),
        "centroids": Flag("retrieve.centroids", ("true", "false"), ("retrieve",),
                          "Search one centroid per gallery identity instead of every gallery image."),
        "features": Flag("retrieve.features", (), ("retrieve",),
                         "HDF5 store for the gallery features (default: features/ beside the checkpoint)."),
        "distributed": Flag("retrieve.distributed", ("true", "false"), ("retrieve",),
                            "Embed the gallery over msrun workers (each rank a shard of the images, merged "
                            "into the feature store)."),
        "workers": Flag("retrieve.workers", (), ("retrieve",), "msrun workers with --distributed true."),
    },
))
register_data_command("synth", "reid", "geocli.models.creid.commands:synth_reid",
                      "A learnable synthetic person re-id set in Market-1501's layout and naming")
register_data_command("convert-weights", "torchvision-resnet50", "geocli.models.creid.commands:convert_resnet50",
                      "torchvision resnet50-19c8e357.pth (or the reference's Lightning .ckpt) -> MindSpore .ckpt")

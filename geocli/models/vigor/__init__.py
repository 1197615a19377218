"""VIGOR (Zhu, Yang, Chen, CVPR 2021): cross-view geo-localisation of street panoramas on satellite tiles.

Two non-shared VGG16 branches with SAFA descriptors retrieve the tile holding a panorama (one positive,
three semi-positives) and an offset head refines the position inside it. The package reads net, loss,
data, sampler, predict, backend, demo, commands; presets ``default`` (the reference code's two-stage
recipe), ``port`` (the MindSpore port) and ``demo``. Registering here imports no MindSpore.
"""

from geocli.registry import Flag, ModelSpec, register, register_data_command

register(ModelSpec(
    name="vigor",
    summary="Cross-view geo-localisation: street panorama -> satellite tile + metre offset (VIGOR).",
    tasks=("train", "eval", "export", "retrieve", "demo"),
    backend="geocli.models.vigor.backend:VigorBackend",
    paper="Zhu, Yang, Chen. VIGOR: Cross-View Image Geo-localization beyond One-to-one Retrieval. CVPR 2021.",
    extra={"port": "mindspore-lab/models research/xidian/VIGOR", "reference": "Jeff-Zilence/VIGOR",
           "dataset": "VIGOR (4 US cities)"},
    flags={
        "setting": Flag("data.setting", ("same-area", "cross-area"), ("train", "eval"),
                        "same-area: train/test files of all four cities; cross-area: NewYork+Seattle -> "
                        "SanFrancisco+Chicago."),
        "stage": Flag("train.stage", ("1", "2"), ("train",),
                      "1: triplet + mining; 2: + IoU + offset, continuing a stage-1 run (--resume)."),
        "labels": Flag("data.labels", ("original", "corrected"), ("train", "eval"),
                       "original splits (0.114 m/px) or SliceMatch's splits__corrected (per-city m/px)."),
        "protocol": Flag("eval.protocol", ("reference", "port"), ("eval",),
                         "R@1% threshold: reference int(0.01 M) + 1, port M // 100."),
    },
    commands={"retrieve": "geocli.models.vigor.commands:retrieve_app"},
))
register_data_command("synth", "vigor", "geocli.models.vigor.commands:synth_vigor",
                      "Four small synthetic cities in the exact VIGOR layout (aerial tiles + rendered panoramas)")
register_data_command("convert-weights", "vgg16", "geocli.models.vigor.commands:convert_vgg16",
                      "Keras VGG16 .h5 or torchvision VGG16(-BN) .pth ImageNet weights -> both VIGOR branches")

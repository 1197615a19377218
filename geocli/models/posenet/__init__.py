"""PoseNet (Kendall et al., ICCV 2015): camera pose (xyz metres + quaternion wpqr) from one RGB image.

A GoogLeNet-BN with three pose regressors, faithful to the MindSpore ModelZoo port
(research/cv/PoseNet); the package reads top to bottom as net, loss, data, weights (the port's
parameter names), predict (evaluation files), backend, demo. Registering here imports no MindSpore.
"""

from geocli.registry import ModelSpec, register, register_data_command

register(ModelSpec(
    name="posenet",
    summary="Camera relocalisation: 6-DoF pose regression from one image (Cambridge Landmarks).",
    tasks=("train", "eval", "export", "retrieve", "demo"),
    backend="geocli.models.posenet.backend:PoseNetBackend",
    paper="Kendall, Grimes, Cipolla. PoseNet: A Convolutional Network for Real-Time 6-DOF Camera "
          "Relocalization. ICCV 2015.",
    extra={"port": "mindspore-ai/models research/cv/PoseNet", "dataset": "Cambridge Landmarks"},
))

register_data_command("convert-mindrecord", "cambridge", "geocli.cli.data_cambridge:convert_mindrecord",
                      "Cambridge Landmarks scene -> train/test.mindrecord (image bytes + float32[7] pose)")
register_data_command("synth", "cambridge", "geocli.cli.data_cambridge:synth",
                      "rendered plaza in the Cambridge Landmarks layout (PoseNet demo data)")

"""SDNet (Xiang, Xu, Wang, Yang, Hong, Zhou. Self-Distillation Feature Learning Network for Optical and
SAR Image Registration, IEEE TGRS 2022): 128-d descriptors matching 64x64 optical and SAR patches, and
whole-image registration with them. Faithful to the MindSpore ModelZoo port research/cv/SDNet; reads
top to bottom as net, loss, data, register, backend, demo, commands. Registering imports no MindSpore.
"""

from geocli import registry

# (``registry.register``, not a bare ``register``: this package has a ``register`` module, the image registration.)
registry.register(registry.ModelSpec(
    name="sdnet",
    summary="Optical/SAR patch descriptors (SEN1-2) and whole-image optical/SAR registration.",
    tasks=("train", "eval", "export", "match", "demo"),
    backend="geocli.models.sdnet.backend:SDNetBackend",
    paper="Xiang et al. A Self-Distillation Feature Learning Network for Optical and SAR Image "
          "Registration (SDNet). IEEE TGRS 2022.",
    extra={"port": "mindspore-ai/models research/cv/SDNet", "dataset": "SEN1-2"},
))
registry.register_data_command("npz-prep", "sen12", "geocli.models.sdnet.commands:npz_prep_sen12",
                      "SEN1-2 folders -> train.npz (matches) / test.npz (balanced), 64x64 optical|SAR patch pairs")
registry.register_data_command("synth", "sen12", "geocli.models.sdnet.commands:synth_sen12",
                      "synthetic optical/SAR scenes in the SEN1-2 layout (SDNet demo data)")

"""Load the MindSpore ModelZoo's checkpoints into this PoseNet through an explicit parameter-name map.

Accepted: a PoseNet checkpoint of the port (``research/cv/PoseNet``; trained through its
``PosenetWithLoss`` wrapper, so names carry a ``network.`` prefix, which is removed) and the ImageNet
GoogLeNet checkpoint the port starts from (``official/cv/GoogleNet``: the same backbone names plus a
``classifier`` this model has no use for). Optimizer state (``accum.*``, ``moments.*``,
``learning_rate``, ``global_step``) and other unknown entries are left out and reported by the loader
as unused. Names that are already this network's pass through unchanged, so a geoloc checkpoint given
to ``--weights`` loads as well, except the position statistics (``xyz_mean``, ``xyz_std``): those
belong to the data being trained on, which ``train_plan`` has already measured.
"""

from __future__ import annotations

from typing import Any, Dict, List

from geocli.errors import CheckpointError

WRAPPER_PREFIXES = ("network.",)
DATA_STATISTICS = ("xyz_mean", "xyz_std")

#: port module -> this network's module (backbone stem, Inception blocks, regressors).
MODULES: Dict[str, str] = {
    "conv1": "backbone.conv1",
    "conv2": "backbone.conv2",
    "conv3": "backbone.conv3",
    **{f"block{b}": f"backbone.inception{b}" for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")},
    "conv1x1_1": "aux1_proj",
    "conv1x1_2": "aux2_proj",
    "fc2048": "aux_fc",
    "cls_fc_pose_xyz_1024": "aux_xyz_hidden",
    "cls_fc_pose_xyz_512": "aux_xyz",
    "cls_fc_pose_wpqr_1024": "aux_wpqr",
    "fc": "main_fc",
    "cls_fc_pose_xyz": "main_xyz",
    "cls_fc_pose_wpqr": "main_wpqr",
}

#: port branch of an Inception block -> ours (the port's ``b2``/``b3`` are SequentialCells).
BRANCHES: Dict[str, str] = {"b1": "branch1", "b2.0": "branch2.reduce", "b2.1": "branch2.conv",
                            "b3.0": "branch3.reduce", "b3.1": "branch3.conv", "b4": "branch4"}

CONV_LEAVES = ("conv.weight", "bn.gamma", "bn.beta", "bn.moving_mean", "bn.moving_variance")
DENSE_LEAVES = ("weight", "bias")


def port_name_map() -> Dict[str, str]:
    """Every parameter name of the port's PoseNet -> the name of the same parameter here."""
    names: Dict[str, str] = {}
    for port, ours in MODULES.items():
        if port.startswith("block"):
            for b_port, b_ours in BRANCHES.items():
                for leaf in CONV_LEAVES:
                    names[f"{port}.{b_port}.{leaf}"] = f"{ours}.{b_ours}.{leaf}"
        else:
            leaves = CONV_LEAVES if port.startswith("conv") else DENSE_LEAVES
            for leaf in leaves:
                names[f"{port}.{leaf}"] = f"{ours}.{leaf}"
    return names


def map_port_weights(params: Dict[str, Any], own_names: List[str]) -> Dict[str, Any]:
    """Rename a port/GoogLeNet checkpoint's entries to this network's names; drop everything else."""
    table = port_name_map()
    own = set(own_names)
    mapped: Dict[str, Any] = {}
    for name, value in params.items():
        if name in DATA_STATISTICS:
            continue
        if name in own:
            mapped[name] = value
            continue
        bare = name
        for prefix in WRAPPER_PREFIXES:
            if bare.startswith(prefix):
                bare = bare[len(prefix):]
        target = table.get(bare)
        if target is not None and target in own:
            mapped[target] = value
    if not mapped:
        sample = ", ".join(list(params)[:3])
        raise CheckpointError(f"none of the checkpoint's {len(params)} entries is a PoseNet or GoogLeNet "
                              f"parameter (first: {sample}); expected geoloc's or the MindSpore ModelZoo's names")
    return mapped

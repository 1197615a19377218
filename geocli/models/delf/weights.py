"""ImageNet weights for DELF's ResNet50 from Keras h5 files, and the port's checkpoint names.

Two h5 layouts exist in the wild, both read here with h5py (no TensorFlow):

* Keras 1 (the port's ``resnet50_imagenet_weights.tar.gz`` from the DELF weights bucket): one top-level
  group per layer holding its datasets directly, named ``<layer>_W_1:0``, ``_b_1:0``, ``_gamma_1:0``,
  ``_beta_1:0``, ``_running_mean_1:0`` and ``_running_std_1:0`` (which holds a VARIANCE, despite its name);
* Keras 2 (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``): ``<layer>/<layer>/kernel:0``,
  ``bias:0``, ``gamma:0``, ``beta:0``, ``moving_mean:0``, ``moving_variance:0``, with either the
  keras-applications layer names (``res2a_branch2a``, as Keras 1) or tf.keras' (``conv2_block1_1_conv``,
  ``conv2_block1_1_bn``, ``..._0_conv`` for the shortcut; the file the catalog downloads).

Every tensor is mapped to a parameter of :class:`geocli.nets.resnet_keras.ResNet50Keras` and
shape-checked; kernels go from HWIO to OIHW with ``transpose(3, 2, 0, 1)``. A network parameter with no
tensor, or a tensor with no parameter, is an error naming it. Two differences from the port's
``convert_h5_to_weight.py``, both bugs there: it transposes ``(3, 2, 1, 0)``, which loads every 3x3
kernel spatially transposed (O, I, W, H), and it skips ``conv1``/``bn_conv1``, leaving the stem at its
random initialisation; here every layer is loaded, correctly oriented.

(tf.keras' ResNet50 uses BatchNorm eps 1.001e-5 where Keras 1 and the port use 1e-3; the statistics
are the same, and the network keeps the port's 1e-3.)

The port's own checkpoints name the trunk's parameters after the Keras layers without a prefix
(``res2a_branch2a.weight``), the attention branch ``attention.conv1_needl2.*``, ``attention.bn1.*``,
``attention.conv2_needl2.*`` and the classifiers ``desc.*``/``attn.*``; :func:`map_port_names` renames
them to this network's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from geocli.errors import CheckpointError, DataError
from geocli.nets import resnet_keras as names

#: Keras weight name -> MindSpore leaf, per layer kind.
LEAVES = {"kernel": "weight", "W": "weight", "bias": "bias", "b": "bias", "gamma": "gamma", "beta": "beta",
          "moving_mean": "moving_mean", "running_mean": "moving_mean",
          "moving_variance": "moving_variance", "running_std": "moving_variance"}

KERAS1 = re.compile(r"^(?P<layer>.+)_(?P<leaf>W|b|gamma|beta|running_mean|running_std)(?:_\d+)?:0$")
KERAS2 = re.compile(r"^(?P<leaf>kernel|bias|gamma|beta|moving_mean|moving_variance):0$")
TFKERAS = re.compile(r"^conv(?P<stage>[2-5])_block(?P<block>\d+)_(?P<branch>[0-3])_(?P<kind>conv|bn)$")
TF_BRANCH = {"0": "1", "1": "2a", "2": "2b", "3": "2c"}


def keras_layer_name(layer: str) -> str:
    """tf.keras' layer names -> keras-applications' (``conv2_block1_1_bn`` -> ``bn2a_branch2a``);
    other names unchanged."""
    if layer == "conv1_conv":
        return "conv1"
    if layer == "conv1_bn":
        return "bn_conv1"
    m = TFKERAS.match(layer)
    if m is None:
        return layer
    block = chr(ord("a") + int(m.group("block")) - 1)
    prefix = "res" if m.group("kind") == "conv" else "bn"
    return f"{prefix}{m.group('stage')}{block}_branch{TF_BRANCH[m.group('branch')]}"


def read_h5(path: Path) -> Tuple[Dict[str, np.ndarray], str]:
    """Every weight tensor of a Keras h5 file as ``{"<keras layer>.<leaf>": array}`` and the layout name."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not an HDF5 file ({exc})") from None
    tensors: Dict[str, np.ndarray] = {}
    layouts = set()
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle  # a whole saved model
        for group_name in root:
            group = root[group_name]
            if not isinstance(group, h5py.Group):
                continue
            datasets: List[Tuple[str, Any]] = []
            group.visititems(lambda name, obj: datasets.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
            for name, dataset in datasets:
                leaf_name = name.rsplit("/", 1)[-1]
                m1, m2 = KERAS1.match(leaf_name), KERAS2.match(leaf_name)
                if m1 is not None and "/" not in name:
                    layer, leaf, layout = m1.group("layer"), m1.group("leaf"), "keras1"
                elif m2 is not None:
                    layer, leaf, layout = name.split("/")[0] if "/" in name else group_name, m2.group("leaf"), "keras2"
                else:
                    raise DataError(f"{path}: dataset {group_name}/{name} is not a Keras weight name this "
                                    "converter knows (Keras 1 '<layer>_W_1:0' or Keras 2 '<layer>/kernel:0')")
                layers_name = keras_layer_name(layer)
                if layers_name != layer:
                    layout = "keras2-tf.keras"
                key = f"{layers_name}.{LEAVES[leaf]}"
                if key in tensors:
                    raise DataError(f"{path}: two datasets for {key} (second: {group_name}/{name})")
                tensors[key] = np.asarray(dataset[()], dtype=np.float32)
                layouts.add(layout)
    if not tensors:
        raise DataError(f"{path}: holds no weight tensors")
    return tensors, "+".join(sorted(layouts))


def to_network(tensors: Dict[str, np.ndarray], source: Path) -> Dict[str, np.ndarray]:
    """Keras tensors -> ``backbone.<cell>.<leaf>`` arrays, every one shape-checked, none missing or extra."""
    expected = names.parameter_shapes()
    out: Dict[str, np.ndarray] = {}
    for key, array in tensors.items():
        layer, leaf = key.rsplit(".", 1)
        try:
            target = f"{names.module_of(layer)}.{leaf}"
        except KeyError:
            raise DataError(f"{source}: tensor {key} belongs to no layer of ResNet50 without top (a file with the "
                            "classifier? use the notop file)") from None
        if target not in expected:
            raise DataError(f"{source}: tensor {key} has no parameter {target} in the network")
        if array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW (the port's (3, 2, 1, 0) flips 3x3 kernels)
        if tuple(array.shape) != expected[target]:
            raise DataError(f"{source}: tensor {key} has shape {tuple(array.shape)} after HWIO->OIHW, parameter "
                            f"{target} needs {expected[target]}")
        out["backbone." + target] = np.ascontiguousarray(array)
    missing = [n for n in expected if "backbone." + n not in out]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{source}: no tensor for parameter {missing[0]}{more}; is it a ResNet50 weight file?")
    return out


def convert_keras_h5(h5: Path, out: Path, overwrite: bool = False) -> Dict[str, Any]:
    """Write ``out`` (a MindSpore checkpoint of ``backbone.*``); returns counts for the command to print."""
    import mindspore as ms

    from geocli.runtime import checkpoint as ckpt

    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: exists; pass --overwrite to replace it")
    tensors, layout = read_h5(h5)
    params = to_network(tensors, Path(h5))
    net = _ParameterHolder({n: ms.Parameter(ms.Tensor(v), name=n) for n, v in params.items()})
    ckpt.save(out, net, meta={"model": "delf", "weights": "keras-resnet50", "source": str(h5), "layout": layout})
    values = sum(int(np.prod(v.shape)) for v in params.values())
    return {"tensors": len(params), "values": values, "layout": layout, "out": out}


class _ParameterHolder:
    """Just enough of a Cell for :func:`geocli.runtime.checkpoint.save`: ``get_parameters()``."""

    def __init__(self, params):
        self._params = params

    def get_parameters(self):
        return iter(self._params.values())


# ---- the port's parameter names -----------------------------------------------------------------

PORT_ATTENTION = {"attention.conv1_needl2.": "attention.conv1.", "attention.bn1.": "attention.bn.",
                  "attention.conv2_needl2.": "attention.conv2."}
OPTIMIZER_ENTRIES = ("moments.", "accum.", "learning_rate", "global_step", "momentum")


ATTENTION_NAMES = ("attention.conv1.weight", "attention.conv1.bias", "attention.bn.moving_mean",
                   "attention.bn.moving_variance", "attention.bn.gamma", "attention.bn.beta",
                   "attention.conv2.weight", "attention.conv2.bias")


def network_names() -> List[str]:
    """Every parameter name of the full (``attn`` mode) DelfNet, without building it."""
    return (["backbone." + n for n in names.parameter_shapes()] + list(ATTENTION_NAMES)
            + ["desc.weight", "desc.bias", "attn.weight", "attn.bias"])


def port_name(name: str) -> str:
    """One parameter name of the port's DELF -> this network's (unknown names come back unchanged)."""
    for old, new in PORT_ATTENTION.items():
        if name.startswith(old):
            return new + name[len(old):]
    if name.startswith(("desc.", "attn.", "attention.", "backbone.")):
        return name
    layer, _, leaf = name.rpartition(".")
    try:
        return f"backbone.{names.module_of(layer)}.{leaf}"
    except KeyError:
        return name


def map_port_names(params: Dict[str, Any], own: List[str]) -> Dict[str, Any]:
    """Rename a checkpoint's entries to this network's names, keeping those the network has."""
    own_set = set(own)
    mapped: Dict[str, Any] = {}
    for name, value in params.items():
        if name.startswith(OPTIMIZER_ENTRIES):
            continue
        target = name if name in own_set else port_name(name)
        if target in own_set:
            mapped[target] = value
    if not mapped:
        sample = ", ".join(list(params)[:3])
        raise CheckpointError(f"none of the checkpoint's {len(params)} entries is a DELF parameter (first: {sample}); "
                              "expected geoloc's names, the MindSpore port's, or a converted Keras ResNet50")
    return mapped

"""ImageNet VGG16 weights for VIGOR's two branches: Keras ``vgg16`` h5 or torchvision ``vgg16(_bn)`` .pth.

Keras' VGG16 (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``, `geoloc data download vgg16-keras`)
was trained on Caffe-style input, BGR with the mean subtracted: the reference's own convention, so its
kernels are copied as they are (HWIO -> OIHW). That is the closest match to the reference's ``vgg16.npy``.

The reference initialises both branches from the Caffe VGG16 (``vgg16.npy``: BGR, 0-255, mean
subtracted); torchvision's VGG16 expects RGB scaled to 0-1 and normalised with the ImageNet mean/std.
For the reference preset (BGR, mean [103.939, 116.779, 123.6] subtracted, no scaling) the first
convolution is folded so the converted network computes on our input exactly what torchvision's
computes on its own: the input channels are reordered RGB -> BGR, divided by 255 * std, and the bias
absorbs the difference of the two means (``conv(x) = W (x + m - 255 mu) / (255 s) + b``; exact away from
the zero-padded border, where the two conventions pad different values). For the port preset (RGB,
ImageNet mean/std) the weights are copied unchanged.

torchvision layout: ``features.<i>.weight/bias`` with convs at i = 0, 2, 5, ... (no BN) or 0, 3, 7, ...
and BatchNorm at i + 1 (``vgg16_bn``); classifier entries are ignored (VIGOR has no FC trunk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from geocli.errors import CheckpointError, UsageError
from geocli.nets.vgg import VGG16_BLOCKS, conv_names

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def torchvision_indices(batch_norm: bool) -> List[int]:
    """``features`` index of each of the 13 convolutions."""
    out, i = [], 0
    for _block, n, _c in VGG16_BLOCKS:
        for _ in range(n):
            out.append(i)
            i += 3 if batch_norm else 2
        i += 1  # max-pool
    return out


def name_map(batch_norm: bool, branches: Tuple[str, ...] = ("grd", "sat")) -> Dict[str, List[str]]:
    """torchvision name -> geoloc parameter names (one per branch)."""
    out: Dict[str, List[str]] = {}
    for conv, idx in zip(conv_names(), torchvision_indices(batch_norm)):
        pairs = [(f"features.{idx}.weight", "conv.weight")]
        if batch_norm:
            pairs += [(f"features.{idx + 1}.weight", "bn.gamma"), (f"features.{idx + 1}.bias", "bn.beta"),
                      (f"features.{idx + 1}.running_mean", "bn.moving_mean"),
                      (f"features.{idx + 1}.running_var", "bn.moving_variance")]
        else:
            pairs.append((f"features.{idx}.bias", "conv.bias"))
        for src, dst in pairs:
            out[src] = [f"{b}.vgg.{conv}.{dst}" for b in branches]
    return out


def fold_first_conv(weight: np.ndarray, bias: np.ndarray, mean_bgr) -> Tuple[np.ndarray, np.ndarray]:
    """torchvision conv1_1 (RGB, normalised input) -> the same function of a BGR mean-subtracted input."""
    scale = 255.0 * IMAGENET_STD  # RGB
    w_rgb = weight / scale[None, :, None, None]
    shift = (np.asarray(mean_bgr, np.float64)[::-1] - 255.0 * IMAGENET_MEAN)  # RGB: our mean - theirs
    new_bias = bias + (w_rgb * shift[None, :, None, None]).sum(axis=(1, 2, 3))
    return w_rgb[:, ::-1].astype(np.float32), new_bias.astype(np.float32)


def convert_state_dict(state: Dict[str, np.ndarray], cfg, folded: bool = True) -> Dict[str, np.ndarray]:
    """geoloc parameters for ``cfg``'s backbone from a torchvision-named VGG16(-BN) state dict; ``folded``
    adapts torchvision's first convolution to the reference's BGR mean-subtracted input."""
    batch_norm = cfg["model"]["backbone"] == "vgg16_bn"
    if float(cfg["model"]["width"]) != 1.0:
        raise UsageError(f"model.width {cfg['model']['width']}: ImageNet weights need the full VGG16 (width 1.0)")
    mapping = name_map(batch_norm)
    missing = [k for k in mapping if k not in state]
    if missing:
        kind = "vgg16_bn" if batch_norm else "vgg16"
        raise CheckpointError(f"not a torchvision {kind} state dict: missing {', '.join(missing[:3])}; the preset's "
                              f"model.backbone is {cfg['model']['backbone']}")
    arrays = {k: np.asarray(v, np.float32) for k, v in state.items()}
    if not folded:
        pass
    elif not batch_norm and cfg["data"]["color"] == "bgr":
        if list(cfg["data"]["std"]) != [1.0, 1.0, 1.0]:
            raise UsageError("the bgr input must be mean-subtracted only (data.std 1) to fold ImageNet weights")
        arrays["features.0.weight"], arrays["features.0.bias"] = fold_first_conv(
            arrays["features.0.weight"], arrays["features.0.bias"], cfg["data"]["mean"])
    elif cfg["data"]["color"] == "bgr":
        raise UsageError("vgg16_bn ImageNet weights expect rgb input: use the port preset")
    out: Dict[str, np.ndarray] = {}
    for src, dsts in mapping.items():
        for dst in dsts:
            out[dst] = arrays[src]
    return out


def read_torch(path: Path) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UsageError("reading .pth needs PyTorch: pip install torch (CPU)") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise CheckpointError(f"{path}: cannot be read as a PyTorch state dict ({str(exc).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def read_keras(path: Path) -> Dict[str, np.ndarray]:
    """Keras VGG16 h5 -> torchvision-style names (``features.<i>.weight`` OIHW, ``.bias``), no BN."""
    import h5py

    out: Dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            for conv, idx in zip(conv_names(), torchvision_indices(False)):
                block, i = conv[4:].split("_")
                name = f"block{block}_conv{i}"
                if name not in root:
                    raise CheckpointError(f"{path}: no layer {name}; is it Keras' VGG16 (include_top=False)?")
                found: Dict[str, np.ndarray] = {}
                root[name].visititems(lambda key, obj: found.__setitem__(key, obj[()]) if hasattr(obj, "shape") else None)
                kernel = [v for k, v in found.items() if v.ndim == 4]
                bias = [v for k, v in found.items() if v.ndim == 1]
                if len(kernel) != 1 or len(bias) != 1:
                    raise CheckpointError(f"{path}: layer {name} does not hold one kernel and one bias")
                out[f"features.{idx}.weight"] = np.ascontiguousarray(kernel[0].transpose(3, 2, 0, 1))
                out[f"features.{idx}.bias"] = bias[0]
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read as HDF5 ({exc})") from None
    return out


def convert(source: Path, out: Path, preset: str = "default", overwrite: bool = False) -> Dict[str, object]:
    """Write a MindSpore checkpoint of both branches' VGG16 for ``--weights``."""
    import mindspore as ms

    from geocli import config

    source, out = Path(source), Path(out)
    if not source.is_file():
        raise UsageError(f"{source}: file not found")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    cfg = config.resolve("vigor", preset)
    if source.suffix.lower() in (".h5", ".hdf5"):
        if cfg["model"]["backbone"] != "vgg16" or cfg["data"]["color"] != "bgr":
            raise UsageError("Keras VGG16 weights fit the default preset (VGG16, BGR input); for the port's "
                             "VGG16-BN convert torchvision's vgg16_bn .pth")
        params = convert_state_dict(read_keras(source), cfg, folded=False)
    else:
        params = convert_state_dict(read_torch(source), cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.ckpt")  # save_checkpoint insists on .ckpt
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(tmp))
    tmp.replace(out)
    return {"out": str(out), "parameters": len(params), "preset": preset}

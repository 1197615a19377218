"""Foreign weights for Centroids-ReID: torchvision's ImageNet ResNet50 and the reference's Lightning checkpoints.

Both are PyTorch files. ``geoloc data convert-weights torchvision-resnet50 FILE`` reads one with
``torch.load(weights_only=True)`` (no pickle code runs) and writes a MindSpore checkpoint under THIS
network's names, which ``geoloc train creid --weights`` (initialisation) or ``geoloc eval creid
--checkpoint`` then loads. The name maps are explicit:

* torchvision ``resnet50-19c8e357.pth``: ``conv1.weight`` -> ``backbone.conv1.weight``, BatchNorm
  ``weight/bias/running_mean/running_var`` -> ``gamma/beta/moving_mean/moving_variance``, the
  ``fc`` classifier and ``num_batches_tracked`` dropped (the reference's ``load_param`` skips ``fc``
  too, ``resnet.py:135-154``);
* the reference's PyTorch-Lightning checkpoint (``state_dict`` of ``CTLModel``):
  ``backbone.base.<torchvision name>`` -> ``backbone.<name>``, ``bn.*`` (the BNNeck) -> ``bnneck.*``,
  ``fc_query.weight`` -> ``classifier.weight``, ``center_loss.centers`` -> ``centers``.

A MindSpore checkpoint that still carries those PyTorch names (converted by another tool) is mapped
the same way by :func:`map_foreign` when given to ``--weights`` or ``--checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from geocli.errors import CheckpointError, UsageError

BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
LIGHTNING = {"bn.": "bnneck.", "fc_query.": "classifier.", "center_loss.centers": "centers"}


def backbone_name(torch_name: str) -> Optional[str]:
    """This network's name of a torchvision ResNet parameter (None for fc / counters)."""
    from geocli.nets.resnet_torchvision import torchvision_name

    inner = torchvision_name(torch_name)
    return None if inner is None else f"backbone.{inner}"


def our_name(name: str) -> Optional[str]:
    """This network's name of a torchvision, Lightning or (already) geoloc parameter name, or None."""
    if name.startswith("backbone.base."):  # the reference's Lightning checkpoint
        return backbone_name(name[len("backbone.base."):])
    if name == "center_loss.centers":
        return "centers"
    if name.startswith("bn."):
        leaf = name[3:]
        return None if leaf == "num_batches_tracked" else f"bnneck.{BN_LEAVES.get(leaf, leaf)}"
    if name.startswith("fc_query."):
        return "classifier." + name[len("fc_query."):]
    if name.startswith(("backbone.", "bnneck.", "classifier.")) or name == "centers":
        return name
    if name.startswith(("conv1.", "bn1.", "layer", "fc.")):  # torchvision
        return backbone_name(name)
    return None


def map_foreign(params: Dict[str, Any], own_names: List[str]) -> Dict[str, Any]:
    """Rename a checkpoint's entries to this network's (``own_names``: the inference network's, backbone
    and BNNeck); everything else is dropped, including a foreign classifier and centres, which belong to
    the identities that network was trained on."""
    own = set(own_names)
    mapped = {}
    for name, value in params.items():
        target = our_name(name)
        if target is not None and target in own:
            mapped[target] = value
    if not any(n in own for n in mapped):
        sample = ", ".join(list(params)[:3])
        raise CheckpointError(f"none of the checkpoint's {len(params)} entries is a Centroids-ReID, torchvision "
                              f"ResNet50 or reference Lightning parameter (first: {sample})")
    return mapped


def read_torch_state(path: Path) -> Dict[str, np.ndarray]:
    """The tensors of a PyTorch file (a bare state dict or a Lightning checkpoint's ``state_dict``)."""
    try:
        import torch
    except ImportError:
        raise UsageError("reading PyTorch weights needs torch: pip install torch "
                         "(the CPU wheel is enough: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
                         ) from None
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for non-checkpoints and unsafe pickles
        raise CheckpointError(f"{path}: not a PyTorch weights file loadable with weights_only=True "
                              f"({str(exc).splitlines()[0][:200]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def convert(src: Path, out: Path, *, overwrite: bool = False) -> Dict[str, Any]:
    """Write ``src`` (torchvision or Lightning) as a MindSpore checkpoint with this network's names."""
    import mindspore as ms

    from geocli.runtime import checkpoint as ckpt

    out = Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"{out}: exists; pass --overwrite to replace it")
    state = read_torch_state(src)
    mapped, skipped = {}, []
    for name, value in state.items():
        target = our_name(name)
        if target is None:
            skipped.append(name)
        else:
            mapped[target] = value
    backbone = [n for n in mapped if n.startswith("backbone.")]
    if not backbone:
        raise CheckpointError(f"{src}: no ResNet50 parameters found (first keys: {', '.join(list(state)[:3])})")
    kind = "lightning" if any(n.startswith("backbone.base.") for n in state) else "torchvision"

    class _Holder:  # ckpt.save wants something with get_parameters()
        def __init__(self, arrays):
            self.params = [ms.Parameter(ms.Tensor(np.ascontiguousarray(v)), name=k) for k, v in arrays.items()]

        def get_parameters(self):
            return self.params

    ckpt.save(out, _Holder(mapped), meta={"source": str(src), "source_format": kind})
    return {"out": str(out), "format": kind, "parameters": len(mapped), "backbone_parameters": len(backbone),
            "skipped": skipped}

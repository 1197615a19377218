"""Mixed precision for the trainer (``train.amp_level``), with MindSpore's levels, applied in place.

MindSpore defines O0 (float32), O1 (float16 for the operators of its white list: convolutions, dense
layers, matmuls), O2 (everything float16 except its black list, the normalisation layers) and O3
(everything float16). ``mindspore.amp.auto_mixed_precision`` returns a *new* network for O1 (it
rewrites the graph) and wraps it for O2/O3, but a geoloc plan's ``forward`` closes over the network
it built, so the levels are applied here to the cells in place with the same lists (O1 at cell level:
convolution and dense cells, which is where the white-listed operators of geoloc's networks live).
The trainer casts every loss term back to float32 before it scales and differentiates them.
"""

from __future__ import annotations

from typing import Any

from geocli.errors import ConfigError

LEVELS = ("O0", "O1", "O2", "O3")


def check_level(level: Any) -> str:
    text = str(level).strip().upper()
    if text not in LEVELS:
        raise ConfigError(f"train.amp_level {level!r}: choose one of {', '.join(LEVELS)} "
                          "(O0 float32; O1 convolutions/dense in float16; O2 all but normalisation; O3 all)")
    return text


def _white_cells():
    from mindspore import nn

    return tuple(c for c in (getattr(nn, n, None) for n in (
        "Conv1d", "Conv2d", "Conv3d", "Conv1dTranspose", "Conv2dTranspose", "Conv3dTranspose", "Dense"))
        if c is not None)


def _black_cells():
    from mindspore import amp, nn

    try:
        listed = tuple(c for c in amp.get_black_list() if isinstance(c, type))
    except Exception:  # older MindSpore without get_black_list
        listed = ()
    return listed or (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)


def apply(network, level: str) -> None:
    """Cast ``network``'s cells for ``level`` in place (O0: nothing)."""
    import mindspore as ms

    level = check_level(level)
    if level == "O0":
        return
    if level == "O1":
        white = _white_cells()
        for _, cell in network.cells_and_names():
            if isinstance(cell, white):
                cell.to_float(ms.float16)
        return
    network.to_float(ms.float16)
    if level == "O2":
        black = _black_cells()
        for _, cell in network.cells_and_names():
            if isinstance(cell, black):
                cell.to_float(ms.float32)


def cpu_failure(level: str, exc: BaseException) -> ConfigError:
    """The error for a level MindSpore's CPU kernels cannot run for this network."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ConfigError(f"train.amp_level={level}: MindSpore's CPU backend cannot run this network in float16 "
                       f"({first}); use train.amp_level=O0 on CPU (O1-O3 are for Ascend and GPU)")


__all__ = ["LEVELS", "check_level", "apply", "cpu_failure"]

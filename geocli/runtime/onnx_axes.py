"""Free input axes of an exported ONNX graph: one file for every batch size and image size.

MindSpore exports ONNX at fixed shapes only (``ms.export`` refuses a dynamic-shape input: "Export ONNX
format model not support dynamic shape mode", MindSpore 2.10). A fully convolutional graph whose
padding is ``auto_pad`` (SAME_UPPER / VALID, as MindSpore writes 'same' and 'valid' convolutions and
pools) computes the same thing at any size, though; only the shapes declared on its inputs and outputs
pin it. DELF's extraction runs a different canvas per scale and per image aspect, so rather than one
export per canvas, the declared sizes of the chosen input axes are made symbolic (``onnx`` package) and
the output shapes left for onnxruntime to infer.

Whether a graph really computes the same thing at another size is not assumed: :func:`grown` gives a
second input of different sizes along the freed axes, on which the caller compares the rewritten graph
with the network (``geocli.runtime.engine`` does, before caching the file). A graph with a size baked in
(an explicit pad computed for one size, a reshape to fixed dimensions) fails there.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np

from geocli.errors import UsageError


def free_input_axes(path: Path, axes: Sequence[int]) -> None:
    """Rewrite the ONNX file ``path`` in place: the sizes of ``axes`` of every graph input become symbolic
    (``axis2``, ... shared by all inputs), and the declared output shapes are dropped."""
    try:
        import onnx
    except ImportError:
        raise UsageError("--engine onnxruntime for this model needs the onnx package to free the exported "
                         "graph's image size: pip install onnx (or pip install 'geoloc[engine]')") from None
    model = onnx.load(str(path))
    weights = {w.name for w in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in weights:  # older IR versions list the weights as inputs too
            continue
        dims = graph_input.type.tensor_type.shape.dim
        for axis in axes:
            if not -len(dims) <= axis < len(dims):
                raise UsageError(f"axis {axis} of ONNX input {graph_input.name!r}: it has {len(dims)} axes")
            dims[axis].dim_param = f"axis{axis % len(dims)}"  # replaces dim_value (a protobuf oneof)
    for graph_output in model.graph.output:
        graph_output.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]  # intermediate shapes recorded at the export size
    onnx.save(model, str(path))


def grown(inputs: Sequence[np.ndarray], axes: Sequence[int]) -> List[np.ndarray]:
    """``inputs`` with each of ``axes`` about half as long again and odd-sized beyond the batch axis (an odd
    image side shows a padding computed for even sides), the values repeated from the originals."""
    out = []
    for x in inputs:
        shape = list(x.shape)
        for axis in axes:
            axis = axis % x.ndim
            shape[axis] = shape[axis] + 1 if axis == 0 else shape[axis] + shape[axis] // 2 + (1 - shape[axis] % 2)
        out.append(np.resize(x, shape).astype(x.dtype))
    return out

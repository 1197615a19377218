"""``Annotated`` option aliases shared by every command, so a flag means the same thing everywhere.

Backends' own sub-commands (``ModelSpec.commands``) and data commands should use these too: the names
(``--checkpoint``, ``--data``, ``--out``, ``--top``, ``--device``, ``--set``, ...) and their shell
completion then match the rest of geoloc. Value completers import their lists lazily, never MindSpore.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated



def _starting_with(values, incomplete: str) -> List[str]:
    return [v for v in values if v.startswith(incomplete.lower())]


#: What --device and --format complete to. The modules that check these values
#: (geocli.runtime.context.DEVICES, geocli.export.FORMATS) import NumPy, which would double the time of
#: a TAB; tests/test_completions.py asserts the lists stay equal.
DEVICES = ("cpu", "gpu", "ascend")
FORMATS = ("mindir", "onnx", "air")
CONV_KERNELS = ("auto", "blocked", "mindspore")  # geocli.runtime.blocked_conv.CHOICES


def complete_device(incomplete: str) -> List[str]:
    return _starting_with(DEVICES, incomplete)


def complete_engine(incomplete: str) -> List[str]:
    from geocli.runtime.engine import ENGINES

    return _starting_with(ENGINES, incomplete)


def complete_conv(incomplete: str) -> List[str]:
    return _starting_with(CONV_KERNELS, incomplete)


def complete_format(incomplete: str) -> List[str]:
    return _starting_with(FORMATS, incomplete)


def complete_mode(incomplete: str) -> List[str]:
    return _starting_with(("graph", "pynative"), incomplete)


#: ``--preset`` of a task's generic command; geocli.cli.plugins gives each model its own (its presets).
PresetOpt = Annotated[
    str,
    typer.Option("--preset", "-p", help="Preset of the model (`geoloc models` lists them)."),
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML file whose keys override the preset.", show_default=False),
]
SetOpt = Annotated[
    Optional[List[str]],
    typer.Option("--set", "-s", metavar="KEY=VALUE",
                 help="Override one config key (dotted, typed), e.g. --set optim.lr=1e-4. Repeatable.",
                 show_default=False),
]
PrintConfigOpt = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved config as YAML and exit.")
]
DataOpt = Annotated[
    Optional[Path],
    typer.Option("--data", "-d", help="Dataset folder (layouts in README.md).", show_default=False),
]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option("--out", "-o", help="Output folder (default: runs/<model>-<preset>-<timestamp>).",
                 show_default=False),
]
CheckpointOpt = Annotated[
    Optional[Path],
    typer.Option("--checkpoint", "--ckpt", help="Checkpoint written by `geoloc train`.", show_default=False),
]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option("--device", help="cpu, gpu or ascend (default: the best target MindSpore offers).",
                 show_default=False, autocompletion=complete_device),
]
ModeOpt = Annotated[
    str, typer.Option("--mode", help="graph (compiled, fast) or pynative (eager, debuggable).",
                      autocompletion=complete_mode)
]
EngineOpt = Annotated[
    str, typer.Option("--engine", help="Run the network in mindspore or onnxruntime (its exported ONNX graph, "
                      "exported once and cached next to the checkpoint).", autocompletion=complete_engine)
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="mindir, onnx or air (air needs Ascend).", autocompletion=complete_format)
]
TopOpt = Annotated[int, typer.Option("--top", "--top-k", "-k", min=1, help="Results per query.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the config's).",
                                                show_default=False)]
ThreadsOpt = Annotated[
    Optional[int], typer.Option("--threads", help="CPU threads for MindSpore (default: all cores).",
                                show_default=False)
]
ConvOpt = Annotated[
    Optional[str], typer.Option("--conv", help="CPU convolution kernels: blocked (oneDNN's blocked layout; "
                                "networks up to 1.65x faster here; compiled once on first use, needs g++), "
                                "mindspore (MindSpore's own) or auto (blocked where it can be built, else "
                                "mindspore). Default: $GEOLOC_CONV, else auto.", autocompletion=complete_conv,
                                show_default=False)
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo work whose output already exists.")]

"""``Annotated`` option aliases shared by every command, so a flag means the same thing everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import complete_model, complete_preset

ModelArg = Annotated[
    str,
    typer.Argument(
        help="Model name: vigor, delf, posenet, sdnet or creid (`geoloc models` lists them).",
        autocompletion=complete_model,
        show_default=False,
    ),
]
PresetOpt = Annotated[
    str,
    typer.Option("--preset", "-p", help="Preset of the model (`geoloc models` lists them).",
                 autocompletion=complete_preset),
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
                 show_default=False),
]
ModeOpt = Annotated[
    str, typer.Option("--mode", help="graph (compiled, fast) or pynative (eager, debuggable).")
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the config's).",
                                                show_default=False)]
ThreadsOpt = Annotated[
    Optional[int], typer.Option("--threads", help="CPU threads for MindSpore (default: all cores).",
                                show_default=False)
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo work whose output already exists.")]

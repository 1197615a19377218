"""Cambridge Landmarks data commands (registered by geocli.models.posenet): MindRecord conversion and the
synthetic plaza. ``geoloc data convert-mindrecord cambridge`` / ``geoloc data synth cambridge``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import console
from geocli.cli.data_prepare import print_conversion, progress_bars
from geocli.cli.options import OverwriteOpt


def convert_mindrecord(
    scene: Annotated[Path, typer.Option("--scene", "--source", "--data", help="One Cambridge scene folder "
                                        "(dataset_train.txt, dataset_test.txt, seqN/), e.g. data/KingsCollege.",
                                        show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: <scene>/mindrecord).",
                                                show_default=False)] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed rows and missing or unreadable "
                                           "images, listing each, instead of stopping at the first.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert a Cambridge Landmarks scene to train/test.mindrecord (image bytes + float32[7] pose);
    finished files are skipped on re-runs.

    Examples:

      geoloc data convert-mindrecord cambridge --scene data/KingsCollege

      geoloc data convert-mindrecord cambridge --scene data/Street --skip-bad --out /fast/street-mr
    """
    from geocli.data.cambridge_mindrecord import convert

    with progress_bars() as progress:
        report = convert(scene, out, overwrite=overwrite, skip_bad=skip_bad, progress=progress)
    print_conversion(report)


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the dataset to.", show_default=False)],
    frames: Annotated[Optional[int], typer.Option("--frames", help="Frames per sequence (default 120).",
                                                  show_default=False, min=2)] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Image width (default 160).",
                                                 show_default=False, min=16)] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Image height (default 90).",
                                                  show_default=False, min=16)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Scene seed (default 0).", show_default=False)] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Render a synthetic plaza in the Cambridge Landmarks layout (PoseNet demo and test data).

    Examples:

      geoloc data synth cambridge --out data/SyntheticPlaza

      geoloc data synth cambridge --out /tmp/plaza --frames 40 --width 96 --height 54
    """
    from geocli.data.synth.cambridge import generate

    given = {k: v for k, v in (("frames", frames), ("width", width), ("height", height), ("seed", seed))
             if v is not None}
    with progress_bars() as progress:
        summary = generate(out, overwrite=overwrite, progress=progress, **given)
    state = "already there (--overwrite renders it again)" if summary.get("skipped") else "written"
    counts = ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool))
    console().print(f"cambridge: {summary['path']} {state}; frames: {counts}")

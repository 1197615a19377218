"""Centroids-ReID's data commands: ``geoloc data synth reid`` and ``geoloc data convert-weights
torchvision-resnet50``. Only typer, rich and the standard library are imported here; the work is done by
library functions imported when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated


def synth_reid(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (Market-1501 layout).")],
    train_ids: Annotated[int, typer.Option("--train-ids", help="Training identities.")] = 64,
    test_ids: Annotated[int, typer.Option("--test-ids", help="Query/gallery identities (disjoint from training).")] = 32,
    cameras: Annotated[int, typer.Option("--cameras", help="Cameras (each with its own colour cast, "
                                         "background and scale).")] = 4,
    per_camera: Annotated[int, typer.Option("--per-camera", help="Images per identity and camera.")] = 2,
    height: Annotated[int, typer.Option("--height", help="Image height in pixels.")] = 128,
    width: Annotated[int, typer.Option("--width", help="Image width in pixels.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
) -> None:
    """Draw a learnable synthetic person re-id set in Market-1501's layout and file naming.

    Identities differ by clothing colours, patterns and body proportions; cameras by colour cast,
    background, scale and blur. The gallery also holds pid-0 distractors and pid -1 junk, as Market does.

    Examples:

      geoloc data synth reid --out data/synth-reid

      geoloc train creid --data data/synth-reid --preset demo
    """
    from rich.console import Console

    from geocli.data.synth.reid import ReidSynthSpec, synthesize

    spec = ReidSynthSpec(train_ids=train_ids, test_ids=test_ids, cameras=cameras, per_camera=per_camera,
                         height=height, width=width, seed=seed)
    counts = synthesize(out, spec, overwrite=overwrite)
    Console().print(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def convert_resnet50(
    src: Annotated[Path, typer.Argument(help="resnet50-19c8e357.pth (torchvision) or the reference's "
                                        "Lightning .ckpt.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="MindSpore checkpoint to write "
                                                "(default: SRC with the suffix .ms.ckpt).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Convert torchvision's ImageNet ResNet50 (or a Centroids-ReID Lightning checkpoint) to MindSpore.

    Reads the file with torch.load(weights_only=True) (torch must be installed), renames every parameter
    to geoloc's Centroids-ReID network through an explicit map and writes a MindSpore checkpoint.

    Examples:

      geoloc data convert-weights torchvision-resnet50 resnet50-19c8e357.pth

      geoloc train creid --data data/Market-1501-v15.09.15 --weights resnet50-19c8e357.ms.ckpt

      geoloc data convert-weights torchvision-resnet50 market1501_resnet50_256_128_epoch_120.ckpt -o ctl.ckpt

      geoloc eval creid --data data/Market-1501-v15.09.15 --checkpoint ctl.ckpt
    """
    from rich.console import Console

    from geocli.models.creid.weights import convert

    target = out if out is not None else src.with_name(src.name.rsplit(".", 1)[0] + ".ms.ckpt")
    report = convert(src, target, overwrite=overwrite)
    Console().print(f"wrote {report['out']}: {report['parameters']} parameters from a {report['format']} file "
                    f"({len(report['skipped'])} skipped: fc / counters)")

"""VIGOR's own commands (imported only when one runs; MindSpore is imported by the library calls).

``geoloc data synth vigor`` writes the synthetic cities; ``geoloc retrieve vigor index|query`` build a
satellite index and geo-localise panoramas against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from geocli.cli.options import EngineOpt, OverwriteOpt


def synth_vigor(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the dataset to.", show_default=False)],
    grid: Annotated[int, typer.Option("--grid", help="Tile centres per side and city.", min=3)] = 6,
    panos_per_tile: Annotated[int, typer.Option("--panos-per-tile", help="Panoramas per tile.", min=1)] = 4,
    tile_px: Annotated[int, typer.Option("--tile-px", help="Written tile size in pixels (the dataset's is 640).",
                                         min=32)] = 96,
    seed: Annotated[int, typer.Option("--seed", help="City seed.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Render four small synthetic cities in the exact VIGOR layout: aerial tiles on the half-overlapping
    grid, north-aligned panoramas rendered from street positions, splits/ and splits__corrected/.

    Examples:

      geoloc data synth vigor --out data/vigor-synth

      geoloc data synth vigor --out /tmp/vigor --grid 4 --panos-per-tile 2 --tile-px 64
    """
    from geocli.cli._common import console
    from geocli.data.synth.vigor import SynthSpec, synthesize

    summary = synthesize(out, SynthSpec(grid=grid, panos_per_tile=panos_per_tile, tile_px=tile_px, seed=seed),
                         overwrite=overwrite)
    state = "already there (--overwrite renders it again)" if summary["reused"] else "written"
    console().print(f"vigor: {out} {state}; {summary['panoramas']} panoramas, {summary['tiles']} tiles in "
                    f"{', '.join(summary['cities'])}")


retrieve_app = typer.Typer(help="Geo-localise street panoramas against a satellite index.", no_args_is_help=True,
                           add_completion=False)


@retrieve_app.command("index")
def index_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A VIGOR checkpoint.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="VIGOR folder whose tiles to index.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature file to write (HDF5, appended to).")] = Path("tiles.h5"),
    setting: Annotated[str, typer.Option("--setting", help="same-area (all tiles) or cross-area (SF + Chicago).")]
    = "same-area",
    labels: Annotated[str, typer.Option("--labels", help="original or corrected (per-city m/px).")] = "original",
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, gpu or ascend.")] = None,
    engine: EngineOpt = "mindspore",
) -> None:
    """Describe every satellite tile of a VIGOR folder into a feature file; re-runs add only new tiles.

    Examples:

      geoloc retrieve vigor index --checkpoint runs/vigor-default-.../checkpoints/last.ckpt --data data/VIGOR

      geoloc retrieve vigor index --checkpoint CKPT --data data/VIGOR --setting cross-area --out sf-chicago.h5

      geoloc retrieve vigor index --checkpoint CKPT --data data/VIGOR --engine onnxruntime
    """
    from rich.progress import Progress

    from geocli.cli._common import console
    from geocli.data.formats.vigor import LABELS, SETTINGS, check_choice
    from geocli.models.vigor.retrieve import build_index

    check_choice(setting, SETTINGS, "--setting")
    check_choice(labels, LABELS, "--labels")
    with Progress(console=console(), transient=True) as bar:
        task = bar.add_task("describing tiles", total=None)
        result = build_index(checkpoint, data, out, setting=setting, labels=labels, device=device,
                             progress=lambda done, total: bar.update(task, completed=done, total=total), engine=engine)
    console().print(f"{result['index']}: {result['tiles']} tiles ({result['added']} added)")


@retrieve_app.command("query")
def query_command(
    panoramas: Annotated[List[Path], typer.Argument(help="Panorama files or folders (names may begin with '-': "
                                                    "put `--` before them).", show_default=False)],
    satellite_index: Annotated[Path, typer.Option("--satellite-index", help="Feature file from `index`.",
                                                  show_default=False)],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The checkpoint the index was built with.",
                                             show_default=False)],
    top: Annotated[int, typer.Option("--top", help="Tiles to list per panorama.", min=1)] = 5,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.json and the pictures.")]
    = Path("vigor-retrieve"),
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, gpu or ascend.")] = None,
    engine: EngineOpt = "mindspore",
) -> None:
    """Top tiles with their GPS centres and the offset head's refined position, plus a picture per panorama.

    Examples:

      geoloc retrieve vigor query street.jpg --satellite-index tiles.h5 --checkpoint CKPT --top 5

      geoloc retrieve vigor query --satellite-index tiles.h5 --checkpoint CKPT -- "-Ab3x,40.7,-73.9,.jpg"
    """
    from rich.table import Table

    from geocli.cli._common import console
    from geocli.models.vigor.retrieve import query

    result = query(checkpoint, panoramas, satellite_index, out, top=top, device=device, engine=engine)
    table = Table(title="vigor retrieve")
    for col in result["rows"][0]:
        table.add_column(col)
    for row in result["rows"]:
        table.add_row(*[f"{v:.6f}" if isinstance(v, float) else str(v) for v in row.values()])
    console().print(table)
    console().print(f"results: {result['json']}")


def convert_vgg16(
    source: Annotated[Path, typer.Argument(help="Keras VGG16 .h5 (no top), or torchvision vgg16 .pth (vgg16_bn for --preset port).",
                                           show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="MindSpore checkpoint to write.")] = Path("vgg16_vigor.ckpt"),
    preset: Annotated[str, typer.Option("--preset", help="default (VGG16, BGR input: conv1 folded) or port "
                                        "(VGG16-BN, RGB).")] = "default",
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert ImageNet VGG16 weights into both VIGOR branches; train with `--weights`.

    Examples:

      geoloc data convert-weights vgg16 weights/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5

      geoloc data convert-weights vgg16 vgg16-397923af.pth --out weights/vgg16_vigor.ckpt

      geoloc train vigor --data data/VIGOR --weights weights/vgg16_vigor.ckpt

      geoloc data convert-weights vgg16 vgg16_bn-6c64b313.pth --preset port --out weights/vgg16bn_vigor.ckpt
    """
    from geocli.cli._common import console
    from geocli.models.vigor.weights import convert

    result = convert(source, out, preset=preset, overwrite=overwrite)
    console().print(f"{result['out']}: {result['parameters']} parameters for the {result['preset']} preset")

"""DELF's data commands (registered in geocli/models/delf/__init__.py):

* ``geoloc data convert-mindrecord gldv2``: GLDv2 CSVs + images -> sharded MindRecord;
* ``geoloc data synth gldv2``: the small learnable landmark set (demo and tests);
* ``geoloc data convert-weights keras-resnet50``: Keras ImageNet h5 -> MindSpore checkpoint.

Thin Typer functions over library calls; MindSpore is imported only when a command runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import console
from geocli.cli.options import OverwriteOpt


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Rich bars on stderr with images/s: ``factory(label, total)`` returns ``advance(k)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} images/s" if speed else "", style="progress.data.speed")

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Speed(),
                   TimeRemainingColumn(), console=console(stderr=True), transient=False)

    def factory(label: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(label, total=total)
        return lambda k: bar.advance(task, k)

    with bar:
        yield factory


def convert_gldv2(
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="GLDv2 folder as `geoloc data download gldv2` "
                                                 "leaves it: train_clean.csv, train.csv, train/<a>/<b>/<c>/<id>.jpg.",
                                                 show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: <data>/mindrecord).",
                                                show_default=False)] = None,
    shards: Annotated[int, typer.Option("--shards", min=1, help="Shards per split (the port: 128).")] = 128,
    val_split: Annotated[float, typer.Option("--val-split", min=0.0, max=0.99,
                                             help="Share of each landmark's images for validation (0: none).")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split (the port's RandomState(MT19937)).")] = 0,
    clean_csv: Annotated[Optional[Path], typer.Option("--clean-csv", help="train_clean.csv to read instead of "
                                                      "<data>/train_clean.csv.", show_default=False)] = None,
    train_csv: Annotated[Optional[Path], typer.Option("--train-csv", help="train.csv (id,url,landmark_id) to read "
                                                      "when there is no clean CSV.", show_default=False)] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Image root instead of <data>/train.",
                                                   show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first missing or unreadable image "
                                         "instead of skipping and reporting it.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert GLDv2(-clean) to MindRecord shards {file_id, label, data} for `geoloc train delf`.

    Landmarks are relabelled 0..N-1 by sorted id (relabeling.csv), each landmark's images split into
    train/validation by the port's rule (single-image landmarks stay in training), the original JPEG
    bytes stored. Missing or unreadable images are skipped and listed in conversion_report.csv.
    Finished shards are kept on re-runs; sources are never modified.

    Examples:

      geoloc data convert-mindrecord gldv2 --data data/gldv2

      geoloc data convert-mindrecord gldv2 --data data/gldv2 --out /fast/gldv2-mr --shards 256 --strict
    """
    from geocli.data.gldv2_mindrecord import REPORT, convert

    with _progress() as progress:
        report = convert(data, out, train_csv=train_csv, clean_csv=clean_csv, images=images, shards=shards,
                         val_split=val_split, seed=seed, strict=strict, overwrite=overwrite, progress=progress)
    _print_gldv2(report, REPORT)


def _print_gldv2(report, report_name: str) -> None:
    from rich.table import Table

    con = console()
    table = Table(title=f"GLDv2 -> MindRecord ({report.classes} classes)")
    for column in ("split", "images", "shards", "kept from an earlier run"):
        table.add_column(column)
    for split, paths in report.shards.items():
        kept = sum(1 for p in paths if p in report.up_to_date)
        table.add_row(split, f"{report.rows.get(split, 0):,}", str(len(paths)), str(kept))
    con.print(table)
    missing, unreadable = report.count("missing"), report.count("unreadable")
    con.print(f"written {report.images_written:,} images in {report.seconds:.1f} s "
              f"({report.images_per_second:,.0f} images/s) to {report.out}")
    if missing or unreadable:
        con.print(f"[yellow]skipped[/] {missing:,} missing and {unreadable:,} unreadable images: "
                  f"{report.out / report_name}", markup=True, highlight=False)


def synth_gldv2(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the dataset to.", show_default=False)],
    landmarks: Annotated[Optional[int], typer.Option("--landmarks", min=2, help="Landmarks (default 10).",
                                                     show_default=False)] = None,
    views: Annotated[Optional[int], typer.Option("--views", min=2, help="Images per landmark (default 40).",
                                                 show_default=False)] = None,
    distractors: Annotated[Optional[int], typer.Option("--distractors", min=0, help="One-off buildings listed "
                                                       "only in train.csv (default 20).", show_default=False)] = None,
    missing: Annotated[Optional[int], typer.Option("--missing", min=0, help="Listed images deliberately not "
                                                   "written (default 3).", show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option("--size", min=32, help="Longer image side in px (default 128).",
                                                show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (default 0).", show_default=False)] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Render a small learnable landmark set in the GLDv2 layout (DELF demo and tests).

    Each landmark is a textured 3-D building photographed from varying viewpoints, distances, crops and
    lighting; distractors and a few missing files make it look like a partial real download.

    Examples:

      geoloc data synth gldv2 --out data/gldv2-synth

      geoloc data synth gldv2 --out /tmp/gld --landmarks 5 --views 20 --size 96
    """
    from geocli.data.synth.gldv2 import generate

    options = {"landmarks": landmarks, "views": views, "distractors": distractors, "missing": missing,
               "size": size, "seed": seed}
    with _progress() as progress:
        summary = generate(out, overwrite=overwrite, progress=progress, **options)
    state = "already there (--overwrite renders it again)" if summary.get("skipped") else "written"
    console().print(f"gldv2 (synthetic): {summary['path']} {state}; {summary['landmarks']} landmarks, "
                    f"{summary['images']} images, {summary['distractors']} distractors, "
                    f"{summary['missing']} listed but missing")


def convert_keras_resnet50(
    h5: Annotated[Path, typer.Argument(help="Keras ResNet50 weights (.h5): the port's Keras-1 file or "
                                       "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (.ckpt).", show_default=False)],
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert Keras ResNet50 ImageNet weights to a checkpoint for `geoloc train delf --weights`.

    Every layer is loaded, the stem included, with kernels HWIO -> OIHW (the port skips the stem and
    loads 3x3 kernels spatially transposed). Every tensor is shape-checked; a missing or extra one is
    an error naming it.

    Examples:

      geoloc data download resnet50-keras && geoloc data convert-weights keras-resnet50 \\
          weights/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 --out weights/resnet50_keras.ckpt

      geoloc train delf --data data/gldv2/mindrecord --stage tuning --weights weights/resnet50_keras.ckpt
    """
    from geocli.models.delf.weights import convert_keras_h5

    result = convert_keras_h5(h5, out, overwrite=overwrite)
    console().print(f"loaded {result['tensors']} tensors ({result['values']:,} values, {result['layout']} layout) "
                    f"from {h5} -> {result['out']}")

"""``geoloc data npz-prep sen12`` and ``geoloc data synth sen12``: SDNet's data commands.

Imports only typer/rich/stdlib (and geocli's CLI helpers) at module import; the work happens in
:mod:`geocli.data.sen12_npz` and :mod:`geocli.data.synth.sen12`, imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from geocli.cli.options import OverwriteOpt, PresetOpt, SetOpt


def npz_prep_sen12(
    root: Annotated[Path, typer.Option("--root", help="SEN1-2 folder holding ROIs1158_spring/ ... ROIs2017_winter/.",
                                       show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: ROOT/npz).",
                                                show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the scene split and of the non-match draw.")] = 0,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Leave out pairs whose twin file is missing "
                                           "(listed in skipped.txt) instead of stopping.")] = False,
    overwrite: OverwriteOpt = False,
    preset: PresetOpt = "default",
    set_: SetOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Decoding/SIFT threads.")] = 2,
) -> None:
    """Cut 64x64 optical|SAR patch pairs around SIFT keypoints into the port's train.npz / test.npz.

    train.npz holds matches only; test.npz one non-match (a SAR patch of another image) per match.
    Scenes (season/s1_<n>) never straddle the split. Unreadable or empty PNGs are skipped and listed.
    Every choice is a prep.* config key (see docs/sdnet.md), e.g. --set prep.max_per_image=5.

    Examples:

      geoloc data npz-prep sen12 --root data/SEN1-2 --out data/sen12-npz

      geoloc data npz-prep sen12 --root data/SEN1-2 --skip-bad --set prep.test_fraction=0.3
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from geocli import config
    from geocli.cli._common import console
    from geocli.data.sen12_npz import prepare

    cfg = config.resolve("sdnet", preset, None, list(set_ or []))
    target = Path(out) if out is not None else Path(root) / "npz"
    bar = Progress(TextColumn("npz-prep sen12"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} pairs/s"), TimeRemainingColumn(), console=console(stderr=True))
    state = {}

    def progress(done: int, total: int, rate: float) -> None:
        if "task" not in state:
            state["task"] = bar.add_task("", total=total, rate="-")
        bar.update(state["task"], completed=done, rate=f"{rate:.0f}")

    with bar:
        summary = prepare(Path(root), target, dict(cfg["prep"]), seed=seed, skip_bad=skip_bad,
                          overwrite=overwrite, progress=progress, workers=workers)
    table = Table(title=f"SEN1-2 -> {target}")
    table.add_column("season", no_wrap=True)
    table.add_column("split")
    for col in ("images", "matches", "non-matches", "no keypoints", "skipped"):
        table.add_column(col, justify="right")
    for key, c in summary["per_season"].items():
        season, split = key.split("/")
        table.add_row(season, split, str(c.get("images", 0)), str(c.get("matches", 0)), str(c.get("non_matches", 0)),
                      str(c.get("images_without_keypoints", 0)), str(c.get("skipped_images", 0)))
    con = console()
    con.print(table)
    con.print(f"train.npz {summary['train_rows']} rows ({summary['scenes']['train']} scenes), test.npz "
              f"{summary['test_rows']} rows ({summary['scenes']['test']} scenes); "
              f"{summary['pairs_per_second']} pairs/s")
    skipped: List[str] = summary["skipped_files"]
    if skipped:
        con.print(f"[yellow]skipped {len(skipped)} file(s)[/] (listed in {target / 'skipped.txt'}):")
        for line in skipped[:10]:
            con.print(f"  {line}")


def synth_sen12(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the SEN1-2 layout into.", show_default=False)],
    seasons: Annotated[int, typer.Option("--seasons", min=1, max=4, help="Season folders.")] = 2,
    scenes: Annotated[int, typer.Option("--scenes", min=1, help="Scenes per season.")] = 4,
    patches: Annotated[int, typer.Option("--patches", min=1, help="Patches per scene.")] = 6,
    size: Annotated[int, typer.Option("--size", min=64, help="Patch side in pixels (SEN1-2: 256).")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Synthetic optical/SAR scenes in the SEN1-2 layout: optical-like terrain and SAR-like twins of the
    same geometry (speckle, non-linear intensities, changed edges). Then run npz-prep on them.

    Examples:

      geoloc data synth sen12 --out data/sen12-synth

      geoloc data npz-prep sen12 --root data/sen12-synth
    """
    from geocli.cli._common import console
    from geocli.data.synth.sen12 import SynthSpec, generate

    spec = SynthSpec(seasons=seasons, scenes=scenes, patches=patches, size=size, seed=seed)
    summary = generate(out, spec=spec, overwrite=overwrite)
    state = "already there" if summary["done"] else "written"
    console().print(f"{summary['pairs']} optical/SAR pairs {state} in {out}; next: "
                    f"geoloc data npz-prep sen12 --root {out}")

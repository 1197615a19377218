"""A backend's CLI plug-ins as the CLI tests register them: a Typer app of model sub-commands and a data
command function. Importing this module is recorded, so the tests can check it happens only on demand."""

import os
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import make_app
from geocli.cli.options import CheckpointOpt, DeviceOpt, TopOpt
from geocli.errors import DataError

IMPORTED = True

retrieve_app = make_app("zz_plugin", "Plug-in retrieval steps: index, query.")


@retrieve_app.command("index")
def index(features: Annotated[Path, typer.Option("--features", help="Feature file.", show_default=False)],
          out: Annotated[Path, typer.Option("--out", help="Index file to write.", show_default=False)]) -> None:
    """Write an index of the names in a feature file (one per line).

    Example: geoloc retrieve zz_plugin index --features F.txt --out I.txt
    """
    if not features.is_file():
        raise DataError(f"{features}: no such feature file; write one with `geoloc retrieve zz_plugin extract`")
    names = sorted(line.strip() for line in features.read_text().splitlines() if line.strip())
    out.write_text("\n".join(names) + "\n")
    typer.echo(f"indexed {len(names)} names -> {out}")


@retrieve_app.command("query")
def query(name: Annotated[str, typer.Argument(help="Query name.")],
          index_file: Annotated[Path, typer.Option("--index", help="Index file.", show_default=False)],
          top: TopOpt = 3, checkpoint: CheckpointOpt = None, device: DeviceOpt = None) -> None:
    """Rank the indexed names by shared prefix length with the query.

    Example: geoloc retrieve zz_plugin query abc --index I.txt --top 2
    """
    names = index_file.read_text().split()
    ranked = sorted(names, key=lambda n: (-len(os.path.commonprefix([n, name])), n))[:top]
    typer.echo(" ".join(ranked))


def npz_prep(source: Annotated[Path, typer.Option("--data", help="Folder of .txt files.", show_default=False)],
             out: Annotated[Optional[Path], typer.Option("--out", help="Output file.", show_default=False)] = None,
             overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False
             ) -> None:
    """Count the .txt files of a folder into one summary file.

    Example: geoloc data npz-prep zz_data --data DIR --out counts.txt
    """
    target = out or source / "counts.txt"
    if target.exists() and not overwrite:
        raise DataError(f"{target} exists: pass --overwrite to replace it")
    target.write_text(f"{len(list(source.glob('*.txt')))}\n")
    typer.echo(f"wrote {target}")

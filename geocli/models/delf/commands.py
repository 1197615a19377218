"""``geoloc retrieve delf extract | fit-pca | index | query``: DELF's own retrieval steps.

Declared through the registry (``ModelSpec.commands = {"retrieve": "...:retrieve_app"}``), so the
shared ``retrieve`` verb stays free of DELF's options. This module imports only typer, rich and the
standard library at import time; each command calls one function of :mod:`.pipeline`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from geocli.cli.options import EngineOpt

retrieve_app = typer.Typer(
    name="delf", no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="DELF retrieval at scale: extract local features, fit the PCA, build an index, query it.\n\n"
         "Example pipeline:\n\n"
         "  geoloc retrieve delf extract --images db/ --checkpoint CKPT --out raw.h5 --set extract.pca=null\n\n"
         "  geoloc retrieve delf fit-pca --features raw.h5 --out pca/\n\n"
         "  geoloc retrieve delf extract --images db/ --checkpoint CKPT --pca pca/ --out db.h5\n\n"
         "  geoloc retrieve delf index --features db.h5 --out db-index/\n\n"
         "  geoloc retrieve delf query q1.jpg q2.jpg --checkpoint CKPT --pca pca/ --index db-index/")

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "--ckpt", show_default=False,
                                                       help="DELF checkpoint (geoloc train delf --stage attn).")]
SetOpt = Annotated[Optional[List[str]], typer.Option("--set", "-s", metavar="KEY=VALUE", show_default=False,
                                                     help="Override a config key, e.g. --set extract.scales=[1.0]. "
                                                          "Repeatable.")]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", show_default=False, help="DELF preset.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", show_default=False, help="cpu, gpu or ascend.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo work whose output already exists.")]
PcaOpt = Annotated[Optional[Path], typer.Option("--pca", show_default=False,
                                                help="PCA folder: mean.npy + pca_proj_mat.npy (fit-pca's or the "
                                                     "port's). Without it descriptors stay 1024-d.")]


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _overrides(set_: Optional[List[str]], pca: Optional[Path]) -> List[str]:
    items = list(set_ or [])
    if pca is not None:
        items.append(f"extract.pca={Path(pca).resolve()}")
    return items


def _progress_bar(label: str):
    """A Rich progress bar with images/s, as ``progress(done, total, rate)``; ``close()`` ends it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.description}"), TimeRemainingColumn(), console=_console(stderr=True))
    state = {}

    def update(done: int, total: int, rate: float = 0.0) -> None:
        if "task" not in state:
            bar.start()
            state["task"] = bar.add_task("", total=total)
        bar.update(state["task"], completed=done, description=f"{rate:.2f} images/s" if rate else "")

    def close() -> None:
        if "task" in state:
            bar.stop()

    update.close = close
    return update


def _launch_distributed(argv: List[str], out: Path, workers: int, master_port: Optional[int]) -> None:
    from geocli.models.delf.pipeline import PARTS_SUFFIX
    from geocli.runtime import launch

    port = master_port or launch.find_free_port()
    log_dir = out.parent / (out.name + PARTS_SUFFIX) / "msrun"
    cmd = launch.msrun_command([sys.executable, "-m", "geocli.models.delf.commands", *argv], workers=workers,
                               master_port=port, log_dir=log_dir)
    launch.run_msrun(cmd, log_dir)


@retrieve_app.command("extract")
def extract_cmd(
    images: Annotated[Path, typer.Option("--images", "-i", show_default=False,
                                         help="Folder of images (recursive) or a text file listing them.")],
    out: Annotated[Path, typer.Option("--out", "-o", show_default=False, help="HDF5 feature file to write/extend.")],
    checkpoint: CheckpointOpt = None,
    pca: PcaOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="graph (compiled once per input shape, fast) or pynative "
                                      "(no compilation: quicker for a handful of images).")] = "graph",
    engine: EngineOpt = "mindspore",
    overwrite: OverwriteOpt = False,
    distributed: Annotated[bool, typer.Option("--distributed", help="Shard the images over msrun workers; "
                                              "each writes <out>.parts/rank<r>.h5, merged into --out.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Workers with --distributed.")] = 2,
    master_port: Annotated[Optional[int], typer.Option("--master-port", show_default=False,
                                                       help="msrun scheduler port (default: a free one).")] = None,
) -> None:
    """Extract DELF local features (7-scale pyramid, attention >= 100, top 1,000, PCA 40) into an HDF5 file.

    Incremental: images already in --out are skipped, so an interrupted run continues.

    Examples:

      geoloc retrieve delf extract --images data/oxford5k/jpg --checkpoint CKPT --pca pca/ --out oxford.h5

      geoloc retrieve delf extract --images list.txt --checkpoint CKPT --out raw.h5 --distributed --workers 4

      geoloc retrieve delf extract --images photos/ --checkpoint CKPT --out raw.h5 --engine onnxruntime
    """
    from geocli.models.delf import pipeline
    from geocli.runtime.launch import worker_env_rank

    overrides = _overrides(set_, None)
    if distributed and worker_env_rank() is None:
        argv = ["extract", "--images", str(Path(images).resolve()), "--out", str(Path(out).resolve())]
        for flag, value in (("--checkpoint", checkpoint), ("--pca", pca), ("--preset", preset), ("--device", device)):
            if value is not None:
                argv += [flag, str(Path(value).resolve()) if isinstance(value, Path) else str(value)]
        for item in overrides:
            argv += ["--set", item]
        argv += ["--mode", mode, "--engine", engine]
        if overwrite:
            argv.append("--overwrite")
        _launch_distributed(argv + ["--distributed"], Path(out), workers, master_port)
        copied = pipeline.merge_parts(Path(out))
        _console().print(f"merged {copied} new images from {workers} ranks into {out}")
        return
    progress = _progress_bar("extract")
    try:
        summary = pipeline.extract(images, out, checkpoint=checkpoint, pca=pca, preset=preset, overrides=overrides,
                                   device=device, overwrite=overwrite, progress=progress,
                                   distributed=None if distributed else False, mode=mode, engine=engine)
    finally:
        progress.close()
    con = _console()
    if summary["rank"] == 0:
        con.print(f"extracted {summary['extracted']} images ({summary['skipped']} already there), "
                  f"{summary['features']} features, {summary['images_per_second']} images/s, "
                  f"{summary['graphs']} input shapes -> {summary['out']}")
        if "warning" in summary:
            _console(stderr=True).print(f"warning: {summary['warning']}")


@retrieve_app.command("fit-pca")
def fit_pca_cmd(
    features: Annotated[Path, typer.Option("--features", "-f", show_default=False,
                                           help="Feature file extracted WITHOUT --pca (1024-d descriptors).")],
    out: Annotated[Path, typer.Option("--out", "-o", show_default=False, help="Folder for the PCA files.")],
    max_descriptors: Annotated[int, typer.Option("--max-descriptors", help="Random sample size.")] = 1_000_000,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit the 1024 -> 40 descriptor PCA; writes mean.npy, pca_proj_mat.npy, pca_variances.npy (the port's files).

    Examples:

      geoloc retrieve delf fit-pca --features raw.h5 --out pca/
    """
    from geocli.models.delf import pipeline

    summary = pipeline.fit_pca(features, out, max_descriptors=max_descriptors, overwrite=overwrite)
    _console().print(f"PCA of {summary['descriptors']} descriptors from {summary['images']} images: the first 40 "
                     f"axes hold {100 * summary['variance_in_40']:.1f} % of the variance -> {summary['out']}")


@retrieve_app.command("index")
def index_cmd(
    features: Annotated[Path, typer.Option("--features", "-f", show_default=False, help="Database feature file.")],
    out: Annotated[Path, typer.Option("--out", "-o", show_default=False, help="Index folder to write.")],
    preset: PresetOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Index every database descriptor (exact search below 200k descriptors, faiss IVF-PQ with exact
    re-ranking above; --set retrieve.ann=ivf for IVF-Flat).

    Examples:

      geoloc retrieve delf index --features db.h5 --out db-index/

      geoloc retrieve delf index --features db.h5 --out db-index/ --set retrieve.ann=ivf
    """
    from geocli.models.delf import pipeline

    info = pipeline.build_index(features, out, preset=preset, overrides=set_ or [], overwrite=overwrite)
    _console().print(f"indexed {info['descriptors']} descriptors of {info['images']} images ({info['ann']}, "
                     f"{info['dim']}-d) in {info['seconds']} s -> {out}")


@retrieve_app.command("query")
def query_cmd(
    index: Annotated[Path, typer.Option("--index", show_default=False, help="Index folder (`index`).")],
    images: Annotated[Optional[List[Path]], typer.Argument(show_default=False,
                                                           help="Query images, folders or list files.")] = None,
    features: Annotated[Optional[Path], typer.Option("--features", "-f", show_default=False,
                                                     help="Query feature file instead of images.")] = None,
    checkpoint: CheckpointOpt = None,
    pca: PcaOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", show_default=False,
                                                help="Folder for results.csv / results.json "
                                                     "(default runs/delf-query-<time>).")] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="Results per query.")] = 100,
    verify: Annotated[str, typer.Option("--verify", help="Images verified with RANSAC per query, or 'all' "
                                        "(the port's exhaustive verification).")] = "100",
    preset: PresetOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    engine: EngineOpt = "mindspore",
) -> None:
    """Rank the indexed images for each query: k-NN votes, RANSAC of the short list, score = inliers.

    Examples:

      geoloc retrieve delf query q.jpg --checkpoint CKPT --pca pca/ --index db-index/ --top 20

      geoloc retrieve delf query --features queries.h5 --index db-index/ --verify all
    """
    from rich.table import Table

    from geocli import runs
    from geocli.models.delf import pipeline

    out = out or runs.new_run_dir("delf", "query")
    result = pipeline.query(index, features=features, images=pipeline.image_inputs(images or []), out=out,
                            checkpoint=checkpoint, preset=preset, overrides=_overrides(set_, pca), device=device,
                            top=top, verify=verify, engine=engine)
    table = Table(title=f"DELF retrieval ({result['queries']} queries, top {min(top, 10)} shown)")
    for column in ("query", "rank", "image", "inliers", "votes"):
        table.add_column(column, justify="right" if column in ("rank", "inliers", "votes") else "left")
    for row in result["rows"]:
        if row["rank"] <= 10:
            table.add_row(row["query"], str(row["rank"]), row["image"], str(row["inliers"]), str(row["votes"]))
    con = _console()
    con.print(table)
    con.print(f"results: {result['csv']} and {result['json']}")


def _main() -> None:
    """``python -m geocli.models.delf.commands``: how msrun workers run ``extract --distributed``."""
    from geocli.cli._common import make_app

    app = make_app("delf-retrieve", "DELF retrieval steps (worker entry point).", root=True)
    app.add_typer(retrieve_app, name="delf")
    app(args=["delf", *sys.argv[1:]], prog_name="geoloc retrieve")


if __name__ == "__main__":
    _main()

"""``geoloc train / eval / export / retrieve / match MODEL``: the generic command of each task.

Each function here takes the model name first; :mod:`geocli.cli.plugins` turns it into one command per
registered model (``geoloc train posenet``), adding that model's presets and declared flags, unless the
model brings its own sub-commands for the task. In docstrings, MODEL and PRESET are filled in per model.
Each command parses, calls one :mod:`geocli.api` function and renders its result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from geocli.cli._common import State, console, print_config_and_exit, resolve_config
from geocli.cli.options import (CheckpointOpt, ConfigOpt, DataOpt, DeviceOpt, EngineOpt, FormatOpt, ModeOpt,
                                OutputOpt, OverwriteOpt, PresetOpt, PrintConfigOpt, SeedOpt, SetOpt, ThreadsOpt,
                                ConvOpt,
                                TopOpt)
from geocli.errors import UsageError


def metrics_table(title: str, metrics: dict):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def _progress_printer():
    """A Rich progress bar for the training loop (rank 0, not under -q)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                        TimeRemainingColumn(), console=console(stderr=True), transient=False)
    state = {}

    def update(step, total, losses):
        if "task" not in state:
            progress.start()
            state["task"] = progress.add_task("", total=total, completed=step - 1)
        desc = " ".join(f"{k}={v:.4g}" for k, v in losses.items())
        progress.update(state["task"], completed=step, description=desc)
        if step >= total:
            progress.stop()

    return update


def train(
    model: str,
    preset: PresetOpt = "default",
    data: DataOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutputOpt = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue a run: 'auto' (newest run of this "
                      "model/preset, or --out) or a checkpoint/run folder. Restores optimizer state and step.",
                                                  show_default=False)] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Initialise the network from a checkpoint "
                       "(geoloc's or the ModelZoo port's); training starts at step 0.", show_default=False)] = None,
    device: DeviceOpt = None,
    mode: ModeOpt = "graph",
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    conv: ConvOpt = None,
    distributed: Annotated[bool, typer.Option("--distributed", help="Data-parallel training launched through "
                                              "MindSpore's msrun (or --rank-table on Ascend).")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Processes per node with --distributed.")] = 2,
    nodes: Annotated[int, typer.Option("--nodes", help="Number of nodes (multi-node msrun).")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This node's index (multi-node).")] = 0,
    master_addr: Annotated[str, typer.Option("--master-addr", help="Address of node 0.")] = "127.0.0.1",
    master_port: Annotated[Optional[int], typer.Option("--master-port", help="Port of the msrun scheduler "
                                                       "(default: a free port).", show_default=False)] = None,
    rank_table: Annotated[Optional[Path], typer.Option("--rank-table", help="HCCL rank table JSON: launch one "
                          "process per device of this server the Ascend way.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the launch command and exit.")] = False,
    print_config: PrintConfigOpt = False,
) -> None:
    """Train MODEL; writes runs/MODEL-<preset>-<time>/ with config.yaml, logs/ and checkpoints/.

    Examples:

      geoloc train MODEL --data DIR --preset PRESET

      geoloc train MODEL --data DIR --set train.steps=2000 --set optim.lr=1e-4

      geoloc train MODEL --data DIR --distributed --workers 2

      geoloc train MODEL --resume auto
    """
    spec, cfg = resolve_config(model, preset, config, set_)
    if print_config:
        print_config_and_exit(cfg)
    choose_conv(conv, device, build=not dry_run)  # before a launch: msrun's workers inherit the choice
    if distributed or rank_table is not None or dry_run:
        from geocli.cli import launch_train

        launch_train.launch(spec.name, locals())
        return
    update = _progress_printer() if State.verbosity >= 0 else None
    from geocli import api

    result = api.train(spec.name, preset=preset, config_file=config, overrides=set_ or [], data=data, out=out,
                       device=device, mode=mode, seed=seed, threads=threads, resume=resume, weights=weights,
                       quiet=State.verbosity < 0, progress=update)
    out_console = console()
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    out_console.print(f"trained {result.step} steps in {result.seconds:.1f} s "
                      f"({result.samples_per_second:.1f} samples/s); {losses}")
    if result.last_checkpoint:
        out_console.print(f"checkpoint: {result.last_checkpoint}")


def evaluate(
    model: str,
    checkpoint: CheckpointOpt = None,
    data: DataOpt = None,
    out: OutputOpt = None,
    preset: PresetOpt = "default",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    mode: ModeOpt = "graph",
    threads: ThreadsOpt = None,
    engine: EngineOpt = "mindspore",
    conv: ConvOpt = None,
) -> None:
    """Evaluate a MODEL checkpoint with the model's published protocol; writes metrics.json.

    Examples:

      geoloc eval MODEL --data DIR --checkpoint runs/MODEL-PRESET-<time>/checkpoints/last.ckpt

      geoloc eval MODEL --data DIR --checkpoint CKPT --engine onnxruntime
    """
    if checkpoint is None:
        raise UsageError("--checkpoint is required: give a checkpoint written by `geoloc train` "
                         "(or the ModelZoo port's)")
    from geocli import api

    choose_conv(conv, device)
    metrics, out_dir = api.evaluate(model, checkpoint, data=data, out=out, preset=preset, config_file=config,
                                    overrides=set_ or [], device=device, mode=mode, threads=threads,
                                    quiet=State.verbosity < 0, engine=engine)
    con = console()
    con.print(metrics_table(f"{model} evaluation", metrics))
    con.print(f"metrics: {out_dir / 'metrics.json'}")


def export(
    model: str,
    checkpoint: CheckpointOpt = None,
    fmt: FormatOpt = "mindir",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (suffix added).",
                                                show_default=False)] = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip reloading the export to compare outputs.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a trained MODEL network for deployment and check the exported graph against it.

    Examples:

      geoloc export MODEL --checkpoint runs/.../checkpoints/last.ckpt --format onnx

      geoloc export MODEL --checkpoint CKPT --format mindir --out deploy/MODEL
    """
    from geocli.export import export as do_export

    results = do_export(model, checkpoint, fmt, out=out, overrides=set_ or [], device=device,
                        check=not no_check, overwrite=overwrite)
    con = console()
    for result in results:
        con.print(f"wrote {result.path}")
        if result.max_abs_diff is not None:
            con.print(f"reloaded export vs network: max abs difference {result.max_abs_diff:.3g}")
        elif result.note:
            con.print(f"parity check: {result.note}")


def choose_conv(conv: Optional[str], device: Optional[str] = None, build: bool = True) -> None:
    """``--conv``: which CPU convolution kernels this process (and its msrun workers) run; without the
    flag, ``GEOLOC_CONV`` or auto.

    When the choice runs the blocked op on CPU and it is not built yet, it is compiled here, once, under a
    spinner (before an msrun launch too, so the workers do not all compile it at the same moment). Under
    ``auto`` a failure is one yellow line, and the run goes on with MindSpore's convolution."""
    from geocli.runtime import blocked_conv

    if conv is not None:
        blocked_conv.choose(conv)
    choice = blocked_conv.chosen()  # a bad GEOLOC_CONV fails here, before any work
    if not build or (device is not None and device.lower() != "cpu") or not blocked_conv.needs_build(choice):
        return
    con = console(stderr=True)
    con.quiet = State.verbosity < 0  # -q: no spinner, no note
    try:
        with con.status("compiling the blocked convolutions (once, a few seconds)"):
            blocked_conv.build()
    except blocked_conv.Unbuildable as exc:
        if choice == "blocked":
            raise
        con.print(f"[yellow]note:[/] convolutions on MindSpore's CPU kernel: {exc} (recorded; `geoloc env` "
                  "shows it, --conv blocked tries again)")


InputsArg = Annotated[List[Path], typer.Argument(help="Image files (or a folder, where the model allows it).",
                                                 show_default=False)]


def _infer(task: str, model: str, inputs: List[Path], checkpoint, out, set_, device, mode, threads, options,
           engine: str = "mindspore", conv: Optional[str] = None):
    from geocli import api

    choose_conv(conv, device)
    for path in inputs:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file or folder")
    result, out_dir = api.infer(task, model, inputs, checkpoint, out=out, overrides=set_ or [], device=device,
                                mode=mode, threads=threads, quiet=State.verbosity < 0, engine=engine, **options)
    con = console()
    rows = result.get("rows") if isinstance(result, dict) else None
    if rows:
        from rich.table import Table

        table = Table(title=f"{model} {task}")
        for col in rows[0]:
            table.add_column(str(col))
        for row in rows:
            table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
        con.print(table)
    else:
        con.print(json.dumps(result, indent=2, default=str))
    con.print(f"results: {out_dir}")


def retrieve(model: str, inputs: InputsArg, checkpoint: CheckpointOpt = None, out: OutputOpt = None,
             top: TopOpt = 10, set_: SetOpt = None, device: DeviceOpt = None, mode: ModeOpt = "graph",
             threads: ThreadsOpt = None, engine: EngineOpt = "mindspore", conv: ConvOpt = None) -> None:
    """Run MODEL's inference on images: rank a gallery (retrieval models) or predict (PoseNet: pose).

    Examples:

      geoloc retrieve MODEL photo1.png photo2.png --checkpoint runs/.../checkpoints/last.ckpt

      geoloc retrieve MODEL photos/ --checkpoint CKPT --top 5 --engine onnxruntime
    """
    _infer("retrieve", model, inputs, checkpoint, out, set_, device, mode, threads, {"top_k": top}, engine, conv)


def match(model: str, inputs: InputsArg, checkpoint: CheckpointOpt = None, out: OutputOpt = None,
          set_: SetOpt = None, device: DeviceOpt = None, mode: ModeOpt = "graph",
          threads: ThreadsOpt = None, engine: EngineOpt = "mindspore", conv: ConvOpt = None) -> None:
    """Match an image pair with MODEL (e.g. optical/SAR patches with SDNet, local features with DELF).

    Examples:

      geoloc match MODEL image1.png image2.png --checkpoint runs/.../checkpoints/last.ckpt

      geoloc match delf image1.jpg image2.jpg --checkpoint CKPT --engine onnxruntime
    """
    _infer("match", model, inputs, checkpoint, out, set_, device, mode, threads, {}, engine, conv)


#: task -> generic command function (model name first); see geocli.cli.plugins.model_command.
GENERIC = {"train": train, "eval": evaluate, "export": export, "retrieve": retrieve, "match": match}

#: task -> the task group's help (its commands are the models that support the task).
GROUP_HELP = {
    "train": ("Train a model; each model has its own options (geoloc train MODEL --help).",
              "geoloc train posenet --data data/KingsCollege --preset kingscollege",
              "geoloc train posenet --data data/KingsCollege --distributed --workers 2"),
    "eval": ("Evaluate a checkpoint with the model's published protocol; writes metrics.json.",
             "geoloc eval posenet --data data/KingsCollege --checkpoint runs/posenet-demo-*/checkpoints/last.ckpt",
             "geoloc eval MODEL --dataset NAME --checkpoint CKPT --engine onnxruntime"),
    "export": ("Export a trained network (MINDIR, ONNX, AIR) and check it against the network.",
               "geoloc export posenet --checkpoint CKPT --format onnx"),
    "retrieve": ("Inference at scale: rank galleries, build and query indexes, predict poses.",
                 "geoloc retrieve posenet photo.png --checkpoint CKPT",
                 "geoloc retrieve MODEL --help    # a model's own steps (extract, index, query, ...)"),
    "match": ("Match image pairs: local features, optical/SAR patches.",
              "geoloc match MODEL image1.png image2.png --checkpoint CKPT"),
}


def group_help(task: str) -> str:
    summary, *examples = GROUP_HELP[task]
    return summary + "\n\nExamples:\n\n" + "\n\n".join(f"  {e}" for e in examples)


def register(app: typer.Typer) -> None:
    """Add one registry-driven group per task to the root app."""
    from geocli.cli._common import make_app
    from geocli.cli.plugins import ModelGroup

    for task in GENERIC:
        app.add_typer(make_app(task, group_help(task), cls=ModelGroup), name=task)

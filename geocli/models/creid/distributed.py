"""``geoloc retrieve creid ... --distributed true [--workers N]``: embed a gallery over msrun ranks.

The parent process (the one the user started) lists the gallery images not yet in the HDF5 feature
store and writes a job file beside the store (``<store>.parts/job.json``: the resolved config, the
checkpoint, the engine and the images to embed). It launches ``python -m geocli.models.creid.distributed
JOB`` under msrun (the shared launcher, :mod:`geocli.runtime.launch`); each rank embeds every
``size``-th image of the list into ``<store>.parts/rank<r>.h5`` (the same incremental store writer as a
single process, so a killed rank resumes its shard on the next run), and when msrun has returned the
parent merges the shards into the store in the gallery's order and removes the shards (the logs stay in ``<store>.parts/``).
Evaluation-mode BatchNorm makes every image's feature independent of its batch, so the merged store
equals single-process embedding to float rounding (tests/test_creid_distributed.py checks it).

The merge runs in the launching process after every rank has finished, rather than in rank 0 behind a
barrier: it then also runs when msrun reports a rank failure late, and needs no collective operation.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from geocli.errors import DataError

#: Per-rank stores of a distributed embedding: ``<store>.parts/rank<r>.h5``.
PARTS_SUFFIX = ".parts"


def parts_dir(store: Path) -> Path:
    return Path(store).parent / (Path(store).name + PARTS_SUFFIX)


def shard(n: int, rank: int, size: int) -> List[int]:
    """Indices rank ``rank`` of ``size`` embeds: every size-th one (shard sizes differ by at most one)."""
    return list(range(rank, n, size))


def pending(store: Path, names: Sequence[str], attrs: Dict[str, object]) -> List[int]:
    """Indices of ``names`` not yet in ``store`` (created when missing)."""
    from geocli.retrieval.store import FeatureStore

    with FeatureStore(store, "a", attrs=attrs) as fs:  # refuses a store of another checkpoint, as embedding does
        return [i for i, n in enumerate(names) if n not in fs]


def embed_distributed(store: Path, names: Sequence[str], paths: Sequence[Path], pids: Sequence[int],
                      cams: Sequence[int], attrs: Dict[str, object], cfg: Dict[str, Any], ctx, workers: int,
                      launch: Optional[Callable[[List[str], Path], None]] = None):
    """Embed the images of ``names`` missing from ``store`` over ``workers`` msrun ranks and merge them in;
    returns (embedded now, already there). ``launch(argv, log_dir)`` replaces msrun (tests)."""
    from geocli import config

    if workers < 1:
        raise DataError(f"--workers {workers}: give at least 1")
    todo = pending(store, names, attrs)
    if not todo:
        return 0, len(names)
    work = parts_dir(store)
    if work.exists():
        shutil.rmtree(work)  # shards of an earlier run: its images are re-listed from the store anyway
    work.mkdir(parents=True)
    config.save(cfg, work / "config.yaml")
    checkpoint = getattr(ctx, "checkpoint", None)
    job = {"config": str(work / "config.yaml"), "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
           "engine": getattr(ctx, "engine", "mindspore"), "mode": getattr(ctx, "mode", "graph"), "attrs": attrs,
           "items": [[names[i], str(paths[i]), int(pids[i]), int(cams[i])] for i in todo]}
    (work / "job.json").write_text(json.dumps(job) + "\n", encoding="utf-8")
    argv = [sys.executable, "-m", "geocli.models.creid.distributed", str(work / "job.json")]
    (launch or _msrun)(argv, work / "msrun", workers)
    merged = merge_parts(store, work, [names[i] for i in todo], attrs, workers)
    if merged != len(todo):
        raise DataError(f"{work}: the {workers} ranks embedded {merged} of {len(todo)} images")
    for leftover in [*work.glob("rank*.h5"), work / "job.json", work / "config.yaml"]:
        leftover.unlink(missing_ok=True)  # the msrun and rank logs stay, for the record
    return len(todo), len(names) - len(todo)


def _msrun(argv: List[str], log_dir: Path, workers: int) -> None:
    from geocli.runtime import launch

    cmd = launch.msrun_command(argv, workers=workers, master_port=launch.find_free_port(), log_dir=log_dir,
                               cluster_timeout=60)
    launch.run_msrun(cmd, log_dir)


def merge_parts(store: Path, work: Path, order: Sequence[str], attrs: Dict[str, object], workers: int) -> int:
    """Copy the ranks' features into ``store`` in ``order`` (the gallery's order); returns images copied."""
    from geocli.retrieval.store import FeatureStore

    parts = [work / f"rank{r}.h5" for r in range(workers)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise DataError(f"{work}: no features from {', '.join(missing)}; see the logs in {work / 'msrun'}")
    sources = [FeatureStore(p, "r") for p in parts]
    copied = 0
    try:
        owner = {}
        for source in sources:
            for name in source.names():
                owner[name] = source
        with FeatureStore(store, "a", attrs=attrs) as target:
            for name in order:
                if name in owner and name not in target:
                    copied += int(target.write(name, owner[name].read(name)))
    finally:
        for source in sources:
            source.close()
    return copied


def run_worker(job_path: Path) -> Dict[str, Any]:
    """One msrun rank: embed its shard of the job into ``rank<r>.h5`` beside the job file."""
    from geocli import api
    from geocli.models.creid.backend import embed
    from geocli.models.creid.features import embed_into_store
    from geocli.runtime import engine as engines

    job_path = Path(job_path)
    job = json.loads(job_path.read_text(encoding="utf-8"))
    work = job_path.parent
    ctx = api._context(work / "ranks", None, job["mode"], 0, None, quiet=True, distributed=None)
    loaded = api.load_model("creid", Path(job["checkpoint"]) if job["checkpoint"] else None,
                            config_file=Path(job["config"]), task="retrieve")
    ctx.engine = engines.require(loaded.backend, job["engine"], "retrieve")
    ctx.checkpoint = job["checkpoint"]
    items = [job["items"][i] for i in shard(len(job["items"]), ctx.rank, ctx.group_size)]
    cfg = loaded.cfg
    names, paths, pids, cams = ([it[c] for it in items] for c in range(4))
    paths = [Path(p) for p in paths]
    new, _ = embed_into_store(work / f"rank{ctx.rank}.h5", names, paths, pids, cams,
                              lambda ps: embed(loaded.network, ps, cfg, ctx, f"gallery (rank {ctx.rank})"),
                              job["attrs"], chunk=int(cfg["retrieve"]["batch_images"]))
    ctx.log.info(f"creid rank {ctx.rank}/{ctx.group_size}: embedded {new} of {len(job['items'])} images")
    ctx.log.close()
    return {"rank": ctx.rank, "embedded": new}


if __name__ == "__main__":
    run_worker(Path(sys.argv[1]))

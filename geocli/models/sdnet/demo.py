"""``geoloc demo sdnet``: synthesise optical/SAR scenes in the SEN1-2 layout, prepare them with the real
npz-prep step, measure the untrained network, train briefly, evaluate FPR95 again, and register a fresh
optical/SAR image pair whose SAR image was warped by a known transform (the picture ends the demo).

The demo owns its data folder (``raw/`` and ``npz/`` under it) and rebuilds it when its spec changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

import cv2
import numpy as np

from geocli.data.synth import sen12 as synth

#: Demo scenes: 4 seasons x 5 scenes x 8 patches of 128 px (SEN1-2's are 256 px; smaller keeps prep fast).
DEMO_SPEC = synth.SynthSpec(seasons=4, scenes=5, patches=8, size=128, seed=0)
#: The known transform of the registration example: SAR is rotated 4 degrees about the centre and shifted.
DEMO_ROTATION_DEG, DEMO_SHIFT = 4.0, (7.0, -5.0)


def prepare(data_dir: Path, cfg: Dict[str, Any], spec: synth.SynthSpec = DEMO_SPEC) -> Dict[str, Any]:
    """Synthesise (if missing) and npz-prep (if its settings changed) the demo set; returns prep's summary."""
    from geocli.data.sen12_npz import prepare as npz_prep

    raw, npz = Path(data_dir) / "raw", Path(data_dir) / "npz"
    synth.generate(raw, spec=spec, overwrite=True)
    done = npz / "prep.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        if summary.get("prep") == dict(cfg["prep"]) and summary.get("seed") == cfg["seed"]:
            return summary
    return npz_prep(raw, npz, dict(cfg["prep"]), seed=int(cfg["seed"]), overwrite=True)


def warped_pair(size: int = 192, seed: int = 0):
    """(optical gray, SAR gray warped, 3x3 truth mapping warped-SAR pixels to optical pixels)."""
    optical, sar = synth.registration_pair(size, seed)
    a = cv2.getRotationMatrix2D((size / 2, size / 2), DEMO_ROTATION_DEG, 1.0)
    a[:, 2] += DEMO_SHIFT
    warped = cv2.warpAffine(sar, a, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    forward = np.vstack([a, [0, 0, 1]])
    gray = cv2.cvtColor(optical, cv2.COLOR_RGB2GRAY)
    return gray, warped, np.linalg.inv(forward)


def distance_histogram(distances: np.ndarray, labels: np.ndarray, path: Path, width: int = 480,
                       height: int = 200, bins: int = 40) -> Path:
    """A picture of the descriptor distances of matches (green) and non-matches (red)."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    edges = np.linspace(0.0, max(float(distances.max()), 1e-6), bins + 1)
    pos, _ = np.histogram(distances[labels == 1], edges)
    neg, _ = np.histogram(distances[labels == 0], edges)
    top = max(pos.max(initial=1), neg.max(initial=1))
    bw = width / bins
    for i in range(bins):
        for counts, colour, offset in ((neg, (60, 60, 220), 0.0), (pos, (60, 170, 60), 0.5)):
            h = int((height - 24) * counts[i] / top)
            x0 = int(i * bw + offset * bw)
            cv2.rectangle(canvas, (x0, height - 12 - h), (int(x0 + bw / 2), height - 12), colour, -1)
    cv2.putText(canvas, f"L2 distance 0..{edges[-1]:.2f}: matches green, non-matches red", (4, 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)
    return Path(path)


def register_example(network, cfg: Dict[str, Any], out: Path) -> Dict[str, Any]:
    """Register the demo's warped pair and compare with the known transform; writes the picture."""
    from geocli.models.sdnet import register as reg
    from geocli.models.sdnet.backend import descriptor_fn

    optical, sar, truth = warped_pair()
    result = reg.register(descriptor_fn(network, cfg, "optical"), descriptor_fn(network, cfg, "sar"), optical, sar,
                          cfg["match"], batch=int(cfg["eval"]["batch_size"]))
    cv2.imwrite(str(out), reg.picture(optical, sar, result))
    error = reg.reprojection_error(result.transform, truth, optical.shape) if result.transform is not None else None
    return {"inliers": result.inliers, "matches": result.matches, "error_px": error, "picture": str(out)}


def run_demo(backend, data_dir: Path, out_dir: Path, ctx, *, runner: Optional[Callable] = None,
             preset: str = "demo", overrides: Iterable[str] = (), spec: synth.SynthSpec = DEMO_SPEC) -> Dict[str, Any]:
    """Returns FPR95 before and after training, the port's accuracy, and the registration figures."""
    from geocli import config
    from geocli.demo import train_demo_plan
    from geocli.api import write_metrics
    from geocli.data.sen12_npz import open_pairs
    from geocli.models.sdnet.backend import pair_distances, patch_metrics
    from geocli.nets.copies import inference_copy
    from geocli.runtime.runlog import default_logger

    log = default_logger(ctx.log)
    cfg = config.resolve("sdnet", preset, None, list(overrides))
    summary = prepare(data_dir, cfg, spec)
    npz = Path(data_dir) / "npz"
    log.info(f"sdnet demo: {summary['train_rows']} train / {summary['test_rows']} test pairs in {npz}")
    test = open_pairs(npz / "test.npz")
    untrained = patch_metrics(pair_distances(backend.build_network(cfg), test, 256), test.labels)
    plan = backend.train_plan(cfg, npz, ctx)
    result = train_demo_plan("sdnet", preset, cfg, plan, npz, ctx, runner)
    network = inference_copy(lambda: backend.build_network(cfg), plan.network)
    out_dir = Path(out_dir)
    metrics = backend.evaluate(cfg, npz, network, out_dir / "eval", ctx)
    metrics["fpr95_untrained"] = untrained["fpr95"]
    write_metrics(out_dir / "eval", "sdnet", metrics, data=npz)
    registration = register_example(network, cfg, out_dir / "registration.png")
    log.info(f"sdnet demo: registration picture {registration['picture']}")
    return {
        "fpr95": metrics["fpr95"], "fpr95_untrained": untrained["fpr95"], "accuracy": metrics["accuracy"],
        "registration_inliers": registration["inliers"],
        "registration_error_px": registration["error_px"] if registration["error_px"] is not None else "failed",
        "picture": registration["picture"], "steps": getattr(result, "step", plan.steps),
    }

"""``geoloc demo delf``: synthetic landmarks -> both training stages -> extract -> index -> query -> mAP.

1. render the synthetic GLDv2 set (:mod:`geocli.data.synth.gldv2`) and convert it to MindRecord;
2. train the ``tuning`` stage, then the ``attn`` stage from it (the ``demo`` preset, fewer steps);
3. render the retrieval benchmark (:mod:`geocli.data.synth.landmarks_retrieval`): the same buildings
   from new viewpoints plus distractors, in the Oxford5k layout;
4. evaluate it like ``geoloc eval delf --dataset oxford5k`` with the trained network, with the untrained
   network, and against a random ranking (the two baselines a trained model must beat);
5. draw the matches between two views of one building (``match.png``).

Settings that differ from the full-size defaults (measured reasons in ``configs/delf/demo.yaml`` and
docs/delf.md, "Demo"): images are ~96 px, so one 192x192 canvas (``pad: port``: a single compiled
graph), scales 0.71-2, no score threshold but only the ``DEMO_FEATURES`` best-scored cells per image
(a briefly trained attention does not reach the port's threshold of 100, yet its ranking of cells is
what separates building from sky and pavement), 30 neighbours per descriptor, a RANSAC residual of
16 px (the feature cells are 16-45 px apart here) and every candidate verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

#: Overrides of the demo's extraction and retrieval (see the module docstring).
DEMO_FEATURES = 20
DEMO_EVAL = ["extract.scales=[0.7071,1.0,1.4142,2.0]", "extract.pad=port", "extract.port_canvas=192",
             "extract.score_threshold=0.0", f"extract.max_features={DEMO_FEATURES}", "eval.pca_images=30",
             "retrieve.knn=30", "retrieve.residual=16.0", "retrieve.verify=all"]
#: Steps of each stage (the ``demo`` preset holds the other training settings).
DEMO_STEPS = {"tuning": 160, "attn": 60}
#: The synthetic training set and retrieval benchmark of the demo.
DEMO_GLD = dict(landmarks=6, views=30, distractors=6, missing=2, size=96)
DEMO_RETRIEVAL = dict(views=8, queries=4, distractors=12)


def random_map(evalset, trials: int = 20, seed: int = 0) -> float:
    """Mean AP (percent) of random rankings under the original protocol: the floor to beat."""
    from geocli.models.delf.protocol import original_scores

    rng = np.random.default_rng(seed)
    n = len(evalset.db_names)
    return float(np.mean([original_scores(evalset, [rng.permutation(n) for _ in evalset.queries])[0]
                          for _ in range(trials)]))


def run_demo(backend, data_dir: Path, out_dir: Path, ctx, *, train_overrides: Optional[List[str]] = None,
             eval_overrides: Optional[List[str]] = None, gld_spec=None, retrieval_spec=None,
             steps: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """Run the demo; ``train_overrides`` are added to both stages' ``--set`` options, ``steps`` maps a
    stage to its step count (default :data:`DEMO_STEPS`)."""
    from geocli import api
    from geocli.data import gldv2_mindrecord
    from geocli.data.synth import gldv2 as synth
    from geocli.data.synth.landmarks_retrieval import RetrievalSpec, synthesize_retrieval
    from geocli.models.delf import extract as ex
    from geocli.models.delf.protocol import load_eval_set
    from geocli.models.delf.tasks import make_extractor
    from geocli.models.delf.verify import draw_matches, match_features
    from geocli.runtime.runlog import default_logger

    log = default_logger(getattr(ctx, "log", None))
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    gld_spec = gld_spec or synth.GldSynthSpec(**DEMO_GLD)
    retrieval_spec = retrieval_spec or RetrievalSpec(landmarks=gld_spec.landmarks, size=gld_spec.size,
                                                     seed=gld_spec.seed, **DEMO_RETRIEVAL)
    gld = data_dir / "gldv2"
    summary = synth.synthesize(gld, gld_spec, overwrite=synth.state(gld, gld_spec) == "other")
    report = gldv2_mindrecord.convert(gld, shards=2, val_split=0.2, overwrite=not summary.get("skipped"))
    log.info(f"delf demo: {summary['images']} synthetic GLDv2 images, {report.classes} landmarks -> {gld / 'mindrecord'}")

    train, steps = list(train_overrides or []), {**DEMO_STEPS, **(steps or {})}

    def stage(name: str) -> List[str]:
        return train + [f"train.stage={name}", f"train.steps={steps[name]}", f"train.eval_every={steps[name]}"]

    tuning = api.train("delf", preset="demo", data=gld / "mindrecord", out=out_dir / "tuning", quiet=True,
                       overrides=stage("tuning"))
    attn = api.train("delf", preset="demo", data=gld / "mindrecord", out=out_dir / "attn", quiet=True,
                     weights=tuning.last_checkpoint, overrides=stage("attn"))
    log.info(f"delf demo: trained tuning {tuning.step} + attn {attn.step} steps -> {attn.last_checkpoint}")

    bench = data_dir / "retrieval"
    synthesize_retrieval(bench, retrieval_spec, overwrite=(bench / "synth_retrieval.json").is_file())
    evalset = load_eval_set("oxford5k", bench)
    overrides = list(DEMO_EVAL if eval_overrides is None else eval_overrides)
    trained, _ = api.evaluate("delf", attn.last_checkpoint, data=bench, out=out_dir / "eval-trained",
                              overrides=overrides, quiet=True)
    untrained, _ = api.evaluate("delf", None, data=bench, out=out_dir / "eval-untrained",
                                preset="demo", overrides=overrides, quiet=True)
    floor = random_map(evalset)

    loaded = api.load_model("delf", attn.last_checkpoint, overrides=overrides)
    extractor, _, _ = make_extractor(loaded.cfg, loaded.network, Path(trained["features_dir"]) / "pca")
    q = evalset.queries[0]
    first, second = evalset.query_paths[q.image], evalset.db_paths[evalset.index_of()[q.good[0]]]
    images = [ex.read_image(first), ex.read_image(second)]
    feats = [extractor.extract(image) for image in images]
    pair = match_features(feats[0].locations, feats[0].descriptors, feats[1].locations, feats[1].descriptors,
                          residual_threshold=16.0)
    picture = draw_matches(images[0], images[1], feats[0].locations, feats[1].locations, pair, out_dir / "match.png")
    figures = {"mAP_trained": trained["mAP"], "mAP_untrained": untrained["mAP"], "mAP_random": round(floor, 2),
               "queries": trained["queries"], "database_images": trained["database_images"],
               "train_steps": int(tuning.step) + int(attn.step), "match_inliers": pair.n_inliers,
               "match_putative": pair.n_putative, "match_picture": str(picture),
               **{f"tuning_{k}": round(float(v), 4) for k, v in (tuning.eval_metrics or {}).items()},
               **{f"attn_{k}": round(float(v), 4) for k, v in (attn.eval_metrics or {}).items()}}
    log.info(f"delf demo: mAP trained {figures['mAP_trained']} / untrained {figures['mAP_untrained']} / "
             f"random {figures['mAP_random']} on {figures['queries']} queries; match {pair.n_inliers} inliers "
             f"of {pair.n_putative} -> {picture}")
    return figures

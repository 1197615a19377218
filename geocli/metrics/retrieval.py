"""Image-retrieval metrics: the Oxford Buildings AP and the revisited Oxford/Paris mAP and mP@k.

Two protocols, kept apart on purpose because they give different numbers for the same ranking:

- :func:`oxford_ap` is the original Oxford5k/Paris6k ``compute_ap.cpp`` (Philbin et al. 2007): names,
  good+ok positives, junk skipped, trapezoids of the precision-recall curve starting at precision 1.
- :func:`revisited_map` is ``compute_map`` of the revisitop code (Radenovic et al., CVPR 2018): integer
  database indices, per-setting ``ok``/``junk`` built by :func:`revisited_gnd`, and mP@k.
- :func:`port_metrics` / :func:`format_port_metrics` are the DELF port's ``ComputeMetrics`` (the same AP,
  plus mean precision *and recall* at k = 10..90) and its ``mAP.txt`` writer.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

#: For each revisited setting: which annotation lists are positives and which are ignored (junk).
REVISITED_SETTINGS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def oxford_ap(ranked_names: Iterable[str], good: Iterable[str], ok: Iterable[str],
              junk: Iterable[str]) -> float:
    """Average precision of one ranked list under the original Oxford Buildings protocol.

    A line-for-line port of ``compute_ap.cpp`` distributed with the Oxford5k ground truth:
    positives are ``set(good) | set(ok)``; an item in ``junk`` is skipped without advancing the rank;
    each remaining item at rank ``j`` (0-based, junk not counted) adds the trapezoid
    ``(recall - old_recall) * (old_precision + precision) / 2`` with ``recall = hits / n_pos`` and
    ``precision = hits / (j + 1)``, starting from recall 0 and precision 1.

    Edge cases:
    - a name listed twice in ``good`` (``all_souls_1_good.txt`` does this) counts once;
    - a name in both ``junk`` and the positives is skipped as junk (the C++ checks junk first) but
      still counts in ``n_pos``, so such a query cannot reach AP 1; the published files have no overlap;
    - positives absent from ``ranked_names`` contribute nothing, so AP < 1; none retrieved gives 0.0;
    - no positives at all gives NaN (0/0 in the C++), which callers must exclude from a mean;
    - a name repeated in ``ranked_names`` counts each time, as in the C++ (a search never does this).
    """
    positives = set(good) | set(ok)
    junk_set = set(junk)
    if not positives:
        return float("nan")
    n_pos = float(len(positives))
    ap, old_recall, old_precision = 0.0, 0.0, 1.0
    hits, rank = 0, 0
    for name in ranked_names:
        if name in junk_set:
            continue
        if name in positives:
            hits += 1
        recall = hits / n_pos
        precision = hits / (rank + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall, old_precision = recall, precision
        rank += 1
    return ap


def revisited_gnd(gnd: Sequence[Mapping[str, Sequence[int]]], setting: str) -> List[dict]:
    """Turns revisited annotations (``easy``/``hard``/``junk`` per query) into ``ok``/``junk`` lists.

    ``easy``: ok = easy, junk = junk + hard; ``medium``: ok = easy + hard, junk = junk;
    ``hard``: ok = hard, junk = junk + easy (as in revisitop's ``example_evaluate.py``). Other keys of
    each query (``bbx``) are not copied. An unknown setting raises ValueError naming the valid ones.
    """
    if setting not in REVISITED_SETTINGS:
        raise ValueError(f"unknown revisited setting {setting!r}; valid: {', '.join(REVISITED_SETTINGS)}")
    ok_keys, junk_keys = REVISITED_SETTINGS[setting]

    def _join(query: Mapping[str, Sequence[int]], keys: Tuple[str, ...]) -> np.ndarray:
        parts = [np.asarray(query.get(key, ()), dtype=np.int64).ravel() for key in keys]
        return np.concatenate(parts)

    return [{"ok": _join(query, ok_keys), "junk": _join(query, junk_keys)} for query in gnd]


def _revisited_ap(positions: np.ndarray, n_positives: int) -> float:
    """``compute_ap`` of revisitop: trapezoids between precision before and at each positive."""
    j = np.arange(positions.size, dtype=np.float64)
    rank = positions.astype(np.float64)
    precision_before = np.divide(j, rank, out=np.ones_like(j), where=rank > 0)
    precision_at = (j + 1.0) / (rank + 1.0)
    return float(np.sum(precision_before + precision_at) / (2.0 * n_positives))


def revisited_map(ranks: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]],
                  kappas: Sequence[int] = (1, 5, 10)
                  ) -> Tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """mAP and mean precision@k under the revisited Oxford/Paris protocol (revisitop ``compute_map``).

    ``ranks`` is ``(n_db, n_query)``: column ``i`` lists 0-based database indices, best first (it may
    be a prefix of the full ranking, e.g. ``topk_search(...).indices.T``). ``gnd[i]`` has ``ok`` and
    optionally ``junk`` index lists (see :func:`revisited_gnd`). Positions of positives are shifted
    down by the number of junk items ranked before them; AP sums ``(p0 + p1) / (2 * len(ok))`` over
    the positives, where ``p1 = (j+1)/(r+1)`` is the precision at the j-th positive's adjusted
    position ``r`` and ``p0 = j/r`` (1 when ``r == 0``).
    mP@k uses ``k' = min(last retrieved positive's 1-based position, k)`` and ``P = #{pos <= k'} / k'``.

    Returns ``(map, aps, mp_at_k, p_at_k)``: ``aps`` per query, ``p_at_k`` is ``(n_query, len(kappas))``.

    Edge cases:
    - a query with an empty ``ok`` list gets NaN in ``aps`` and ``p_at_k`` and is left out of the means;
      when every query is empty the means are NaN;
    - positives missing from ``ranks`` count as not retrieved (they lower AP); if none is retrieved, AP
      and P@k are 0 (the reference crashes on ``max([])`` there);
    - duplicate indices in ``ok`` count once (the reference would divide by the duplicated length;
      the published ground truth has no duplicates, so results match it);
    - an index in both ``ok`` and ``junk`` is a positive that also shifts later positives, exactly as in
      the reference; :func:`revisited_gnd` never produces such overlaps.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(f"ranks must be (n_db, n_query={len(gnd)}), got shape {ranks.shape}")
    kappas = [int(k) for k in kappas]
    n_query = len(gnd)
    aps = np.full(n_query, np.nan)
    p_at_k = np.full((n_query, len(kappas)), np.nan)
    for i, query in enumerate(gnd):
        ok = np.unique(np.asarray(query["ok"], dtype=np.int64))
        if ok.size == 0:
            continue
        junk = np.asarray(query.get("junk", ()), dtype=np.int64)
        column = ranks[:, i]
        positions = np.flatnonzero(np.isin(column, ok))
        junk_positions = np.flatnonzero(np.isin(column, junk))
        positions = positions - np.searchsorted(junk_positions, positions, side="left")
        aps[i] = _revisited_ap(positions, ok.size)
        one_based = positions + 1
        for c, k in enumerate(kappas):
            if one_based.size == 0:
                p_at_k[i, c] = 0.0
                continue
            k_eff = min(int(one_based.max()), k)
            p_at_k[i, c] = np.count_nonzero(one_based <= k_eff) / k_eff
    valid = ~np.isnan(aps)
    if not valid.any():
        return float("nan"), aps, np.full(len(kappas), np.nan), p_at_k
    return float(aps[valid].mean()), aps, p_at_k[valid].mean(axis=0), p_at_k


#: The port's precision/recall ranks: ``range(num_index_images)[10:100:10]`` (DELF ``eval.py``).
PORT_PR_RANKS = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def port_metrics(ranks: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]],
                 pr_ranks: Sequence[int] = PORT_PR_RANKS) -> Dict[str, np.ndarray]:
    """The DELF port's ``ComputeMetrics`` (``src/dataset.py``): mAP, mean precision and recall at k.

    ``ranks`` is ``(n_query, n_db)`` (one full ranking per row, unlike :func:`revisited_map`). AP is
    the same trapezoidal AP on junk-adjusted positions; P@k uses ``min(last positive's 1-based
    position, k)`` and R@k = positives within k / positives. Queries without positives are NaN and
    left out of the means. Returns a dict with ``map``, ``mp``, ``mr`` (means) and ``ap``,
    ``precisions``, ``recalls`` per query.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[0] != len(gnd):
        raise ValueError(f"ranks must be (n_query={len(gnd)}, n_db), got shape {ranks.shape}")
    pr_ranks = [int(k) for k in pr_ranks]
    if pr_ranks and max(pr_ranks) > ranks.shape[1]:
        raise ValueError(f"precision/recall ranks up to {max(pr_ranks)} need at least that many "
                         f"database images, there are {ranks.shape[1]}")
    n_query = len(gnd)
    aps = np.full(n_query, np.nan)
    precisions = np.full((n_query, len(pr_ranks)), np.nan)
    recalls = np.full((n_query, len(pr_ranks)), np.nan)
    for i, query in enumerate(gnd):
        ok = np.asarray(query["ok"], dtype=np.int64)
        if ok.size == 0:
            continue
        junk = np.asarray(query.get("junk", ()), dtype=np.int64)
        positions = np.flatnonzero(np.isin(ranks[i], ok))
        junk_positions = np.flatnonzero(np.isin(ranks[i], junk))
        positions = positions - np.searchsorted(junk_positions, positions, side="left")
        aps[i] = _revisited_ap(positions, positions.size) if positions.size else 0.0
        one_based = positions + 1
        for c, k in enumerate(pr_ranks):
            if one_based.size == 0:
                precisions[i, c] = recalls[i, c] = 0.0
                continue
            recalls[i, c] = np.count_nonzero(one_based <= k) / one_based.size
            k_eff = min(int(one_based.max()), k)
            precisions[i, c] = np.count_nonzero(one_based <= k_eff) / k_eff
    valid = ~np.isnan(aps)
    mean = (lambda a: a[valid].mean(axis=0)) if valid.any() else (lambda a: np.full(a.shape[1:], np.nan))
    return {"map": mean(aps), "mp": mean(precisions), "mr": mean(recalls), "ap": aps,
            "precisions": precisions, "recalls": recalls}


def format_port_metrics(results: Mapping[str, Mapping[str, np.ndarray]],
                        pr_ranks: Sequence[int] = PORT_PR_RANKS) -> str:
    """The text of the port's ``mAP.txt`` (``SaveMetricsFile``): protocols sorted by name, values x 100
    rounded to 2 decimals, NumPy's array printing, e.g.::

        easy
          mAP=91.85
          mP@k[10 20 30 40 50 60 70 80 90] [...]
          mR@k[10 20 30 40 50 60 70 80 90] [...]
    """
    ranks = np.array([int(k) for k in pr_ranks])
    text = []
    for name in sorted(results):
        r = results[name]
        text.append("{}\n  mAP={}\n  mP@k{} {}\n  mR@k{} {}\n".format(
            name, np.around(float(r["map"]) * 100, decimals=2), ranks,
            np.around(np.asarray(r["mp"], dtype=np.float64) * 100, decimals=2), ranks,
            np.around(np.asarray(r["mr"], dtype=np.float64) * 100, decimals=2)))
    return "".join(text)

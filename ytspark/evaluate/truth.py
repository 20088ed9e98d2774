"""What each system's lists are worth by the generator's truth: the ranking stage's objective on generated data.

On a world written by ``ytspark generate`` (its events table has a
``_truth/generate_config.json`` beside it: :func:`ytspark.generate.truth_config`)
every system's top ``k`` for a split is shown, in the evaluation's own terms, at
each user's target time, and :func:`ytspark.generate.true_engagement` gives each
(user, video) pair's true click probability and expected watch seconds. The
metrics: ``true_watch_s@k`` (expected watch seconds of the list, summed over its
k videos, mean over users) and ``true_p_click@k`` (mean click probability of the
listed videos). Next-watch hit rates measure the candidate stage's objective;
these measure the ranker's (expected watch time per impression). Real logs and
MovieLens have no truth: nothing is added.
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import SparkSession

from ytspark import schema as S


def truth_metrics(spark: SparkSession, prepared_dir: str, topk: dict[str, np.ndarray], evalset, k: int = 10
                  ) -> dict[str, dict[str, float]]:
    """System -> {"true_watch_s@k", "true_p_click@k"} of its [B, >= k] lists on ``evalset``; {} without truth."""
    from ytspark.generate import true_engagement, truth_config
    from ytspark.prepared import load_manifest
    from ytspark.rows import read_split
    from ytspark.vocab import Vocab

    events = (load_manifest(spark, prepared_dir).get("inputs") or {}).get("events") or ""
    cfg = truth_config(spark, events) if events else None
    if cfg is None or not len(evalset):
        return {}
    videos = np.array([None, None, *Vocab.load(spark, f"{prepared_dir}/vocab/video.json").values], dtype=object)
    rows = read_split(f"{prepared_dir.rstrip('/')}/candidates/{evalset.split}", [S.USER_ID, S.CAND_LABEL_TS])
    ts = evalset.align(rows[S.USER_ID], np.asarray(rows[S.CAND_LABEL_TS], np.float64))
    out = {}
    for name, lists in topk.items():
        top = np.asarray(lists)[:, :k]
        b, j = np.nonzero(top >= 2)
        tr = true_engagement(cfg, evalset.user_ids[b], videos[top[b, j]], ts[b])
        watch = np.bincount(b, weights=tr["expected_watch_seconds"].to_numpy(), minlength=len(evalset))
        out[name] = {f"true_watch_s@{k}": round(float(watch.mean()), 1),
                     f"true_p_click@{k}": round(float(tr["p_click"].mean()) if len(b) else 0.0, 4)}
    return out


def true_watch_of_rows(spark: SparkSession, prepared_dir: str, rows: dict) -> np.ndarray | None:
    """[N] the generator's expected watch seconds of each ranking row (its user shown its video at its
    impression time; NaN for an out-of-vocabulary video); None without truth (real logs, MovieLens)."""
    from ytspark.generate import true_engagement, truth_config
    from ytspark.prepared import load_manifest
    from ytspark.vocab import Vocab

    events = (load_manifest(spark, prepared_dir).get("inputs") or {}).get("events") or ""
    cfg = truth_config(spark, events) if events else None
    if cfg is None or not len(rows[S.USER_ID]):
        return None
    videos = np.array([None, None, *Vocab.load(spark, f"{prepared_dir}/vocab/video.json").values], dtype=object)
    v = np.asarray(rows[S.RANK_VIDEO])
    known = v >= S.N_SPECIAL  # out-of-vocabulary videos have no id to ask the truth about
    out = np.full(len(v), np.nan)
    tr = true_engagement(cfg, np.asarray(rows[S.USER_ID])[known], videos[v[known]],
                         np.asarray(rows[S.RANK_IMPRESSION_TS], np.float64)[known])
    out[known] = tr["expected_watch_seconds"].to_numpy(np.float64)
    return out

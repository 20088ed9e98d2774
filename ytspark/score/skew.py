"""Train/serve skew check: a training row against the serving row built for the same user, video and time.

For a seeded sample of prepare's ranking rows (logged impressions), the
serving code builds the ranker's inputs as of each impression's own time: the
user's prepared events strictly before it go through
:func:`~ytspark.score.features.serving_events` (impressions included),
:func:`~ytspark.score.features.serving_columns` and
:meth:`~ytspark.score.rank.TorchRanker.features`, exactly as the nightly job
builds them at its cut-off. Every ranking feature is compared with the
training row. Two are different by design and reported as such:
``source_idx`` (a logged impression keeps its own source; serving ranks
retrieved candidates, source "candidate") and ``retrieval_score`` (prepare
writes 0; train-ranker fills it with the candidate model's logit as of the
impression, and serving with the same model's retrieval logit).

``ytspark check-skew`` prints the per-feature table on a user's own prepared
data (:func:`check_skew`); ``tests/test_skew.py`` asserts equality on
hand-built logs.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ytspark import schema as S

BY_DESIGN = {S.RANK_SOURCE: "a logged impression keeps its source; serving ranks retrieved candidates",
             "retrieval_score": "prepare writes 0; train-ranker and serving use the candidate model's logit"}
CHECKED = (S.RANK_VIDEO, S.CAND_WATCH_HIST, S.RANK_USER_LANGUAGE, S.RANK_VIDEO_LANGUAGE, S.RANK_CHANNEL,
           S.RANK_CATEGORY, *[f for f in S.RANK_CONTINUOUS if f not in BY_DESIGN])


def sample_rows(spark: SparkSession, prepared_dir: str, n: int, seed: int, split: str = "train") -> pd.DataFrame:
    """``n`` ranking rows of ``split`` chosen by a seeded hash of (user, time, video): the same on every run."""
    rows = spark.read.parquet(f"{prepared_dir}/ranking/{split}")
    h = F.xxhash64(F.col(S.USER_ID), F.col(S.RANK_IMPRESSION_TS), F.col(S.RANK_VIDEO), F.lit(int(seed)))
    return rows.orderBy(h).limit(int(n)).toPandas()


def serving_rows(spark: SparkSession, prepared_dir: str, sample: pd.DataFrame) -> dict[str, np.ndarray]:
    """The serving code's ranking features for each (user_id, video_idx, impression_ts) of ``sample``,
    as of that time, in sample order (RANKING_SCHEMA names, flattened [n])."""
    from ytspark.features.events import ROW_ORDER
    from ytspark.prepared import load_manifest
    from ytspark.score.features import Encoder, load_vocabs, serving_columns, serving_events
    from ytspark.score.job import _video_meta
    from ytspark.score.rank import TorchRanker, UserBlock
    from ytspark.score.features import AFFINITY_GROUPS, IMPRESSIONS

    H = int(load_manifest(spark, prepared_dir)["config"]["prepare"]["history_length"])
    vocabs = load_vocabs(spark, prepared_dir)
    meta = _video_meta(spark, prepared_dir, vocabs)
    source = vocabs["source"]
    source_idx = source.index("candidate") if "candidate" in source.values else S.OOV
    ids = spark.createDataFrame(pd.DataFrame({S.USER_ID: sorted(set(sample[S.USER_ID]))}))
    events = serving_events(spark, prepared_dir, float("inf"), impressions=True).join(F.broadcast(ids), S.USER_ID)
    pdf = events.toPandas().sort_values([S.USER_ID, *ROW_ORDER], kind="stable").reset_index(drop=True)
    pdf["tokens"] = [None if t is None else [str(x) for x in t] for t in pdf["tokens"]]
    by_user = {u: g for u, g in pdf.groupby(S.USER_ID, sort=False)}
    encoder = Encoder.of(vocabs, float(sample[S.RANK_IMPRESSION_TS].max()), meta)  # vocabularies encoded once
    out: dict[str, list] = {}
    for uid, vid, t in zip(sample[S.USER_ID], sample[S.RANK_VIDEO], sample[S.RANK_IMPRESSION_TS]):
        g = by_user[uid]
        table = pa.Table.from_pandas(g[g[S.TS] < t], preserve_index=False)
        enc = replace(encoder, ref_year=Encoder.of_year(float(t)))
        cols = serving_columns(table, float(t), H, enc, affinity=True, impressions=True)
        block = UserBlock(cols[S.CAND_WATCH_HIST], cols[S.RANK_USER_LANGUAGE].astype(np.int64),
                          cols[S.CAND_SINCE_LAST].astype(np.float32), {a: cols[a] for a in AFFINITY_GROUPS},
                          impressions=cols[IMPRESSIONS])
        feats = TorchRanker(None, meta, float(t), source_idx).features(
            block, np.array([[int(vid)]], np.int64), np.zeros((1, 1), np.float32))
        for k, v in feats.items():
            out.setdefault(k, []).append(v[0])
    return {k: np.asarray(v) for k, v in out.items()}


def compare(sample: pd.DataFrame, serving: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-4
            ) -> pd.DataFrame:
    """One line per ranking feature: rows compared, rows that differ, largest difference, one example."""
    lines = []
    for f in (*CHECKED, *BY_DESIGN):
        train = sample[f].to_numpy()
        serve = serving[f]
        if f == S.CAND_WATCH_HIST:
            H = len(train[0]) if len(train) else 0
            tr = np.stack([np.asarray(x, np.int64) for x in train]) if len(train) else np.zeros((0, H), np.int64)
            sv = np.stack([np.asarray(x, np.int64)[:H] for x in serve]) if len(serve) else tr
            bad = (tr != sv).any(axis=1)
            diff = bad.astype(float)
        else:
            tr, sv = train.astype(np.float64), serve.astype(np.float64)
            diff = np.abs(tr - sv)
            bad = ~np.isclose(sv, tr, rtol=rtol, atol=atol)
        i = int(np.argmax(diff)) if len(diff) else 0
        lines.append({"feature": f, "rows": len(tr), "differ": int(bad.sum()),
                      "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
                      "example": f"train {tr[i]!s} serve {sv[i]!s}" if bad.any() else "",
                      "note": BY_DESIGN.get(f, "")})
    out = pd.DataFrame(lines)
    return out.sort_values(["note", "differ", "max_abs_diff"], ascending=[True, False, False], key=None) \
        .reset_index(drop=True)


def check_skew(spark: SparkSession, prepared_dir: str, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """:func:`compare` over ``n`` sampled training impressions of ``prepared_dir``; empty without impressions."""
    sample = sample_rows(spark, prepared_dir, n, seed)
    missing = [f for f in (*CHECKED, *BY_DESIGN) if f not in sample.columns]
    if missing:
        raise ValueError(f"{prepared_dir}/ranking has no column {missing[0]}: it was prepared by an older ytspark; "
                         "run prepare again")
    if sample.empty:
        return pd.DataFrame(columns=["feature", "rows", "differ", "max_abs_diff", "example", "note"])
    return compare(sample, serving_rows(spark, prepared_dir, sample))

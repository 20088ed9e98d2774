"""Ranking rows for data without impressions: the candidate model's retrieved-but-unwatched videos.

DESIGN.md "Ranking": where the logs have no impressions (MovieLens), the
candidate model's retrievals stand in for them. For every label watch of
prepare's candidate rows (training labels, validation and test targets, the
same selection and cap) :func:`candidate_negative_rows`

1. computes the user vector from the label's candidate inputs (watches and
   searches strictly before it, example age 0 as at serving);
2. retrieves the top ``pool`` videos by the logit u·v+b, pad/OOV and every
   video the user watched before the label excluded (what scoring does);
3. when the label is in that pool (serving could have shown it), writes one
   clicked row for it (weight = its watch seconds, or 1 where the log has
   none) and unclicked rows for ``negatives`` videos of the pool other than
   the label: the ``hard`` best-scored ones, the rest chosen by a seeded hash
   of (user, label time, video), so the choice does not depend on how users
   are batched. Validation and test targets (``full_slates``) get every other
   video of the pool instead: the whole list serving would rerank, so the
   held-out rows measure what reranking does to the top of the list
   (:mod:`ytspark.models.blend` chooses the blend weight on them). A label the model did
   not retrieve gives no rows: forcing it in as a positive with its low
   retrieval score teaches the ranker that a high retrieval score means "not
   watched" (measured on MovieLens: the retrieval score's AUC on such rows
   was 0.37, and reranking lowered HR@10);
4. builds every feature with prepare's own ranking-row code
   (:func:`~ytspark.prepare.batch_ranking.batch_ranking_rows`) on the user's
   watches plus these pseudo impressions at the label's timestamp: nothing at
   or after the label time is used. ``source_idx`` is the "candidate" source,
   ``retrieval_score`` the logit, and the impression features say "never shown"
   (``n_prev_impressions`` 0, ``since_impression_days`` -1,
   ``prev_impression_clicked`` 0): these rows are only built for logs without
   impressions, where serving finds none either.
"""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S
from ytspark.features.asof import batch_watches
from ytspark.features.params import CandidateParams, RankingParams
from ytspark.features.segments import Users, columns
from ytspark.prepare.batch_candidates import batch_candidate_rows
from ytspark.prepare.batch_ranking import batch_ranking_rows
from ytspark.schema import KIND_IMPRESSION, KIND_WATCH, NEVER_DAYS, RANKING_ARROW_SCHEMA

LogitsFn = Callable[[dict], np.ndarray]  # candidate input columns over n rows -> [n, V] float32 logits
CHUNK_ROWS = 512  # label rows scored against the whole catalogue at once
FEATURE_INPUT = (S.USER_ID, S.TS, "kind", S.VIDEO_IDX, S.CLICKED, S.WATCH_SECONDS, S.UPLOAD_TS, S.RANK_CHANNEL,
                 S.RANK_CATEGORY, S.RANK_VIDEO_LANGUAGE, S.RANK_USER_LANGUAGE)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread uint64 hash of uint64 values."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def pick_negatives(logits: np.ndarray, excluded: list[np.ndarray], label: np.ndarray, row_key: np.ndarray,
                   pool: int, negatives: int, hard: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Per row: ``negatives`` video ids from the top ``pool`` logits, excluded ids and the label never.

    The ``hard`` best-scored candidates are always taken, the rest drawn by hash.
    logits [n, V] (ids 0 and 1 are never candidates); excluded: per row an array of ids
    (the videos watched before the label); label [n]; row_key [n] uint64 seeds the draw.
    Returns (per-row negative ids, bool [n]: the label is in the row's top ``pool``).
    """
    n, V = logits.shape
    L = logits.astype(np.float32, copy=True)
    L[:, :2] = -np.inf
    rows = np.repeat(np.arange(n), [len(e) for e in excluded])
    if len(rows):
        L[rows, np.concatenate(excluded).astype(np.int64)] = -np.inf
    k = min(pool, V - 2)
    top = np.argpartition(-L, k - 1, axis=1)[:, :k] if k > 0 else np.zeros((n, 0), np.int64)
    finite = np.isfinite(np.take_along_axis(L, top, axis=1))
    retrieved = (finite & (top == label[:, None])).any(axis=1)
    ok = finite & (top != label[:, None])
    h = _mix64(row_key[:, None] ^ _mix64(top.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)))
    if hard > 0:  # the ``hard`` best-scored candidates first: hash 0 sorts before every drawn one
        score = np.where(ok, np.take_along_axis(L, top, axis=1), -np.inf)
        best = np.argsort(-score, axis=1, kind="stable")[:, :hard]
        h[np.arange(n)[:, None], best] = 0
    h = np.where(ok, h, np.iinfo(np.uint64).max)
    order = np.argsort(h, axis=1, kind="stable")[:, :negatives]
    chosen = np.take_along_axis(top, order, axis=1)
    keep = np.take_along_axis(ok, order, axis=1)
    return [chosen[i][keep[i]] for i in range(n)], retrieved


def candidate_negative_rows(batch: pa.Table, cp: CandidateParams, rp: RankingParams, vocab_tokens: pa.Array,
                            logits_fn: LogitsFn, pool: int, negatives: int, meta, seed: int = 0,
                            hard: int = 0, full_slates: bool = True) -> pa.RecordBatch:
    """Ranking rows (:data:`RANKING_ARROW_SCHEMA`) from the candidate model's retrievals at every label watch.

    Args:
        batch: enriched events of whole users sorted by (user_id, ts, kind, event_seq), with the
            columns of both row builders (candidate and ranking inputs).
        cp, vocab_tokens: prepare's candidate-row settings (they choose the labels).
        rp: ``source_idx`` = the "candidate" source's index.
        logits_fn: candidate input columns (example age 0) over n rows -> [n, V] logits u·v+b.
        pool: retrieval depth (``score.k``); negatives: unclicked rows per label, of which
            ``hard`` are the best-scored unwatched retrievals and the rest drawn from the pool.
        meta: :class:`~ytspark.score.rank.VideoMeta` of every video idx (language, channel,
            category, upload time) for the pseudo impressions.
        full_slates: validation and test targets get all ``pool - 1`` other retrieved videos as
            unclicked rows (the list serving reranks), not ``negatives`` of them.
    """
    labels = batch_candidate_rows(batch, cp, vocab_tokens)
    n = labels.num_rows
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=RANKING_ARROW_SCHEMA)
    lab = {f: labels.column(f) for f in labels.schema.names}
    c = columns(batch)
    ts_all = c[S.TS].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    users = Users.of(c[S.USER_ID], ts_all)
    w = batch_watches(batch)
    u_w0 = np.searchsorted(w["user"], np.arange(len(users.starts)), side="left")
    g = pc.index_in(lab[S.USER_ID], value_set=c[S.USER_ID].take(pa.array(users.starts))).to_numpy()
    k = lab[S.CAND_N_WATCHES].to_numpy().astype(np.int64)
    lo, hi = u_w0[g], u_w0[g] + k
    label = lab[S.CAND_LABEL].to_numpy().astype(np.int64)
    held_out = pc.not_equal(lab[S.SPLIT], "train").to_numpy(zero_copy_only=False) if full_slates \
        else np.zeros(n, bool)
    label_ts = lab[S.CAND_LABEL_TS].to_numpy().astype(np.float64)
    user_ids = lab[S.USER_ID].to_pylist()
    row_key = np.array([(zlib.crc32(u.encode("utf-8")) << 32) ^ int(t * 4) for u, t in zip(user_ids, label_ts)],
                       np.uint64) ^ np.uint64(seed)

    # the label's own watch seconds (the watch at label_ts of the label video)
    ws = pc.fill_null(c[S.WATCH_SECONDS], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)[w["index"]]
    wdf = pd.DataFrame({"g": w["user"], "t": w["ts"], "v": w["video"].astype(np.int64), "ws": ws}) \
        .drop_duplicates(["g", "t", "v"])
    pos_ws = pd.DataFrame({"g": g, "t": label_ts, "v": label}).merge(wdf, on=["g", "t", "v"], how="left")["ws"]
    pos_ws = np.where(np.isfinite(pos_ws.to_numpy()) & (pos_ws.to_numpy() > 0), pos_ws.to_numpy(), 1.0)

    inputs = {f: _numpy(lab[f]) for f in (S.CAND_WATCH_HIST, S.CAND_WATCH_AGE, S.CAND_SEARCH_HIST, S.CAND_N_WATCHES,
                                          S.CAND_SINCE_LAST, S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS)}
    imp_row, imp_vid, imp_click, imp_ws, imp_score = [], [], [], [], []
    for a in range(0, n, CHUNK_ROWS):
        b = min(n, a + CHUNK_ROWS)
        L = np.asarray(logits_fn({f: v[a:b] for f, v in inputs.items()}), np.float32)
        excluded = [w["video"][lo[i]:hi[i]] for i in range(a, b)]
        neg, retrieved = pick_negatives(L, excluded, label[a:b], row_key[a:b], pool, negatives, hard)
        if held_out[a:b].any():  # held-out targets: the whole retrieved list
            full, _ = pick_negatives(L, excluded, label[a:b], row_key[a:b], pool, pool, 0)
            neg = [f if h else x for f, x, h in zip(full, neg, held_out[a:b])]
        for i in range(a, b):
            if not (retrieved[i - a] and label[i] >= 2):
                continue  # serving could not have shown the watched video: no slate
            vids = neg[i - a]
            v = np.concatenate([[label[i]], vids])
            imp_row.append(np.full(len(v), i))
            imp_vid.append(v)
            imp_click.append(np.r_[np.ones(1, np.int32), np.zeros(len(vids), np.int32)])
            imp_ws.append(np.r_[[pos_ws[i]], np.zeros(len(vids))])
            imp_score.append(L[i - a, v])
    if not imp_row:
        return pa.RecordBatch.from_pylist([], schema=RANKING_ARROW_SCHEMA)
    imp_row, imp_vid = np.concatenate(imp_row), np.concatenate(imp_vid).astype(np.int64)
    imp_click, imp_ws, imp_score = np.concatenate(imp_click), np.concatenate(imp_ws), np.concatenate(imp_score)
    return _rows_with_features(c, w, users, g[imp_row], label_ts[imp_row], imp_vid, imp_click, imp_ws, imp_score,
                               lab["language_idx"].to_numpy()[imp_row], meta, rp)


def _numpy(arr: pa.Array) -> np.ndarray:
    if pa.types.is_list(arr.type):
        n = len(arr)
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(n, -1) if n else flat.reshape(0, 0)
    return arr.to_numpy(zero_copy_only=False)


def _rows_with_features(c: dict, w: dict, users: Users, g: np.ndarray, t: np.ndarray, vid: np.ndarray,
                        clicked: np.ndarray, ws: np.ndarray, score: np.ndarray, language: np.ndarray, meta,
                        rp: RankingParams) -> pa.RecordBatch:
    """batch_ranking_rows over the users' watches plus pseudo impressions; then source, score, impression features set."""
    wi = w["index"]
    nw, ni = len(wi), len(vid)
    user_of = np.concatenate([users.event_user[wi], g])
    ts = np.concatenate([w["ts"], t])
    kind = np.concatenate([np.full(nw, KIND_WATCH, np.int32), np.full(ni, KIND_IMPRESSION, np.int32)])
    order = np.lexsort((np.arange(nw + ni), kind, ts, user_of))
    first = users.starts[user_of]
    user_id = c[S.USER_ID].take(pa.array(first[order]))

    def col(name, imp_values, dtype, fill):
        watch = pc.fill_null(c[name], fill).to_numpy(zero_copy_only=False)[wi] if name in c else np.full(nw, fill)
        return np.concatenate([watch.astype(dtype), np.asarray(imp_values, dtype)])[order]

    table = pa.table({
        S.USER_ID: user_id,
        S.TS: pa.array(ts[order], pa.float64()),
        "kind": pa.array(kind[order], pa.int32()),
        S.VIDEO_IDX: pa.array(col(S.VIDEO_IDX, vid, np.int32, S.OOV), pa.int32()),
        S.CLICKED: pa.array(col(S.CLICKED, clicked, np.int32, 0), pa.int32()),
        S.WATCH_SECONDS: pa.array(col(S.WATCH_SECONDS, ws, np.float64, 0.0), pa.float64()),
        S.UPLOAD_TS: pa.array(col(S.UPLOAD_TS, meta.upload_ts[vid], np.float64, np.nan), pa.float64()),
        S.RANK_CHANNEL: pa.array(col(S.RANK_CHANNEL, meta.channel[vid], np.int32, S.OOV), pa.int32()),
        S.RANK_CATEGORY: pa.array(col(S.RANK_CATEGORY, meta.category[vid], np.int32, S.OOV), pa.int32()),
        S.RANK_VIDEO_LANGUAGE: pa.array(col(S.RANK_VIDEO_LANGUAGE, meta.language[vid], np.int32, S.OOV), pa.int32()),
        S.RANK_USER_LANGUAGE: pa.array(col(S.RANK_USER_LANGUAGE, language, np.int32, S.OOV), pa.int32()),
    })
    # NaN upload times mean "unknown" (null), as in prepare's events
    table = table.set_column(table.schema.get_field_index(S.UPLOAD_TS), S.UPLOAD_TS,
                             pc.if_else(pc.is_nan(table[S.UPLOAD_TS]), pa.scalar(None, pa.float64()),
                                        table[S.UPLOAD_TS]))
    rows = batch_ranking_rows(table, rp)
    imp_order = order[order >= nw] - nw  # pseudo impression of each output row
    out = {f: rows.column(f) for f in rows.schema.names}
    out["retrieval_score"] = pa.array(score[imp_order].astype(np.float32), pa.float32())
    # nobody was shown these videos: no earlier impression (serving computes the same from a log without any)
    out["n_prev_impressions"] = pa.array(np.zeros(ni, np.float32), pa.float32())
    out["since_impression_days"] = pa.array(np.full(ni, NEVER_DAYS, np.float32), pa.float32())
    out["prev_impression_clicked"] = pa.array(np.zeros(ni, np.float32), pa.float32())
    return pa.RecordBatch.from_arrays([out[f.name] for f in RANKING_ARROW_SCHEMA], schema=RANKING_ARROW_SCHEMA)

"""The ranking step of scoring: features of each (user, retrieved video) pair, and the ranking network.

Scoring calls a :class:`Reranker` on the top-K of every user; without one the
score is the retrieval score and the order is the FAISS order. The one
implementation, :class:`TorchRanker`, wraps
:class:`~ytspark.models.ranker.RankerModel` and builds the
:data:`~ytspark.schema.RANKING_SCHEMA` features that the prepared tables allow
at serving time:

=============================  ===============================================
video_idx                      the retrieved video
watch_hist, language_idx       the user's serving row
video_language/channel/        the video's metadata (prepared ``videos``),
category_idx                   by the ranker's vocabularies
source_idx                     ``"candidate"`` in the source vocabulary
since_last_watch_days          the serving row
channel/category_watches,      the user's watches of that channel/category and
since_channel/category_days    days since the last one (-1 never)
video_age_days                 days from upload to the cut-off (-1 unknown)
retrieval_score                the candidate model's logit (training rows hold
                               the same, as of each impression:
                               :mod:`ytspark.train.rank_rows`)
n_prev_impressions,            this video's impressions to this user before
since_impression_days,         the cut-off: count, days since the latest (-1
prev_impression_clicked        never), whether any was clicked
                               (``features.history.impression_history``,
                               the definition of the training rows)
=============================  ===============================================

:meth:`TorchRanker.score` does not build these columns pair by pair: it runs
the network through :class:`~ytspark.models.ranker.FactorisedRanker` (the
first layer split into a user part, once per user; a video part, once per
video of the whole [V] table, cached per model, video metadata and run date;
constants folded into the bias: source "candidate" and the impression features
at "never shown", the pairs shown before getting the exact correction
``FactorisedRanker.constant_delta``; and a pair part of 17 numbers: affinity
dot, same-language flag, quantile powers of channel/category watches and days
since and of retrieval_score).
Per pair that is n_p·h1 + 2·h1 + D multiply-adds for the first layer plus
the rest of the tower R, instead of input_width·h1 + R plus an H·D watch
mean (input_width = 161 at D = 32 and typical vocabularies; the
FactorisedRanker docstring tabulates both by tower: with the paper's
(1024, 512, 256) R dominates and the saving is ~17 %; with one hidden layer
of 128 it is ~8x). With per-user cut-offs (``UserBlock.as_of``, evaluation)
video_age_days moves to the pair part (n_p = 20). The channel/category
powers are computed once per (user, channel) entry and gathered per pair.
:meth:`TorchRanker.score_reference` (or ``fast=False``) keeps the
unfactorised path (tests).
The video table costs V·h1 float32 (50k videos x 1024: 205 MB) per cached entry.
"""
from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np
import torch

from ytspark import schema as S
from ytspark.schema import DAY, NEVER_DAYS
from ytspark.score.features import AFFINITY_GROUPS

RANK_CHUNK_ROWS = 16384  # (user, video) pairs per ranker forward pass
VIDEO_TABLE_CHUNK = 8192  # videos per step when building the factorised video table
SERVING_CACHE_ENTRIES = 2  # cached video tables per model (e.g. serving's run date + evaluation's)
DENSE_FIND_CELLS = 1 << 20  # Csr.find_block: a dense position table up to this many cells, else binary search


@dataclass
class VideoMeta:
    """Per video idx [V] arrays: language, channel, category idx (OOV 1 unknown), upload epoch seconds (nan)."""

    language: np.ndarray
    channel: np.ndarray
    category: np.ndarray
    upload_ts: np.ndarray


@dataclass
class Csr:
    """Per-user sorted (id, count, days since) triples, rows concatenated: row i is offsets[i]:offsets[i+1]."""

    offsets: np.ndarray
    ids: np.ndarray
    counts: np.ndarray
    since: np.ndarray
    flag: np.ndarray | None = None  # a third float32 value per entry (impressions: any of them clicked)

    def find(self, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ids/counts/since, found) of each (row, id) pair; position 0 where not found."""
        lengths = np.diff(self.offsets)
        span = np.int64(max(int(self.ids.max(initial=0)), int(ids.max(initial=0))) + 1)
        keys = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths) * span + self.ids.astype(np.int64)
        q = rows.astype(np.int64) * span + ids.astype(np.int64)
        if not len(keys):
            return np.zeros(q.shape, np.int64), np.zeros(q.shape, bool)
        pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
        found = keys[pos] == q
        return np.where(found, pos, 0), found

    def find_block(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`find` of every (row r, ids[r, j]) pair of an [n, K] block (n = this Csr's rows), flattened
        row-major. When n x (largest id + 1) is at most ``DENSE_FIND_CELLS`` it reads a dense [n, span] table
        of entry positions (channels, categories: a few hundred ids) instead of a binary search per pair."""
        n, K = ids.shape
        span = max(int(self.ids.max(initial=0)), int(ids.max(initial=0))) + 1
        if n != len(self.offsets) - 1 or n * span > DENSE_FIND_CELLS or int(ids.min(initial=0)) < 0:
            return self.find(np.repeat(np.arange(n, dtype=np.int64), K), ids.reshape(-1))
        miss = len(self.ids)
        table = np.full((n, span), miss, np.int64)
        table[np.repeat(np.arange(n), np.diff(self.offsets)), self.ids] = np.arange(miss)
        at = np.take_along_axis(table, np.asarray(ids, np.int64), axis=1).reshape(-1)
        found = at < miss
        return np.where(found, at, 0), found

    def lookup(self, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, days since) of each (row, id) pair; (0, -1) where the user never watched that id."""
        pos, found = self.find(rows, ids)
        if not len(self.ids):
            return np.zeros(pos.shape, np.float32), np.full(pos.shape, NEVER_DAYS, np.float32)
        count = np.where(found, self.counts[pos], 0.0).astype(np.float32)
        since = np.where(found, self.since[pos], NEVER_DAYS).astype(np.float32)
        return count, since

    def slice_rows(self, a: int, b: int) -> "Csr":
        """Rows a:b (contiguous, no copy of the arrays' untouched parts)."""
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        return Csr(self.offsets[a:b + 1] - lo, self.ids[lo:hi], self.counts[lo:hi], self.since[lo:hi],
                   None if self.flag is None else self.flag[lo:hi])

    def take(self, rows: np.ndarray) -> "Csr":
        """Rows ``rows`` (any order), re-based."""
        rows = np.asarray(rows, np.int64)
        starts, ends = self.offsets[rows].astype(np.int64), self.offsets[rows + 1].astype(np.int64)
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        sel = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
        return Csr(offsets, self.ids[sel], self.counts[sel], self.since[sel],
                   None if self.flag is None else self.flag[sel])

    def take_entries(self, pos: np.ndarray) -> dict[str, np.ndarray]:
        """The impression features of entries ``pos`` (found by :meth:`find`), float32."""
        flag = self.flag if self.flag is not None else np.zeros(len(self.ids), np.float32)
        return {"n_prev_impressions": self.counts[pos].astype(np.float32),
                "since_impression_days": self.since[pos].astype(np.float32),
                "prev_impression_clicked": flag[pos].astype(np.float32)}

    def impression_features(self, rows: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The three impression features of each (row, video id) pair, float32 (never shown: 0, -1, 0)."""
        pos, found = self.find(rows, ids)
        out = {f: np.full(pos.shape, v, np.float32) for f, v in _NEVER_SHOWN.items()}
        if len(self.ids) and found.any():
            for f, v in self.take_entries(pos[found]).items():
                out[f][found] = v
        return out


IMPRESSION_FEATURES = ("n_prev_impressions", "since_impression_days", "prev_impression_clicked")
_NEVER_SHOWN = {"n_prev_impressions": 0.0, "since_impression_days": NEVER_DAYS, "prev_impression_clicked": 0.0}


def video_age_days(upload_ts: np.ndarray, as_of) -> np.ndarray:
    """float32 days from upload to ``as_of`` (scalar or per-element), 0 at the earliest; NEVER_DAYS where unknown."""
    return np.where(np.isnan(upload_ts), NEVER_DAYS, np.maximum(0.0, (as_of - upload_ts) / DAY)).astype(np.float32)


@dataclass
class UserBlock:
    """The users of one scoring batch (B rows) as numpy: what rankers may read."""

    watch_hist: np.ndarray  # [B, H] int64
    language_idx: np.ndarray  # [B] int64
    since_last_watch_days: np.ndarray  # [B] float32
    affinity: Mapping[str, Csr]  # "channel" / "category" -> Csr, or empty without affinity columns
    as_of: np.ndarray | None = None  # [B] float64 per-user cut-off (evaluation); None: the ranker's run date
    # per user, the videos shown before the cut-off: count, days since the last, any clicked (Csr with flag;
    # ytspark.features.history.impression_history); None: nothing was shown (all pairs "never shown")
    impressions: Csr | None = None

    def take(self, rows: np.ndarray) -> "UserBlock":
        rows = np.asarray(rows, np.int64)
        aff = {g: c.take(rows) for g, c in self.affinity.items()}
        return UserBlock(self.watch_hist[rows], self.language_idx[rows], self.since_last_watch_days[rows], aff,
                         None if self.as_of is None else self.as_of[rows],
                         None if self.impressions is None else self.impressions.take(rows))

    def impression_features(self, rows: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The impression features of (row, video) pairs; "never shown" everywhere without impressions."""
        if self.impressions is None:
            return {f: np.full(np.shape(ids), v, np.float32) for f, v in _NEVER_SHOWN.items()}
        return self.impressions.impression_features(rows, ids)


class Reranker(Protocol):
    """Scores the retrieved candidates of a batch of users and orders them."""

    def score(self, users: UserBlock, cand: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """cand [B, K] int64 video idx (-1 = none), retrieval [B, K] float32 -> scores [B, K] float32."""
        ...

    def served(self, score: np.ndarray) -> np.ndarray:
        """The ``score`` column written for :meth:`score` values (e.g. calibrated watch seconds)."""
        ...

    def order_key(self, score: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """[B, K] serving order key from :meth:`score` and the retrieval scores; higher is first."""
        ...


@dataclass
class _VideoTables:
    """What :meth:`TorchRanker.score` reuses across calls: the factorised model and its [V] video tables."""

    fact: object  # FactorisedRanker
    P: torch.Tensor | None  # [V, h1] video side of the first layer (None: the model has no video-side input)
    vemb: torch.Tensor | None  # [V, D] video embeddings, rows 0 and 1 zero (the affinity dot), or None


# model -> OrderedDict[key -> _VideoTables]; weak, so a dropped model frees its tables.
_TABLES: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


def _weights_key(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (torch's version counter)."""
    return tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers()))


def _meta_key(meta: VideoMeta) -> tuple:
    h = hashlib.blake2b(digest_size=16)
    for a in (meta.language, meta.channel, meta.category, meta.upload_ts):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return len(meta.language), h.hexdigest()


@torch.no_grad()
def _build_tables(model, meta: VideoMeta, source_idx: int, as_of: float | None) -> _VideoTables:
    """The factorised model (source folded in; the impression features folded at "never shown", the pairs
    shown before corrected by :meth:`~ytspark.models.ranker.FactorisedRanker.constant_delta`; video_age_days
    video-side as of ``as_of`` unless None) and its video tables over every video idx of ``meta``."""
    per_video = ("video_age_days",) if as_of is not None else ()
    fact = model.factorised(per_video, dict(_NEVER_SHOWN), source_idx)
    V = len(meta.language)
    ids = torch.arange(V, dtype=torch.int64)
    vemb = model.video_emb(ids) if model.config.use_affinity else None
    P = None
    if fact.segments["video"]:
        cols = {k: torch.from_numpy(np.asarray(getattr(meta, k), np.int64)) for k in ("language", "channel", "category")}
        age = torch.from_numpy(video_age_days(np.asarray(meta.upload_ts, np.float64), as_of)) \
            if as_of is not None else None
        P = torch.empty((V, fact.width), dtype=torch.float32)
        for a in range(0, V, VIDEO_TABLE_CHUNK):
            s = slice(a, min(V, a + VIDEO_TABLE_CHUNK))
            P[s] = fact.video_part(ids[s], cols["language"][s], cols["channel"][s], cols["category"][s],
                                   None if age is None else age[s])
    return _VideoTables(fact, P, vemb)


class TorchRanker:
    """:class:`Reranker` over a RankerModel; score = expected watch time exp(logit).

    The order is ``order`` (:class:`ytspark.models.blend.ServingOrder`, from ``ranker.objective``): by the
    logit (watch_time, the default here), the retrieval logit (next_watch) or logit + w x retrieval logit (blend).

    :meth:`score` runs the factorised network (module docstring); ``fast=False`` (or
    :meth:`score_reference`) runs the unfactorised one on the :meth:`features` columns.
    """

    def __init__(self, model: torch.nn.Module, meta: VideoMeta, as_of: float, source_idx: int,
                 order=None, fast: bool = True, calibration: dict | None = None):
        from ytspark.models.blend import ServingOrder

        self.model, self.meta, self.as_of, self.source_idx = model, meta, float(as_of), int(source_idx)
        self.order = order if order is not None else ServingOrder()
        self.calibration = calibration  # the ranker's MODEL.json "calibration" (ytspark.models.score_calibration)
        self.fast = bool(fast)
        self._meta_fp: tuple | None = None

    def served(self, score: np.ndarray) -> np.ndarray:
        """The ``score`` column written for :meth:`score` values: calibrated expected watch seconds per
        impression (:func:`ytspark.models.score_calibration.apply`; the raw exp(logit) without a calibration)."""
        from ytspark.models import score_calibration

        return score_calibration.apply(self.calibration, score)

    def order_key(self, score: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            key = self.order.key(np.log(score), retrieval)
        return np.where(score > 0, key, -np.inf)  # pad slots (score -inf -> no log) stay last

    def features(self, users: UserBlock, cand: np.ndarray, retrieval: np.ndarray) -> dict[str, np.ndarray]:
        """RANKING_SCHEMA feature columns over the B*K pairs (row-major: user, then candidate)."""
        B, K = cand.shape
        vid = np.where(cand >= 2, cand, S.PAD).astype(np.int64).ravel()
        rows = np.repeat(np.arange(B), K)
        m = self.meta
        as_of = self.as_of if users.as_of is None else users.as_of[rows]
        out = {
            S.RANK_VIDEO: vid,
            S.CAND_WATCH_HIST: np.repeat(users.watch_hist, K, axis=0),
            S.RANK_USER_LANGUAGE: users.language_idx[rows],
            S.RANK_VIDEO_LANGUAGE: m.language[vid],
            S.RANK_CHANNEL: m.channel[vid],
            S.RANK_CATEGORY: m.category[vid],
            S.RANK_SOURCE: np.full(B * K, self.source_idx, np.int64),
            "since_last_watch_days": users.since_last_watch_days[rows],
            **users.impression_features(rows, vid),
            "video_age_days": video_age_days(m.upload_ts[vid], as_of),
            "retrieval_score": np.where(cand >= 2, retrieval, 0.0).astype(np.float32).ravel(),
        }
        names = {"channel": ("channel_watches", "since_channel_watch_days", S.RANK_CHANNEL),
                 "category": ("category_watches", "since_category_watch_days", S.RANK_CATEGORY)}
        for g in AFFINITY_GROUPS:
            cnt_col, since_col, id_col = names[g]
            if g in users.affinity:
                out[cnt_col], out[since_col] = users.affinity[g].lookup(rows, out[id_col])
            else:
                out[cnt_col] = np.zeros(B * K, np.float32)
                out[since_col] = np.full(B * K, NEVER_DAYS, np.float32)
        return out

    @torch.no_grad()
    def score_reference(self, users: UserBlock, cand: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """:meth:`score` through the unfactorised network on the :meth:`features` columns (slow; for tests)."""
        from ytspark.models.rank_features import rank_batch_from_numpy

        B, K = cand.shape
        out = np.full((B, K), -np.inf, np.float32)
        step = max(1, RANK_CHUNK_ROWS // max(K, 1))
        for a in range(0, B, step):
            rows = np.arange(a, min(B, a + step))
            feats = self.features(users.take(rows), cand[rows], retrieval[rows])
            s = self.model.expected_watch_time(rank_batch_from_numpy(feats, serving=True)).numpy()
            out[rows] = s.reshape(len(rows), K)
        out[cand < 2] = -np.inf
        return out

    def _tables(self, age_video_side: bool) -> _VideoTables:
        """The cached tables of (model weights, video metadata, source, run date if video-side)."""
        if self._meta_fp is None:
            self._meta_fp = _meta_key(self.meta)
        as_of = self.as_of if age_video_side else None
        key = (_weights_key(self.model), self._meta_fp, self.source_idx, as_of)
        cache = _TABLES.setdefault(self.model, OrderedDict())
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = _build_tables(self.model, self.meta, self.source_idx, as_of)
            while len(cache) > SERVING_CACHE_ENTRIES:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return hit

    def _pair_values(self, need: set, users: UserBlock, a: int, b: int, cand: np.ndarray, vid: np.ndarray,
                     vt: torch.Tensor, w: torch.Tensor | None, t: _VideoTables, retrieval: np.ndarray,
                     vbuf: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Pair-side inputs of users a:b (cand, vid [n, K]), flattened row-major, raw [n K] or (the channel and
        category ones) encoded [n K, 3]; only those in ``need`` (``vbuf``: a reused [>= n K, D] buffer for the
        candidates' embeddings)."""
        n, K = cand.shape
        m, out = self.meta, {}
        if "affinity" in need:
            v = torch.index_select(t.vemb, 0, vt, out=vbuf[:n * K]).view(n, K, -1)
            out["affinity"] = torch.bmm(v, w[a:b].unsqueeze(2)).reshape(-1)
        if "same_language" in need:
            ul = np.asarray(users.language_idx[a:b], np.int64)[:, None]
            out["same_language"] = torch.from_numpy(((ul == m.language[vid]) & (ul >= 2)).reshape(-1))
        if "video_age_days" in need:
            as_of = self.as_of if users.as_of is None else np.repeat(np.asarray(users.as_of[a:b], np.float64), K)
            out["video_age_days"] = torch.from_numpy(video_age_days(m.upload_ts[vid].reshape(-1), as_of))
        if "retrieval_score" in need:
            out["retrieval_score"] = torch.from_numpy(
                np.where(cand >= 2, retrieval[a:b], 0.0).astype(np.float32).reshape(-1))
        names = {"channel": ("channel_watches", "since_channel_watch_days"),
                 "category": ("category_watches", "since_category_watch_days")}
        for g in AFFINITY_GROUPS:
            cnt_col, since_col = names[g]
            if cnt_col not in need and since_col not in need:
                continue
            if g not in users.affinity:
                out[cnt_col] = torch.zeros(n * K, dtype=torch.float32)
                out[since_col] = torch.full((n * K,), NEVER_DAYS, dtype=torch.float32)
                continue
            csr = users.affinity[g].slice_rows(a, b)
            pos, found = csr.find_block(getattr(m, g)[vid])
            at = torch.from_numpy(np.where(found, pos, len(csr.ids)))
            for col, vals, miss in ((cnt_col, csr.counts, 0.0), (since_col, csr.since, NEVER_DAYS)):
                # encoded once per (user, channel) entry, not per pair: the powers are elementwise
                raw = torch.from_numpy(np.append(np.asarray(vals, np.float32), np.float32(miss)))
                out[col] = t.fact.encode(col, raw).index_select(0, at)
        return out

    @staticmethod
    def _shown_before(fact, imp: Csr, vid: np.ndarray, pre: torch.Tensor) -> None:
        """Add the impression features' correction to the pairs (rows of ``vid`` [n, K]) shown before."""
        n, K = vid.shape
        pos, found = imp.find(np.repeat(np.arange(n, dtype=np.int64), K), vid.reshape(-1))
        at = np.flatnonzero(found)
        if not len(at):
            return
        vals = {f: torch.from_numpy(np.ascontiguousarray(v)) for f, v in
                imp.take_entries(pos[at]).items()}
        delta = fact.constant_delta(vals)
        if delta is not None:
            pre.index_add_(0, torch.from_numpy(at), delta)

    @torch.no_grad()
    def score(self, users: UserBlock, cand: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """cand [B, K] int64 video idx (< 2: none), retrieval [B, K] float32 -> exp(logit) [B, K] (-inf at none)."""
        from ytspark.models.ranker import RankerModel

        if not (self.fast and isinstance(self.model, RankerModel)):
            return self.score_reference(users, cand, retrieval)
        cand = np.asarray(cand)
        B, K = cand.shape
        out = np.full((B, K), -np.inf, np.float32)
        if B == 0 or K == 0:
            return out
        age_video_side = users.as_of is None and "video_age_days" in self.model.norm.names
        t = self._tables(age_video_side)
        fact = t.fact
        U, w = fact.user_part(torch.from_numpy(np.asarray(users.watch_hist, np.int64)),
                              torch.from_numpy(np.asarray(users.language_idx, np.int64)),
                              torch.from_numpy(np.asarray(users.since_last_watch_days, np.float32)))
        need = set(fact.pair_names)
        step = max(1, RANK_CHUNK_ROWS // K)
        buf = torch.empty((min(B, step) * K, fact.width), dtype=torch.float32)  # reused: no page faults per chunk
        vbuf = torch.empty((min(B, step) * K, t.vemb.shape[1]), dtype=torch.float32) if "affinity" in need else None
        for a in range(0, B, step):  # chunks of users: memory O(RANK_CHUNK_ROWS x h1)
            b = min(B, a + step)
            c = cand[a:b]
            vid = np.where(c >= 2, c, S.PAD).astype(np.int64)
            vt = torch.from_numpy(vid.reshape(-1))
            pre = buf[:(b - a) * K]
            if t.P is not None:
                torch.index_select(t.P, 0, vt, out=pre)
                pre.view(b - a, K, -1).add_(U[a:b].unsqueeze(1))
            else:
                pre.view(b - a, K, -1).copy_(U[a:b].unsqueeze(1).expand(-1, K, -1))
            if need:
                pre.addmm_(fact.pair_inputs(self._pair_values(need, users, a, b, c, vid, vt, w, t, retrieval, vbuf)),
                           fact.weights["pair"])
            if users.impressions is not None and fact.constant_weights:
                self._shown_before(fact, users.impressions.slice_rows(a, b), vid, pre)
            out[a:b] = fact.head(pre).exp_().numpy().reshape(b - a, K)
        out[cand < 2] = -np.inf
        return out

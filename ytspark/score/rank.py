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
n_prev_impressions             0: impressions are not used at serving (rows
                               from logged impressions count earlier ones: a
                               known skew left)
=============================  ===============================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np
import torch

from ytspark import schema as S
from ytspark.prepare.candidates import DAY, NEVER_DAYS
from ytspark.score.features import AFFINITY_GROUPS

RANK_CHUNK_ROWS = 16384  # (user, video) pairs per ranker forward pass


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

    def lookup(self, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, days since) of each (row, id) pair; (0, -1) where the user never watched that id."""
        lengths = np.diff(self.offsets)
        span = np.int64(max(int(self.ids.max(initial=0)), int(ids.max(initial=0))) + 1)
        keys = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths) * span + self.ids.astype(np.int64)
        q = rows.astype(np.int64) * span + ids.astype(np.int64)
        pos = np.clip(np.searchsorted(keys, q), 0, max(len(keys) - 1, 0))
        found = (keys[pos] == q) if len(keys) else np.zeros(q.shape, bool)
        count = np.where(found, self.counts[pos] if len(keys) else 0.0, 0.0).astype(np.float32)
        since = np.where(found, self.since[pos] if len(keys) else 0.0, NEVER_DAYS).astype(np.float32)
        return count, since


@dataclass
class UserBlock:
    """The users of one scoring batch (B rows) as numpy: what rankers may read."""

    watch_hist: np.ndarray  # [B, H] int64
    language_idx: np.ndarray  # [B] int64
    since_last_watch_days: np.ndarray  # [B] float32
    affinity: Mapping[str, Csr]  # "channel" / "category" -> Csr, or empty without affinity columns
    as_of: np.ndarray | None = None  # [B] float64 per-user cut-off (evaluation); None: the ranker's run date

    def take(self, rows: np.ndarray) -> "UserBlock":
        aff = {}
        for g, c in self.affinity.items():
            starts, ends = c.offsets[rows], c.offsets[rows + 1]
            sel = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(rows) else \
                np.zeros(0, np.int64)
            sel = sel.astype(np.int64)
            aff[g] = Csr(np.concatenate([[0], np.cumsum(ends - starts)]), c.ids[sel], c.counts[sel], c.since[sel])
        return UserBlock(self.watch_hist[rows], self.language_idx[rows], self.since_last_watch_days[rows], aff,
                         None if self.as_of is None else self.as_of[rows])


class Reranker(Protocol):
    """Scores the retrieved candidates of a batch of users and orders them."""

    def score(self, users: UserBlock, cand: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """cand [B, K] int64 video idx (-1 = none), retrieval [B, K] float32 -> scores [B, K] float32."""
        ...

    def order_key(self, score: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """[B, K] serving order key from :meth:`score` and the retrieval scores; higher is first."""
        ...


class TorchRanker:
    """:class:`Reranker` over a RankerModel; score = expected watch time exp(logit).

    The order is :func:`ytspark.models.blend.blend_key`: logit + ``retrieval_weight`` x retrieval
    logit (the weight the ranker's export chose on validation; 0 = the paper's order by score).
    """

    def __init__(self, model: torch.nn.Module, meta: VideoMeta, as_of: float, source_idx: int,
                 retrieval_weight: float = 0.0):
        self.model, self.meta, self.as_of, self.source_idx = model, meta, float(as_of), int(source_idx)
        self.retrieval_weight = float(retrieval_weight)

    def order_key(self, score: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        from ytspark.models.blend import blend_key

        with np.errstate(divide="ignore", invalid="ignore"):
            key = blend_key(np.log(score), retrieval, self.retrieval_weight)
        return np.where(score > 0, key, -np.inf)  # pad slots (score -inf -> no log) stay last

    def features(self, users: UserBlock, cand: np.ndarray, retrieval: np.ndarray) -> dict[str, np.ndarray]:
        """RANKING_SCHEMA feature columns over the B*K pairs (row-major: user, then candidate)."""
        B, K = cand.shape
        vid = np.where(cand >= 2, cand, S.PAD).astype(np.int64).ravel()
        rows = np.repeat(np.arange(B), K)
        m = self.meta
        upload = m.upload_ts[vid]
        as_of = self.as_of if users.as_of is None else users.as_of[rows]
        age = np.where(np.isnan(upload), NEVER_DAYS, np.maximum(0.0, (as_of - upload) / DAY))
        out = {
            S.RANK_VIDEO: vid,
            S.CAND_WATCH_HIST: np.repeat(users.watch_hist, K, axis=0),
            S.RANK_USER_LANGUAGE: users.language_idx[rows],
            S.RANK_VIDEO_LANGUAGE: m.language[vid],
            S.RANK_CHANNEL: m.channel[vid],
            S.RANK_CATEGORY: m.category[vid],
            S.RANK_SOURCE: np.full(B * K, self.source_idx, np.int64),
            "since_last_watch_days": users.since_last_watch_days[rows],
            "n_prev_impressions": np.zeros(B * K, np.float32),
            "video_age_days": age.astype(np.float32),
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
    def score(self, users: UserBlock, cand: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
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

"""The sequence encoder (``candidate.encoder = sequence``) as a training :class:`~ytspark.train.loop.Task`.

Trains on ``<prepared>/sequences/train`` (user windows, :data:`~ytspark.schema.SEQUENCE_SCHEMA`):
one forward pass per row gives an example at every position with a target,
all of them in one sampled softmax with logQ correction (the sampler of
:mod:`ytspark.models.losses`, its proposal the count of each video as a
position target). Validation, co-visitation and export are the candidate
task's (``candidates/val``, the user vector at the last position), so the
exported model directory serves exactly like the bag encoder's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ytspark import schema as S
from ytspark.models.candidate import CandidateModel
from ytspark.models.features import CANDIDATE_FIELDS, CandidateBatch, _matrix, _tensor, batch_from_numpy
from ytspark.models.losses import Sampler, UnigramSampler, sampled_softmax_loss
from ytspark.train.candidate_task import CandidateTask

SEQ_FIELDS = [*CANDIDATE_FIELDS, S.SEQ_NEXT, S.SEQ_SEARCH_FROM]


@dataclass
class SequenceBatch:
    """Sequence rows as tensors: the candidate-row part; per slot the target and the first visible search, [B, H]."""

    rows: CandidateBatch
    seq_next: torch.Tensor
    search_from: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)


def sequence_batch(cols: dict) -> SequenceBatch:
    """Columns of sequence rows (dict of arrays) -> :class:`SequenceBatch` (CPU tensors)."""
    missing = [c for c in (S.SEQ_NEXT, S.SEQ_SEARCH_FROM) if c not in cols]
    if missing:
        raise KeyError(f"sequence batch: missing column(s) {missing}; expected ytspark.schema.SEQUENCE_SCHEMA rows "
                       "(prepare writes them to sequences/train when candidate.encoder is sequence or auto)")
    rows = batch_from_numpy(cols)
    nxt = _tensor(_matrix(cols[S.SEQ_NEXT], S.SEQ_NEXT, np.int64))
    frm = _tensor(_matrix(cols[S.SEQ_SEARCH_FROM], S.SEQ_SEARCH_FROM, np.int64))
    if nxt.shape != rows.watch_hist.shape or frm.shape != rows.watch_hist.shape:
        raise ValueError(f"sequence batch: '{S.SEQ_NEXT}' {tuple(nxt.shape)} and '{S.SEQ_SEARCH_FROM}' "
                         f"{tuple(frm.shape)} must align with '{S.CAND_WATCH_HIST}' {tuple(rows.watch_hist.shape)}")
    return SequenceBatch(rows, nxt, frm)


class AllPositionsSoftmax(nn.Module):
    """forward(SequenceBatch) -> the sampled-softmax loss averaged over every position with a target.

    ``horizon`` > 1: each position also predicts the watches after its next one (the d-th after it with
    weight ``decay`` ** (d - 1)), a loss per offset averaged over the positions that have that target, then
    a weighted mean of the offsets: the encoder learns what the user watches soon, not only the next
    item of a session whose order may be noise (a batch of ratings, a burst of same-second watches)."""

    def __init__(self, model: CandidateModel, sampler: Sampler, num_sampled: int, horizon: int = 1,
                 decay: float = 1.0):
        super().__init__()
        if model.config.encoder != "sequence":
            raise ValueError("AllPositionsSoftmax needs a CandidateModel with encoder='sequence'")
        if horizon < 1:
            raise ValueError(f"AllPositionsSoftmax: horizon must be >= 1, got {horizon}")
        self.model, self.sampler, self.num_sampled = model, sampler, num_sampled
        self.weights = [decay ** d for d in range(horizon)]

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        m = self.model
        u, y = m.seq.positions(m, batch.rows, batch.seq_next, batch.search_from, horizon=len(self.weights))
        total = sum(w * sampled_softmax_loss(u, m.out_emb, m.out_bias, y[:, d], self.sampler, self.num_sampled)
                    for d, w in enumerate(self.weights))
        return total / sum(self.weights)


class SequenceTask(CandidateTask):
    """The candidate task with the sequence encoder, trained on user windows."""

    fields = SEQ_FIELDS
    val_fields = CANDIDATE_FIELDS
    encoder = "sequence"

    def train_path(self) -> str:
        return f"{self.prepared}/sequences/train"

    def train_rows(self) -> int:
        n = int((self.manifest.get("sequences") or {}).get("train", 0))
        if n == 0:
            raise ValueError(f"{self.train_path()} has no rows: prepare writes sequence rows only with "
                             "candidate.encoder = sequence or auto (rerun `ytspark prepare --set "
                             "candidate.encoder=sequence`), and each user needs 3+ watches")
        return n

    def label_counts(self) -> np.ndarray:
        """Count of each video idx as a position target (the sampler's proposal)."""
        if self._label_counts is None:
            import pyarrow.dataset as ds

            from ytspark.rows import dataset_url

            url = dataset_url(self.train_path())
            src = url[len("file://"):] if url.startswith("file://") else url
            col = ds.dataset(src, format="parquet").to_table(columns=[S.SEQ_NEXT])[S.SEQ_NEXT]
            y = col.combine_chunks().flatten().to_numpy()
            self._label_counts = np.bincount(y[y >= S.N_SPECIAL], minlength=self.config.n_videos).astype(np.float64)
        return self._label_counts

    def loss_module(self, model: CandidateModel, rank: int) -> nn.Module:
        c = self.cfg.candidate
        sampler = UnigramSampler(self.label_counts(), alpha=c.sampler_alpha, seed=self.cfg.train.seed + rank)
        return AllPositionsSoftmax(model, sampler, c.seq_num_sampled, c.seq_horizon, c.seq_horizon_decay)

    def to_batch(self, cols: dict) -> SequenceBatch:
        return sequence_batch(cols)


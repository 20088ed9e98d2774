"""Softmax losses over the video vocabulary: full, and sampled with logQ correction (paper 3.1).

Sampled softmax (Jean et al. 2015; Bengio & Senécal 2008): per step, ``S``
negatives are drawn **with replacement** from a proposal Q, shared by the whole
batch. Every logit (the true class's and each sample's) is corrected by
``- log Q(class)``, the importance weight that makes the sampled partition
function estimate the full one. The expected-count form ``- log(S · Q)`` differs
by the constant ``log S`` on every logit of a row, which the softmax cancels, so
the two are the same loss. A sample equal to a row's true label (an accidental
hit) is set to -inf for that row. With ``num_sampled >= n_videos - 2`` (every
real class could be drawn) the exact full softmax is used instead.

Rows whose label is pad (0) or OOV (1) cannot be predicted: both losses ignore
them (mean over the other rows; 0 when none remain).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ytspark.schema import N_SPECIAL


class Sampler(Protocol):
    """What :func:`sampled_softmax_loss` needs from a proposal distribution over vocab indices."""

    def sample(self, num_sampled: int) -> torch.Tensor:
        """[num_sampled] int64 class ids (CPU)."""

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        """log Q(ids), float32, same shape and device as ``ids``."""


class UnigramSampler:
    """Proposal Q(i) ∝ count_i ** alpha over vocab indices >= 2; Q(0) = Q(1) = 0.

    ``counts`` [V] is indexed by vocab index (rows 0 and 1 ignored); counts
    below 1 are raised to 1 so every video can be drawn. For ``Vocab.counts``
    (entries only) use :meth:`from_vocab_counts`. Draws come from a seeded numpy
    generator: give each data-parallel rank its own seed (e.g. seed + rank).
    """

    def __init__(self, counts: np.ndarray, alpha: float = 0.75, seed: int = 0):
        counts = np.asarray(counts, np.float64)
        if counts.ndim != 1 or len(counts) <= N_SPECIAL:
            raise ValueError(f"UnigramSampler: counts must be 1-D over the video vocabulary (> 2 rows), "
                             f"got shape {counts.shape}")
        w = np.maximum(counts, 1.0) ** alpha
        w[:N_SPECIAL] = 0.0
        q = w / w.sum()
        self.n_videos = len(counts)
        self.alpha = alpha
        self.q = q
        self._cdf = np.cumsum(q)
        self._rng = np.random.default_rng(seed)
        with np.errstate(divide="ignore"):
            self._log_q = torch.from_numpy(np.log(q).astype(np.float32))  # -inf at 0 and 1
        self._log_q_on: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_vocab_counts(cls, entry_counts, alpha: float = 0.75, seed: int = 0) -> "UnigramSampler":
        """From ``Vocab.counts`` (one per entry, vocab index = position + 2)."""
        return cls(np.concatenate([[0.0, 0.0], np.asarray(entry_counts, np.float64)]), alpha, seed)

    def sample(self, num_sampled: int) -> torch.Tensor:
        """[num_sampled] int64 ids drawn i.i.d. from Q, all >= 2."""
        u = self._rng.random(num_sampled) * self._cdf[-1]
        ids = np.searchsorted(self._cdf, u, side="right").clip(N_SPECIAL, self.n_videos - 1)
        return torch.from_numpy(ids.astype(np.int64))

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        table = self._log_q_on.get(ids.device)
        if table is None:
            table = self._log_q_on[ids.device] = self._log_q.to(ids.device)
        return table[ids]


def _valid_rows(labels: torch.Tensor, n_videos: int) -> torch.Tensor:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_videos):
        raise ValueError(f"labels must be vocab indices in [0, {n_videos}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]; does the model match the vocabulary?")
    return labels >= N_SPECIAL


def _mean(per_row: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    per_row = torch.where(valid, per_row, torch.zeros_like(per_row))
    return per_row.sum() / valid.sum().clamp_min(1)


def full_softmax_loss(u: torch.Tensor, out_emb: torch.Tensor, out_bias: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """Exact cross-entropy of softmax(u @ out_emb.T + out_bias) over classes >= 2.

    u [B, D], out_emb [V, D], out_bias [V], labels [B] int64 -> scalar.
    """
    valid = _valid_rows(labels, out_emb.shape[0])
    logits = u @ out_emb.T + out_bias
    logits = torch.cat([torch.full_like(logits[:, :N_SPECIAL], float("-inf")), logits[:, N_SPECIAL:]], dim=1)
    per_row = F.cross_entropy(logits, labels.clamp_min(N_SPECIAL), reduction="none")
    return _mean(per_row, valid)


def sampled_softmax_loss(u: torch.Tensor, out_emb: torch.Tensor, out_bias: torch.Tensor, labels: torch.Tensor,
                         sampler: Sampler, num_sampled: int, *, logq_correction: bool = True,
                         remove_accidental_hits: bool = True, exact_when_exhaustive: bool = True) -> torch.Tensor:
    """Sampled softmax cross-entropy, negatives shared across the batch.

    u [B, D], out_emb [V, D], out_bias [V], labels [B] int64 -> scalar.
    ``logq_correction`` and ``remove_accidental_hits`` exist for ablations and
    tests; ``exact_when_exhaustive=False`` forces the sampled path even when
    ``num_sampled`` covers the vocabulary.
    """
    V = out_emb.shape[0]
    if exact_when_exhaustive and num_sampled >= V - N_SPECIAL:
        return full_softmax_loss(u, out_emb, out_bias, labels)
    valid = _valid_rows(labels, V)
    labels = labels.clamp_min(N_SPECIAL)
    ids = sampler.sample(num_sampled).to(out_emb.device)
    true_logit = (u * out_emb[labels]).sum(dim=1) + out_bias[labels]  # [B]
    neg_logit = u @ out_emb[ids].T + out_bias[ids]  # [B, S]
    if logq_correction:
        true_logit = true_logit - sampler.log_q(labels).to(true_logit.dtype)
        neg_logit = neg_logit - sampler.log_q(ids).to(neg_logit.dtype)
    if remove_accidental_hits:
        neg_logit = neg_logit.masked_fill(ids.unsqueeze(0) == labels.unsqueeze(1), float("-inf"))
    logits = torch.cat([true_logit.unsqueeze(1), neg_logit], dim=1)
    per_row = torch.logsumexp(logits, dim=1) - true_logit
    return _mean(per_row, valid)

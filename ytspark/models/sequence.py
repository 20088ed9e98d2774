"""The sequence encoder of the candidate network (``CandidateConfig.encoder = "sequence"``).

A small causal Transformer over a user's watch history (most recent first, as
in :data:`~ytspark.schema.CANDIDATE_SCHEMA`): slot j's input is the watched
id's embedding + a position embedding (chronological index from the oldest
real slot, so adding pad slots or cutting newer slots changes nothing) + a
log-bucketed embedding of the time since the previous watch
(:func:`gap_buckets`). Slot j attends to itself and older real slots only.
At every position the encoder state is joined with the bag of the search
tokens that position may see, the demographics (embeddings + user age) and
the position's example age and time since its last watch (x̃, x̃², √x̃), and
u_j = h_j + MLP([h_j, searches_j, demographics, ages_j]) [D].

- :meth:`SequenceEncoder.user_vector`: u at slot 0, the last position as of
  the row's time (serving: the run date), from candidate rows alone; the
  searches are all of ``search_hist``.
- :meth:`SequenceEncoder.positions`: training on sequence rows
  (:data:`~ytspark.schema.SEQUENCE_SCHEMA`): u at every position with a
  target (``seq_next`` >= 2) and the targets, one forward pass for up to
  ``history_length`` examples per row. Position j's example age is the row's
  plus the time from its target to the row's label; its searches are
  ``search_hist[seq_search_from[j]:]``.

The embedding tables (watched ids, search tokens, demographics) and the
quantile normaliser belong to :class:`~ytspark.models.candidate.CandidateModel`,
which owns this module and passes itself in.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ytspark import schema as S
from ytspark.schema import DAY

if TYPE_CHECKING:
    from ytspark.models.candidate import CandidateModel
    from ytspark.models.features import CandidateBatch

GAP_BUCKETS = 32  # 0: no previous watch (or pad), 1: under half a second, 2 + floor(log2 whole seconds), capped


def gap_buckets(hist: torch.Tensor, age_days: torch.Tensor) -> torch.Tensor:
    """[B, H] ids, [B, H] days before the row's time -> [B, H] int64 bucket of the time since the previous watch.

    The gap is read in whole seconds (rounded): float32 ages in days are exact to well under half a second up
    to about two months before the row's time, so a gap of exactly 2^k seconds (logs in whole seconds have
    many) falls in the same bucket whether the row's time is its label's (training), an impression's or the
    run date (serving), instead of on either side of the boundary by rounding."""
    real = hist != S.PAD
    older_real = torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], dim=1)
    older_age = torch.cat([age_days[:, 1:], torch.zeros_like(age_days[:, :1])], dim=1)
    sec = torch.round((older_age.double() - age_days.double()).clamp_min(0.0) * DAY)
    b = 2 + torch.floor(torch.log2(sec.clamp_min(1.0))).long().clamp(0, GAP_BUCKETS - 3)
    b = torch.where(sec < 1.0, torch.ones_like(b), b)
    return torch.where(real & older_real, b, torch.zeros_like(b))


def chrono_positions(hist: torch.Tensor, max_history: int) -> torch.Tensor:
    """[B, H] most-recent-first ids -> [B, H] index from the oldest real slot (0), pad slots 0."""
    real = hist != S.PAD
    n = real.sum(dim=1, keepdim=True)
    j = torch.arange(hist.shape[1], device=hist.device).unsqueeze(0)
    return torch.where(real, (n - 1 - j).clamp(0, max_history - 1), torch.zeros_like(j))


class SequenceEncoder(nn.Module):
    """Causal self-attention over the history, joined per position with searches, demographics and ages."""

    def __init__(self, embed_dim: int, layers: int, heads: int, max_history: int, extra_width: int,
                 dropout: float = 0.0):
        super().__init__()
        D = embed_dim
        self.heads, self.max_history, self.embed_dim = heads, max_history, D
        self.position = nn.Embedding(max_history, D)
        self.gap = nn.Embedding(GAP_BUCKETS, D)
        nn.init.normal_(self.position.weight, std=0.02)
        nn.init.normal_(self.gap.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(D, heads, dim_feedforward=2 * D, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D)
        self.join = nn.Sequential(nn.Linear(D + extra_width, 2 * D), nn.ReLU(), nn.Linear(2 * D, D))

    def states(self, video_in: nn.Embedding, hist: torch.Tensor, age_days: torch.Tensor,
               last_only: bool = False) -> torch.Tensor:
        """[B, H] ids, [B, H] ages -> causal states [B, H', D] (pad slots zero), H' = min(H, max_history, the
        batch's longest history): the trailing slots no row fills are pads in every row, so they are cut before
        the attention (no output changes: a pad slot is masked as a key and zero as a state).
        ``last_only``: [B, 1, D], the state of slot 0 (the last position) alone; the last layer attends from
        that slot only (the same numbers up to float rounding, about half the work of two layers)."""
        hist = hist[:, :self.max_history]
        filled = (hist != S.PAD).any(dim=0).nonzero()
        hist = hist[:, :int(filled.max()) + 1 if len(filled) else 1]
        age_days = age_days[:, :hist.shape[1]]
        pad = hist == S.PAD
        L = hist.shape[1]
        x = (video_in(hist) * math.sqrt(self.embed_dim) + self.position(chrono_positions(hist, self.max_history))
             + self.gap(gap_buckets(hist, age_days)))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = x * keep
        j = torch.arange(L, device=hist.device)
        older = j.unsqueeze(0) >= j.unsqueeze(1)  # [q, k]: key k is the query's slot or older
        allowed = (older.unsqueeze(0) & ~pad.unsqueeze(1)) | torch.eye(L, dtype=torch.bool, device=hist.device)
        mask = (~allowed).repeat_interleave(self.heads, dim=0)  # [B * heads, L, L], True = blocked
        if not last_only:
            return self.norm(self.encoder(x, mask=mask)) * keep
        *first, last = self.encoder.layers
        for layer in first:
            x = layer(x, src_mask=mask)
        # slot 0 sees itself and every real slot: the key padding mask is its row of ``allowed``
        y = last.norm1(x)
        a = last.self_attn(y[:, :1], y, y, key_padding_mask=~allowed[:, 0], need_weights=False)[0]
        x0 = x[:, :1] + last.dropout1(a)
        x0 = x0 + last._ff_block(last.norm2(x0))
        return self.norm(x0) * keep[:, :1]

    def _out(self, m: "CandidateModel", h: torch.Tensor, search: torch.Tensor | None, demo: torch.Tensor | None,
             example_age: torch.Tensor, since: torch.Tensor) -> torch.Tensor:
        """h [N, D], search bags [N, D], demographics [N, W], example_age and since [N] -> u [N, D]."""
        parts = [h]
        c = m.config
        if c.use_searches:
            parts.append(search)
        if c.use_demographics:
            parts.append(demo)
        if c.use_example_age:
            parts.append(m.norm.powers(S.CAND_EXAMPLE_AGE, example_age))
        parts.append(m.norm.powers(S.CAND_SINCE_LAST, since))
        return h + self.join(torch.cat(parts, dim=1))

    def user_vector(self, m: "CandidateModel", batch: "CandidateBatch") -> torch.Tensor:
        """u [B, D] at slot 0 (the last position), all of ``search_hist`` visible."""
        h = self.states(m.video_in, batch.watch_hist, batch.watch_hist_age, last_only=True)[:, 0]
        search = _search_bags(m, batch.search_hist, torch.zeros_like(batch.watch_hist[:, :1]))[:, 0] \
            if m.config.use_searches else None
        demo = batch_demographics(m, batch) if m.config.use_demographics else None
        return self._out(m, h, search, demo, batch.example_age_days, batch.since_last_watch_days)

    def positions(self, m: "CandidateModel", batch: "CandidateBatch", seq_next: torch.Tensor,
                  search_from: torch.Tensor, horizon: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(u [N, D], targets [N, horizon]) at every position j with ``seq_next[:, j] >= 2``: one pass over
        the rows. Target d of position j is the (d+1)-th watch after it, ``seq_next[:, j - d]`` (0, no
        target, past the window's newest slot): later watches of the same window, never an input of j.

        Position j: input slots >= j, example age = row's + age of its target, time since its last watch =
        age[j] - age of its target (slot 0: the row's since_last_watch_days), searches search_hist[from_j:].
        """
        states = self.states(m.video_in, batch.watch_hist, batch.watch_hist_age)
        H = states.shape[1]  # the slots states() kept: the ones past them are pads with no target
        seq_next, search_from = seq_next[:, :H], search_from[:, :H]
        age = batch.watch_hist_age[:, :H]
        next_age = torch.cat([torch.zeros_like(age[:, :1]), age[:, :-1]], dim=1)
        since = torch.cat([batch.since_last_watch_days.unsqueeze(1), (age - next_age)[:, 1:]], dim=1)
        ex_age = batch.example_age_days.unsqueeze(1) + next_age
        sel = seq_next >= S.N_SPECIAL
        rows = torch.nonzero(sel, as_tuple=True)[0]
        search = _search_bags(m, batch.search_hist, search_from)[sel] if m.config.use_searches else None
        demo = batch_demographics(m, batch)[rows] if m.config.use_demographics else None
        u = self._out(m, states[sel], search, demo, ex_age[sel], since[sel])
        return u, future_targets(seq_next, horizon)[sel]


def future_targets(seq_next: torch.Tensor, horizon: int) -> torch.Tensor:
    """[B, H] next watch per slot (most recent first) -> [B, H, horizon]: target d of slot j is
    ``seq_next[:, j - d]``, 0 where j - d < 0 (after the window's label)."""
    H = seq_next.shape[1]
    return torch.stack([F.pad(seq_next, (d, 0))[:, :H] for d in range(horizon)], dim=-1)


def batch_demographics(m: "CandidateModel", batch: "CandidateBatch") -> torch.Tensor:
    """[B, sum of demographic widths + 3]: the demographic embeddings and user age (x̃, x̃², √x̃)."""
    parts = [emb(batch.demographics[:, i]) for i, emb in enumerate(m.demo_in)]
    parts.append(m.norm.powers(S.USER_AGE, batch.user_age))
    return torch.cat(parts, dim=1)


def _search_bags(m: "CandidateModel", search: torch.Tensor, search_from: torch.Tensor) -> torch.Tensor:
    """[B, S] tokens (most recent first), [B, P] first visible slot per position -> [B, P, D] masked means."""
    s = torch.arange(search.shape[1], device=search.device)
    vis = (s.view(1, 1, -1) >= search_from.unsqueeze(-1)) & (search != S.PAD).unsqueeze(1)  # [B, P, S]
    w = vis.to(m.token_in.weight.dtype)
    total = torch.bmm(w, m.token_in(search))
    return total / w.sum(dim=-1, keepdim=True).clamp_min(1.0)

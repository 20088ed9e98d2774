"""The candidate-generation network (paper section 3): user tower u, video table v, softmax(u · v + b).

Inputs of the user tower, concatenated (each group switchable for ablations):

- watches: masked mean of the watched ids' input embeddings (pad 0 contributes
  nothing, all-pad -> zero vector; OOV 1 is a real, unknown watch and counts);
- searches: masked mean of search-token embeddings;
- demographics: one embedding per :data:`~ytspark.schema.DEMOGRAPHIC_COLUMNS`
  column, width growing with log2 of its vocabulary (:func:`demographic_dim`),
  plus user_age as (x̃, x̃², √x̃);
- example age as (x̃, x̃², √x̃). **Serving:** the caller sets example age to 0
  (``batch_from_numpy(..., serving=True)`` does it), as in the paper;
- recency (beyond the paper), ``recency=``:
  ``"none"`` the paper's plain mean only;
  ``"last_k"`` also the last ``recent_k`` watched ids as separate embeddings
  (concatenated, pad slots zero) and time since the last watch (x̃, x̃², √x̃);
  ``"weighted"`` also a recency-weighted mean, weights ∝ exp(-age_days / tau)
  over non-pad slots, tau learned (``learn_tau``) from ``tau_days``;
  ``"attention"`` also a small causal self-attention encoder over the watch
  history (``attn_layers`` pre-norm Transformer layers, ``attn_heads`` heads,
  learned position embeddings for up to ``max_history`` slots, pad keys
  masked, each slot attends only to itself and older watches): its output at
  the most recent slot, a SASRec-style summary of the sequence. Because the
  encoder is causal, its output at every older slot summarises the history up
  to that watch, so :meth:`CandidateModel.sequence_states` gives one training
  target per history slot (the next watch) for the SASRec-style all-positions
  loss (``seq_loss_weight`` in the training task).

Encoders (``encoder=``): ``"bag"`` the tower above over one row's inputs;
``"sequence"`` a causal Transformer over the history trained on every position
of a user window at once (:mod:`ytspark.models.sequence`; the recency,
hidden and skip settings do not apply). Both give u [B, D] from the same
candidate rows, so serving, the index and the fusion are the same.

Continuous inputs are normalised by :class:`~ytspark.models.features.QuantileNormalizer`
built from ``quantiles.json ["candidates"]``. The ReLU tower ends in a linear
layer of width ``embed_dim`` (``hidden=()``: u is a linear projection);
``linear_skip`` adds a linear projection of the tower input to its output
(u = tower(x) + Wx), so a deep tower starts from, and can fall back to, the
linear model (beyond the paper: on small data the plain deep tower overfits).

Output side: ``out_emb`` [V, D] and ``out_bias`` [V], separate from the input
table. Rows 0 (pad) and 1 (OOV) are never predicted (-inf in
:meth:`CandidateModel.logits_full`, never sampled by the losses).

Export / serving with inner-product search (FAISS): ``video_embeddings()`` is
``out_emb`` [V, D] float32 with rows 0 and 1 zeroed; ``video_biases()`` is
``out_bias``. Exact ``logits_full`` scores by plain inner product come from the
folded pair ``video_embeddings(fold_bias=True)`` [V, D+1] = [v, b] and
``fold_user(u)`` [B, D+1] = [u, 1]. Rows 0 and 1 must be left out of the
index (``faiss.IndexIDMap`` with ids 2..V-1) or dropped from its results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch
from torch import nn

from ytspark import schema as S
from ytspark.config import CandidateTrainConfig, PrepareConfig
from ytspark.models.base import ModelConfig, QuantileModel, relu_tower
from ytspark.models.features import CandidateBatch
from ytspark.models.sequence import SequenceEncoder
from ytspark.schema import N_SPECIAL

RECENCY_MODES = ("none", "last_k", "weighted", "attention")
ENCODERS = ("bag", "sequence")
QUERY_GAPS = ("session", "as_of")


_DEFAULT = CandidateTrainConfig()  # the [candidate] defaults: one set, in ytspark/config.py


@dataclass(frozen=True)
class CandidateConfig(ModelConfig):
    """Shape and inputs of :class:`CandidateModel`; vocabulary sizes include pad and OOV (``len(Vocab)``).

    A field named as a ``[candidate]`` key defaults to that key's default (``ytspark.config``);
    ``ytspark.train.candidate_task.model_config`` builds one from a loaded config.
    """

    n_videos: int
    n_tokens: int
    demographic_vocab_sizes: tuple[int, ...]  # one per schema.DEMOGRAPHIC_COLUMNS, in that order
    embed_dim: int = _DEFAULT.embed_dim
    hidden: tuple[int, ...] = _DEFAULT.hidden
    use_watches: bool = _DEFAULT.use_watches
    use_searches: bool = _DEFAULT.use_searches
    use_demographics: bool = _DEFAULT.use_demographics
    use_example_age: bool = _DEFAULT.use_example_age
    recency: str = _DEFAULT.recency  # none | last_k | weighted | attention
    recent_k: int = _DEFAULT.recent_k
    tau_days: float = _DEFAULT.tau_days  # initial (or fixed) recency time constant for recency="weighted"
    learn_tau: bool = True  # model only (no config key): tau is trained from tau_days
    dropout: float = _DEFAULT.dropout
    tie_embeddings: bool = _DEFAULT.tie_embeddings  # watched-id input table = output video table (beyond the paper)
    linear_skip: bool = _DEFAULT.linear_skip  # u = tower(x) + skip(x), skip linear (beyond the paper)
    attn_layers: int = _DEFAULT.attn_layers  # recency="attention": Transformer layers over the watch history
    attn_heads: int = _DEFAULT.attn_heads
    max_history: int = PrepareConfig().history_length  # recency="attention": position embeddings
    seq_head: bool = False  # recency="attention": a linear head on every slot (from candidate.seq_loss_weight > 0)
    # bag | sequence (ytspark.models.sequence); not candidate.encoder's default: "auto" there trains both
    encoder: str = ENCODERS[0]
    query_gap: str = _DEFAULT.query_gap  # session | as_of: the time since the last watch of a query (query_vector)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "demographic_vocab_sizes", tuple(int(v) for v in self.demographic_vocab_sizes))
        if self.n_videos <= N_SPECIAL:
            raise ValueError(f"CandidateConfig.n_videos must exceed 2 (pad + OOV + videos), got {self.n_videos}")
        if self.use_searches and self.n_tokens < 1:
            raise ValueError(f"CandidateConfig.n_tokens must be >= 1 with use_searches, got {self.n_tokens}")
        if len(self.demographic_vocab_sizes) != len(S.DEMOGRAPHIC_COLUMNS):
            raise ValueError(f"CandidateConfig.demographic_vocab_sizes needs {len(S.DEMOGRAPHIC_COLUMNS)} sizes "
                             f"({', '.join(S.DEMOGRAPHIC_COLUMNS)}), got {self.demographic_vocab_sizes}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"CandidateConfig.encoder must be one of {ENCODERS}, got '{self.encoder}'")
        if self.query_gap not in QUERY_GAPS:
            raise ValueError(f"CandidateConfig.query_gap must be one of {QUERY_GAPS}, got '{self.query_gap}'")
        if self.encoder == "sequence" and (not self.use_watches or self.attn_layers < 1 or self.attn_heads < 1
                                           or self.embed_dim % self.attn_heads or self.seq_head):
            raise ValueError("CandidateConfig: encoder='sequence' needs use_watches, attn_layers >= 1, "
                             f"embed_dim ({self.embed_dim}) divisible by attn_heads ({self.attn_heads}), no seq_head")
        if self.recency not in RECENCY_MODES:
            raise ValueError(f"CandidateConfig.recency must be one of {RECENCY_MODES}, got '{self.recency}'")
        if self.recency != "none" and not self.use_watches:
            raise ValueError(f"CandidateConfig.recency='{self.recency}' needs use_watches=True")
        if self.recent_k < 1 or self.tau_days <= 0 or not 0.0 <= self.dropout < 1.0 or self.embed_dim < 1:
            raise ValueError("CandidateConfig: need recent_k >= 1, tau_days > 0, 0 <= dropout < 1, embed_dim >= 1")
        if self.seq_head and self.recency != "attention":
            raise ValueError("CandidateConfig: seq_head (the all-positions loss) needs recency='attention'")
        if self.recency == "attention" and (self.attn_layers < 1 or self.attn_heads < 1 or self.max_history < 1
                                            or self.embed_dim % self.attn_heads):
            raise ValueError("CandidateConfig: recency='attention' needs attn_layers >= 1, max_history >= 1 and "
                             f"embed_dim ({self.embed_dim}) divisible by attn_heads ({self.attn_heads})")
        if not (self.use_watches or self.use_searches or self.use_demographics or self.use_example_age):
            raise ValueError("CandidateConfig: every input group is disabled; enable at least one use_* flag")

    def quantile_features(self) -> list[str]:
        """Continuous features the model normalises, i.e. the boundaries it needs."""
        out = []
        if self.use_demographics:
            out.append(S.USER_AGE)
        if self.use_example_age:
            out.append(S.CAND_EXAMPLE_AGE)
        if self.recency in ("last_k", "attention") or self.encoder == "sequence":
            out.append(S.CAND_SINCE_LAST)
        return out


def demographic_dim(vocab_size: int) -> int:
    """Embedding width for a categorical input: ceil(2 log2 V), between 2 and 32."""
    return int(min(32, max(2, math.ceil(2 * math.log2(max(vocab_size, 2))))))


def masked_mean(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Mean of ``table`` rows over non-pad ids: ids [B, H] -> [B, D]; an all-pad row gives zeros."""
    mask = (ids != S.PAD).unsqueeze(-1).to(table.weight.dtype)
    total = (table(ids) * mask).sum(dim=1)
    return total / mask.sum(dim=1).clamp_min(1.0)


class CandidateModel(QuantileModel):
    """User tower + output video table. ``quantiles``: {feature: boundaries} for ``config.quantile_features()``."""

    def __init__(self, config: CandidateConfig, quantiles: Mapping[str, Sequence[float]]):
        super().__init__(config, quantiles, "candidates")
        c = config
        D = c.embed_dim
        width = 0
        self.video_in = nn.Embedding(c.n_videos, D, padding_idx=S.PAD) if c.use_watches else None
        width += D if c.use_watches else 0
        self.token_in = nn.Embedding(c.n_tokens, D, padding_idx=S.PAD) if c.use_searches else None
        width += D if c.use_searches else 0
        self.demo_in = nn.ModuleList(
            nn.Embedding(v, demographic_dim(v), padding_idx=S.PAD) for v in c.demographic_vocab_sizes
        ) if c.use_demographics else None
        width += (sum(demographic_dim(v) for v in c.demographic_vocab_sizes) + 3) if c.use_demographics else 0
        width += 3 if c.use_example_age else 0
        self.out_emb = nn.Parameter(torch.empty(c.n_videos, D))
        self.out_bias = nn.Parameter(torch.zeros(c.n_videos))
        if c.encoder == "sequence":
            self.seq = SequenceEncoder(D, c.attn_layers, c.attn_heads, c.max_history, width - D + 3, c.dropout)
            self.tower, self.skip, self.input_width = None, None, width
            self.reset_embeddings()
            if c.tie_embeddings:
                self.video_in.weight = self.out_emb
            return
        width += (c.recent_k * D + 3) if c.recency == "last_k" else 0
        width += D if c.recency == "weighted" else 0
        width += (D + 3) if c.recency == "attention" else 0
        if c.recency == "attention":
            self.position = nn.Embedding(c.max_history, D)
            layer = nn.TransformerEncoderLayer(D, c.attn_heads, dim_feedforward=2 * D, dropout=c.dropout,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, c.attn_layers, enable_nested_tensor=False)
            self.encoder_norm = nn.LayerNorm(D)
            if c.seq_head:
                self.seq_proj = nn.Linear(D, D)
        if c.recency == "weighted":
            log_tau = torch.tensor(math.log(c.tau_days))
            if c.learn_tau:
                self.log_tau = nn.Parameter(log_tau)
            else:
                self.register_buffer("log_tau", log_tau)
        self.input_width = width
        self.tower = relu_tower(width, c.hidden, c.dropout, D)
        self.skip = nn.Linear(self.input_width, D, bias=False) if c.linear_skip and c.hidden else None
        if self.skip is not None:  # the tower starts at 0: training begins from the linear model
            nn.init.zeros_(self.tower[-1].weight)
            nn.init.zeros_(self.tower[-1].bias)
        self.reset_embeddings()
        if c.tie_embeddings and self.video_in is not None:
            self.video_in.weight = self.out_emb  # one table: history inputs and softmax outputs

    def reset_embeddings(self) -> None:
        """N(0, 1/D) for every embedding table (pad rows of input tables zero), output bias 0."""
        std = 1.0 / math.sqrt(self.config.embed_dim)
        with torch.no_grad():
            for emb in [self.video_in, self.token_in, *(self.demo_in or [])]:
                if emb is not None:
                    emb.weight.normal_(0.0, std)
                    emb.weight[S.PAD].zero_()
            self.out_emb.normal_(0.0, std)
            self.out_bias.zero_()

    def tower_inputs(self, batch: CandidateBatch) -> torch.Tensor:
        """The concatenated tower input [B, input_width]."""
        c, parts = self.config, []
        if c.use_watches:
            parts.append(masked_mean(self.video_in, batch.watch_hist))
        if c.use_searches:
            parts.append(masked_mean(self.token_in, batch.search_hist))
        if c.use_demographics:
            parts += [emb(batch.demographics[:, i]) for i, emb in enumerate(self.demo_in)]
            parts.append(self.norm.powers(S.USER_AGE, batch.user_age))
        if c.use_example_age:
            parts.append(self.norm.powers(S.CAND_EXAMPLE_AGE, batch.example_age_days))
        if c.recency == "last_k":
            parts.append(self._last_k(batch.watch_hist))
            parts.append(self.norm.powers(S.CAND_SINCE_LAST, batch.since_last_watch_days))
        if c.recency == "weighted":
            parts.append(self._recency_weighted(batch.watch_hist, batch.watch_hist_age))
        if c.recency == "attention":
            parts.append(self._attention(batch.watch_hist))
            parts.append(self.norm.powers(S.CAND_SINCE_LAST, batch.since_last_watch_days))
        return torch.cat(parts, dim=1)

    def _encode(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, H] most-recent-first ids -> (states [B, H', D], pad [B, H']) of the causal encoder.

        Slot j attends to the non-pad slots k >= j (itself and older watches); a
        pad slot attends only to itself, so no row is fully masked (no nan) and
        pads never reach a real slot. State j summarises the history up to watch j.
        """
        hist = hist[:, :self.config.max_history]
        pad = hist == S.PAD
        L = hist.shape[1]
        x = self.video_in(hist) * math.sqrt(self.config.embed_dim) + self.position.weight[:L]
        x = x * (~pad).unsqueeze(-1).to(x.dtype)
        j = torch.arange(L, device=hist.device)
        older = j.unsqueeze(0) >= j.unsqueeze(1)  # [q, k]: key k is the query's slot or older
        allowed = (older.unsqueeze(0) & ~pad.unsqueeze(1)) | torch.eye(L, dtype=torch.bool, device=hist.device)
        mask = (~allowed).repeat_interleave(self.config.attn_heads, dim=0)  # [B * heads, L, L], True = blocked
        return self.encoder_norm(self.encoder(x, mask=mask)), pad

    def _attention(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, H] most-recent-first ids -> [B, D]: the encoder's state at slot 0; all-pad rows -> zeros."""
        states, pad = self._encode(hist)
        return states[:, 0] * (~pad[:, 0]).unsqueeze(-1).to(states.dtype)

    def sequence_states(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All-positions training (recency="attention", seq_head): (u_seq [N, D], next_ids [N]).

        For every history slot j >= 1 whose next watch (slot j - 1) is a real
        video, ``seq_proj`` of the causal state at slot j and the id of slot j - 1:
        the history's own next-watch transitions, each seeing only older watches.
        """
        if not self.config.seq_head:
            raise ValueError("sequence_states needs CandidateConfig(recency='attention', seq_head=True)")
        states, pad = self._encode(hist)
        hist = hist[:, :states.shape[1]]
        nxt = hist[:, :-1]
        keep = ~pad[:, 1:] & (nxt >= N_SPECIAL)
        return self.seq_proj(states[:, 1:][keep]), nxt[keep]

    def _last_k(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, H] most-recent-first ids -> [B, k*D]: slot j is the j-th most recent watch (zeros if pad)."""
        k = self.config.recent_k
        ids = hist[:, :k]
        if ids.shape[1] < k:
            ids = nn.functional.pad(ids, (0, k - ids.shape[1]), value=S.PAD)
        mask = (ids != S.PAD).unsqueeze(-1).to(self.video_in.weight.dtype)
        return (self.video_in(ids) * mask).flatten(1)

    def _recency_weighted(self, hist: torch.Tensor, age_days: torch.Tensor) -> torch.Tensor:
        """Σ w_h e_h with w ∝ exp(-age_h / tau) over non-pad slots -> [B, D]; all-pad -> zeros."""
        valid = hist != S.PAD
        logits = (-age_days.to(self.log_tau.dtype) / self.log_tau.exp()).masked_fill(~valid, float("-inf"))
        logits = logits.masked_fill(~valid.any(dim=1, keepdim=True), 0.0)  # all-pad rows: no nan from softmax
        w = torch.softmax(logits, dim=1) * valid.to(logits.dtype)
        return (w.unsqueeze(-1) * self.video_in(hist)).sum(dim=1)

    def user_vector(self, batch: CandidateBatch) -> torch.Tensor:
        """User vectors u [B, D] of training examples, with their own inputs; queries (serving, evaluation,
        validation) go through :meth:`query_vector`, with example_age_days 0 (``batch_from_numpy(serving=True)``
        or validation rows)."""
        if self.config.encoder == "sequence":
            return self.seq.user_vector(self, batch)
        x = self.tower_inputs(batch)
        return self.tower(x) if self.skip is None else self.tower(x) + self.skip(x)

    def query_vector(self, batch: CandidateBatch) -> torch.Tensor:
        """User vectors u [B, D] of queries (serving, evaluation, validation, the ranker's candidates): as
        :meth:`user_vector`, with the time since the last watch set by ``config.query_gap``. "session": 0 for
        every user with a watch, the watch that continues the user's last session (the log's next watch, the
        leave-last-out target); "as_of": the batch's own, from the last watch to the query's time (at serving
        the run date: a return visit then). Training examples keep their own gaps (:meth:`user_vector`)."""
        if self.config.query_gap == "session":
            s = batch.since_last_watch_days
            batch = replace(batch, since_last_watch_days=torch.where(s >= 0, torch.zeros_like(s), s))
        return self.user_vector(batch)

    @property
    def query_reads_time(self) -> bool:
        """Whether :meth:`query_vector` depends on the query's time beyond the events before it: only when it
        reads the time since the last watch (the features it normalises) and ``query_gap = "as_of"``. With
        "session" that gap is 0 and example age is 0 at serving, and history ages are read through their
        differences only (the sequence encoder's gaps, the softmax of ``recency = "weighted"``), so two queries
        of one user with the same events before them get the same vector and callers may compute it once
        (:func:`ytspark.features.asof.distinct_queries`)."""
        return self.config.query_gap == "as_of" and S.CAND_SINCE_LAST in self.config.quantile_features()

    def forward(self, batch: CandidateBatch) -> torch.Tensor:
        return self.user_vector(batch)

    def logits_full(self, u: torch.Tensor) -> torch.Tensor:
        """u [B, D] -> logits [B, V] = u @ out_emb.T + out_bias, with pad 0 and OOV 1 at -inf."""
        logits = u @ self.out_emb.T + self.out_bias
        logits[:, :N_SPECIAL] = float("-inf")
        return logits

    @torch.no_grad()
    def video_embeddings(self, fold_bias: bool = False) -> torch.Tensor:
        """Export table, row = vocab index, CPU float32: [V, D] (out_emb), or [V, D+1] = [v, b] with fold_bias.

        Rows 0 and 1 (pad, OOV) are zero; leave them out of the search index.
        """
        v = self.out_emb.detach().float().cpu().clone()
        if fold_bias:
            v = torch.cat([v, self.out_bias.detach().float().cpu().unsqueeze(1)], dim=1)
        v[:N_SPECIAL] = 0.0
        return v

    @torch.no_grad()
    def video_biases(self) -> torch.Tensor:
        """out_bias [V] CPU float32 (0 for rows 0 and 1)."""
        b = self.out_bias.detach().float().cpu().clone()
        b[:N_SPECIAL] = 0.0
        return b

    @staticmethod
    def fold_user(u: torch.Tensor) -> torch.Tensor:
        """u [B, D] -> [B, D+1] = [u, 1], so fold_user(u) @ video_embeddings(fold_bias=True).T = logits."""
        return torch.cat([u, torch.ones_like(u[:, :1])], dim=1)

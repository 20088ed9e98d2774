"""The candidate-generation network as a training :class:`~ytspark.train.loop.Task`.

Reads ``<prepared>/candidates/{train,val}`` and the prepared vocabularies and
quantiles; trains with sampled softmax (negatives from Q ∝ label-count^alpha,
logQ-corrected, accidental hits removed; the exact softmax when the
vocabulary is smaller than ``num_sampled``); validates with the full softmax
(HR@K, NDCG@K, MRR over the whole catalogue, the history's videos excluded)
and exports the user tower, the video table and bias, vocabularies and
quantiles, and the co-visitation table of the training rows with its fusion
weight chosen on the validation rows (:mod:`ytspark.models.covisit`).
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from ytspark import schema as S
from ytspark.config import Config
from ytspark.models.candidate import CandidateConfig, CandidateModel
from ytspark.models.covisit import CoVisitation, build_covisitation, check_params, choose_weight
from ytspark.models.features import CANDIDATE_FIELDS, batch_from_numpy
from ytspark.models.losses import UnigramSampler, full_softmax_loss, sampled_softmax_loss
from ytspark.models.metrics import hit_rate_ndcg
from ytspark.rows import read_split
from ytspark.train.data import read_json

EVAL_CHUNK = 1024


def model_config(cfg: Config, vocab_sizes: dict[str, int], encoder: str = "bag") -> CandidateConfig:
    """The :class:`CandidateConfig` of ``cfg.candidate`` for the prepared vocabulary sizes and ``encoder``."""
    c = cfg.candidate
    return CandidateConfig(
        n_videos=vocab_sizes["video"], n_tokens=vocab_sizes["token"],
        demographic_vocab_sizes=demographic_sizes(vocab_sizes),
        embed_dim=c.embed_dim, hidden=tuple(c.hidden), use_watches=c.use_watches, use_searches=c.use_searches,
        use_demographics=c.use_demographics, use_example_age=c.use_example_age, recency=c.recency,
        recent_k=c.recent_k, tau_days=c.tau_days, dropout=c.dropout,
        tie_embeddings=c.tie_embeddings, linear_skip=c.linear_skip, attn_layers=c.attn_layers, attn_heads=c.attn_heads,
        max_history=cfg.prepare.history_length,
        seq_head=encoder == "bag" and c.recency == "attention" and c.seq_loss_weight > 0, encoder=encoder,
        query_gap=c.query_gap)


def demographic_sizes(vocab_sizes: dict[str, int]) -> tuple[int, ...]:
    """Embedding table sizes of :data:`~ytspark.schema.DEMOGRAPHIC_COLUMNS` (age buckets are fixed, not a vocab)."""
    return tuple(len(S.AGE_BUCKETS) + 2 if col == "age_bucket_idx" else vocab_sizes[col.removesuffix("_idx")]
                 for col in S.DEMOGRAPHIC_COLUMNS)


class SampledSoftmax(nn.Module):
    """forward(batch) -> sampled-softmax loss of ``model`` (the module DDP / the loop calls).

    ``seq_weight`` > 0 (a model with ``seq_head``) adds the all-positions loss:
    the next-watch transitions inside the rows' histories (all of them, or
    ``seq_positions`` drawn at random per batch), each predicted from the
    causal encoder state before it, with the same sampled softmax and negatives.
    """

    def __init__(self, model: CandidateModel, sampler: UnigramSampler, num_sampled: int, seq_weight: float = 0.0,
                 seq_positions: int = 0, seed: int = 0):
        super().__init__()
        self.model, self.sampler, self.num_sampled, self.seq_weight = model, sampler, num_sampled, seq_weight
        self.seq_positions = seq_positions
        self._gen = torch.Generator().manual_seed(seed)

    def forward(self, batch) -> torch.Tensor:
        m = self.model
        loss = sampled_softmax_loss(m.user_vector(batch), m.out_emb, m.out_bias, batch.label, self.sampler,
                                    self.num_sampled)
        if self.seq_weight > 0:
            u_seq, nxt = m.sequence_states(batch.watch_hist)
            if 0 < self.seq_positions < len(nxt):  # a random subset keeps the loss's cost near the main one's
                pick = torch.randperm(len(nxt), generator=self._gen)[:self.seq_positions]
                u_seq, nxt = u_seq[pick], nxt[pick]
            if len(nxt):
                loss = loss + self.seq_weight * sampled_softmax_loss(u_seq, m.out_emb, m.out_bias, nxt,
                                                                     self.sampler, self.num_sampled)
        return loss


@torch.no_grad()
def evaluate_candidates(model: CandidateModel, cols: dict, ks=(10, 50, 100)) -> dict:
    """Full-softmax metrics of ``model`` on candidate rows: HR@K, NDCG@K, MRR (history excluded), loss."""
    n = len(cols[S.CAND_LABEL])
    losses = []
    out: dict[str, float] = {}
    sums: dict[str, float] = {}
    for lo in range(0, n, EVAL_CHUNK):
        chunk = {k: v[lo:lo + EVAL_CHUNK] for k, v in cols.items()}
        batch = batch_from_numpy(chunk)
        u = model.query_vector(batch)
        losses.append(float(full_softmax_loss(u, model.out_emb, model.out_bias, batch.label)) * len(batch))
        scores = model.logits_full(u)
        m = hit_rate_ndcg(scores, batch.label, ks, exclude=list(batch.watch_hist))
        for k, v in m.items():
            if k != "n":
                sums[k] = sums.get(k, 0.0) + v * len(batch)
    for k, v in sums.items():
        out[k] = v / max(n, 1)
    out["loss"] = sum(losses) / max(n, 1)
    return out


class CandidateTask:
    """Candidate generation on a prepared directory with the settings of ``cfg``."""

    kind = "candidate"
    fields = CANDIDATE_FIELDS
    val_fields = CANDIDATE_FIELDS
    encoder = "bag"

    def __init__(self, cfg: Config, prepared: str):
        self.cfg, self.prepared = cfg, prepared.rstrip("/")
        self.manifest = read_json(f"{self.prepared}/manifest.json")
        self.quantiles = read_json(f"{self.prepared}/quantiles.json")["candidates"]
        self.vocab_sizes = dict(self.manifest["vocab_sizes"])
        self.config = model_config(cfg, self.vocab_sizes, self.encoder)
        self.monitor = f"hr@{cfg.candidate.eval_k}"
        c = cfg.candidate
        check_params(c.covisit_window, c.covisit_top_m, c.covisit_recent_k, c.covisit_decay, c.covisit_weights)
        self._label_counts: np.ndarray | None = None

    def train_path(self) -> str:
        return f"{self.prepared}/candidates/train"

    def val_path(self) -> str:
        return f"{self.prepared}/candidates/val"

    def train_rows(self) -> int:
        n = int(self.manifest["candidates"]["train"])
        if n == 0:
            raise ValueError(f"{self.train_path()} has no rows: prepare found no training watches "
                             "(each user needs 3+ watches)")
        return n

    def fingerprint(self) -> dict:
        return {"prepared": self.prepared, "window_end": self.manifest.get("window_end"),
                "model": self.config.to_dict(), "rows": self.manifest["candidates"]}

    def label_counts(self) -> np.ndarray:
        """Count of each video idx as a training label (the sampler's proposal)."""
        if self._label_counts is None:
            import pyarrow.dataset as ds

            from ytspark.rows import dataset_url

            url = dataset_url(self.train_path())
            src = url[len("file://"):] if url.startswith("file://") else url
            labels = ds.dataset(src, format="parquet").to_table(columns=[S.CAND_LABEL])[S.CAND_LABEL].to_numpy()
            self._label_counts = np.bincount(labels, minlength=self.config.n_videos).astype(np.float64)
        return self._label_counts

    def build_model(self) -> CandidateModel:
        return CandidateModel(self.config, self.quantiles)

    def loss_module(self, model: CandidateModel, rank: int) -> nn.Module:
        c = self.cfg.candidate
        sampler = UnigramSampler(self.label_counts(), alpha=c.sampler_alpha, seed=self.cfg.train.seed + rank)
        return SampledSoftmax(model, sampler, c.num_sampled, c.seq_loss_weight if self.config.seq_head else 0.0,
                              c.seq_positions, seed=self.cfg.train.seed + rank)

    def to_batch(self, cols: dict):
        return batch_from_numpy(cols)

    def evaluate(self, model: CandidateModel, val_cols: dict) -> dict:
        k = self.cfg.candidate.eval_k
        return evaluate_candidates(model, val_cols, ks=tuple(sorted({k, 10, 50})))

    def covisitation(self, model: CandidateModel) -> tuple[CoVisitation | None, dict]:
        """(the co-visitation table of the training rows with its weight chosen on the validation rows,
        its MODEL.json entry); (None, {"weight": 0.0}) when ``candidate.covisit_weights`` is empty or all 0."""
        c = self.cfg.candidate
        if not any(w > 0 for w in c.covisit_weights):
            return None, {"weight": 0.0}
        tr = read_split(f"{self.prepared}/candidates/train", [S.CAND_WATCH_HIST, S.CAND_LABEL])
        cv = build_covisitation(tr[S.CAND_WATCH_HIST], tr[S.CAND_LABEL], self.config.n_videos, c.covisit_window,
                                c.covisit_top_m, c.covisit_recent_k, c.covisit_decay)
        del tr
        weight, table = 0.0, {}
        if int(self.manifest["candidates"].get("val", 0)):
            val = read_split(self.val_path(), self.val_fields)
            was = model.training
            model.eval()
            with torch.no_grad():
                def logits(a: int, b: int) -> np.ndarray:
                    batch = batch_from_numpy({k: v[a:b] for k, v in val.items()})
                    return model.logits_full(model.query_vector(batch)).numpy()

                weight, table = choose_weight(cv, logits, val[S.CAND_WATCH_HIST], val[S.CAND_LABEL],
                                              c.covisit_weights, c.eval_k, EVAL_CHUNK)
            model.train(was)
        cv = cv.with_weight(weight)
        entry = {**cv.meta(), "window": c.covisit_window, "top_m": c.covisit_top_m,
                 f"val_hr@{c.eval_k}": {str(w): round(v, 5) for w, v in table.items()}}
        return (cv if weight > 0 else None), entry

    def export(self, model: CandidateModel) -> tuple[dict, dict, dict]:
        arrays = {"video_embeddings": model.video_embeddings().numpy(),
                  "video_bias": model.video_biases().numpy()}
        cv, cv_entry = self.covisitation(model)
        if cv is not None:
            arrays.update(cv.arrays())
        vocab = {f"vocab/{name}.json": read_json(f"{self.prepared}/vocab/{name}.json") for name in S.VOCAB_NAMES}
        files = {**vocab, "quantiles.json": self.quantiles}
        meta = {"model_config": self.config.to_dict(),
                "train_config": {"candidate": asdict(self.cfg.candidate), "train": asdict(self.cfg.train)},
            "prepared": self.prepared, "vocab_sizes": self.vocab_sizes, "monitor": self.monitor,
            "window_end": self.manifest.get("window_end"), "covisit": cv_entry}
        return arrays, files, meta

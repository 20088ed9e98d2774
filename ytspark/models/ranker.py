"""The ranking network (paper section 4): impression features -> one logit; exp(logit) ~ expected watch time.

Inputs, concatenated (each group switchable for ablations):

- ``use_video``: the impression video's embedding;
- ``use_watches``: masked mean of the user's watched ids' embeddings (pad 0
  contributes nothing; an OOV watch counts in the mean with a zero vector);
  the impression id and the watched ids share ONE table (same id space as the
  candidate model, :meth:`RankerModel.init_video_embeddings` can copy it);
- ``use_affinity`` (beyond the paper): the dot product of the impression
  video's embedding with the watch mean, a one-number user-video match that a
  ReLU tower finds hard to learn from the two vectors alone;
- ``use_language``: user language and video language, one shared table, plus
  a same-language indicator (1 when both are known and equal);
- ``use_channel`` / ``use_category``: the video's channel / category embedding
  and how many videos the user watched from it and how long ago;
- ``use_recency``: days since the user's last watch, previous impressions of
  this video to this user;
- ``use_video_age``: days since upload;
- ``use_source``: candidate source embedding and its retrieval score.

Every categorical table maps pad (0) and OOV (1) to an exactly zero vector
(:class:`ZeroOOVEmbedding`: a mask, so whatever the weights of rows 0 and 1).
Widths of non-video tables grow with log2 of the vocabulary
(:func:`~ytspark.models.candidate.demographic_dim`). Continuous features are
normalised by :class:`~ytspark.models.features.QuantileNormalizer` built from
``quantiles.json ["ranking"]`` and fed as (x̃, x̃², √x̃). A ReLU tower ends in
one linear unit: the logit.

Trained with :func:`weighted_logistic_loss` (clicked rows weighted by watch
seconds, unclicked by 1), the odds exp(logit) learn Σ T_i / (N - k) over
impressions alike in their features (k of N clicked): E[T] / (1 - P(click)),
≈ E[T] when clicks are rare. Serving score: :meth:`RankerModel.expected_watch_time`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ytspark import schema as S
from ytspark.models.candidate import demographic_dim, masked_mean
from ytspark.models.features import QuantileNormalizer
from ytspark.models.rank_features import RankBatch

N_SPECIAL = 2  # pad 0 and OOV 1
# Continuous features of each switchable group, in RANK_CONTINUOUS names.
GROUP_CONTINUOUS = {
    "use_recency": ("since_last_watch_days", "n_prev_impressions"),
    "use_channel": ("channel_watches", "since_channel_watch_days"),
    "use_category": ("category_watches", "since_category_watch_days"),
    "use_video_age": ("video_age_days",),
    "use_source": ("retrieval_score",),
}


@dataclass(frozen=True)
class RankerConfig:
    """Shape and inputs of :class:`RankerModel`; vocabulary sizes include pad and OOV (``len(Vocab)``)."""

    n_videos: int
    n_languages: int
    n_channels: int
    n_categories: int
    n_sources: int
    embed_dim: int = 32  # video id embedding width
    hidden: tuple[int, ...] = (1024, 512, 256)
    use_video: bool = True
    use_watches: bool = True
    use_affinity: bool = True
    use_language: bool = True
    use_channel: bool = True
    use_category: bool = True
    use_recency: bool = True
    use_video_age: bool = True
    use_source: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.n_videos <= N_SPECIAL:
            raise ValueError(f"RankerConfig.n_videos must exceed 2 (pad + OOV + videos), got {self.n_videos}")
        for name in ("n_languages", "n_channels", "n_categories", "n_sources"):
            if getattr(self, name) < N_SPECIAL:
                raise ValueError(f"RankerConfig.{name} must be >= 2 (pad + OOV, i.e. len(Vocab)), "
                                 f"got {getattr(self, name)}")
        if self.embed_dim < 1 or not 0.0 <= self.dropout < 1.0 or any(h < 1 for h in self.hidden):
            raise ValueError("RankerConfig: need embed_dim >= 1, 0 <= dropout < 1 and hidden widths >= 1")
        if self.use_affinity and not (self.use_video and self.use_watches):
            raise ValueError("RankerConfig.use_affinity needs use_video=True and use_watches=True")
        if not any(getattr(self, f) for f in self.__dataclass_fields__ if f.startswith("use_")):
            raise ValueError("RankerConfig: every input group is disabled; enable at least one use_* flag")

    @classmethod
    def from_vocab_sizes(cls, sizes: Mapping[str, int], **kw) -> "RankerConfig":
        """From the manifest's ``vocab_sizes`` (keys video, language, channel, category, source)."""
        missing = [k for k in ("video", "language", "channel", "category", "source") if k not in sizes]
        if missing:
            raise KeyError(f"RankerConfig.from_vocab_sizes: no size for {missing}; pass manifest['vocab_sizes']")
        return cls(n_videos=sizes["video"], n_languages=sizes["language"], n_channels=sizes["channel"],
                   n_categories=sizes["category"], n_sources=sizes["source"], **kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "RankerConfig":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise KeyError(f"RankerConfig: unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def quantile_features(self) -> list[str]:
        """Continuous features the model normalises, i.e. the boundaries it needs, in RANK_CONTINUOUS order."""
        used = {f for flag, feats in GROUP_CONTINUOUS.items() if getattr(self, flag) for f in feats}
        return [f for f in S.RANK_CONTINUOUS if f in used]


class ZeroOOVEmbedding(nn.Embedding):
    """An embedding whose pad (0) and OOV (1) ids give exactly zero vectors, whatever rows 0 and 1 hold."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * (ids >= N_SPECIAL).unsqueeze(-1).to(self.weight.dtype)


class RankerModel(nn.Module):
    """Impression -> logit. ``quantiles``: {feature: boundaries} for ``config.quantile_features()``."""

    def __init__(self, config: RankerConfig, quantiles: Mapping[str, Sequence[float]]):
        super().__init__()
        c = self.config = config
        missing = [f for f in c.quantile_features() if f not in quantiles]
        if missing:
            raise KeyError(f"RankerModel: no quantile boundaries for {missing}; pass "
                           "quantiles.json ['ranking'] from prepare")
        self.norm = QuantileNormalizer({f: quantiles[f] for f in c.quantile_features()})
        D = c.embed_dim

        def table(v: int, dim: int, on: bool) -> ZeroOOVEmbedding | None:
            return ZeroOOVEmbedding(v, dim, padding_idx=S.PAD) if on else None

        self.video_emb = table(c.n_videos, D, c.use_video or c.use_watches)
        self.language_emb = table(c.n_languages, demographic_dim(c.n_languages), c.use_language)
        self.channel_emb = table(c.n_channels, demographic_dim(c.n_channels), c.use_channel)
        self.category_emb = table(c.n_categories, demographic_dim(c.n_categories), c.use_category)
        self.source_emb = table(c.n_sources, demographic_dim(c.n_sources), c.use_source)
        width = D * (int(c.use_video) + int(c.use_watches)) + int(c.use_affinity)
        width += (2 * demographic_dim(c.n_languages) + 1) if c.use_language else 0
        for emb in (self.channel_emb, self.category_emb, self.source_emb):
            width += emb.embedding_dim if emb is not None else 0
        width += 3 * len(c.quantile_features())
        self.input_width = width
        layers: list[nn.Module] = []
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if c.dropout > 0:
                layers.append(nn.Dropout(c.dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.tower = nn.Sequential(*layers)
        self.reset_embeddings()

    def reset_embeddings(self) -> None:
        """N(0, 1/dim) for every embedding table, rows 0 and 1 zero."""
        with torch.no_grad():
            for emb in (self.video_emb, self.language_emb, self.channel_emb, self.category_emb, self.source_emb):
                if emb is not None:
                    emb.weight.normal_(0.0, 1.0 / math.sqrt(emb.embedding_dim))
                    emb.weight[:N_SPECIAL].zero_()

    def tower_inputs(self, batch: RankBatch) -> torch.Tensor:
        """The concatenated tower input [B, input_width]."""
        c, parts = self.config, []
        if c.use_video:
            v = self.video_emb(batch.video_idx)
            parts.append(v)
        if c.use_watches:
            w = masked_mean(self.video_emb, batch.watch_hist)
            parts.append(w)
        if c.use_affinity:
            parts.append((v * w).sum(dim=1, keepdim=True))
        if c.use_language:
            ul, vl = batch.language_idx, batch.video_language_idx
            same = (ul == vl) & (ul >= N_SPECIAL)
            parts += [self.language_emb(ul), self.language_emb(vl), same.unsqueeze(1).to(torch.float32)]
        for emb, ids in ((self.channel_emb, batch.channel_idx), (self.category_emb, batch.category_idx),
                         (self.source_emb, batch.source_idx)):
            if emb is not None:
                parts.append(emb(ids))
        for f in self.norm.names:
            parts.append(self.norm.powers(f, batch.column(f)))
        return torch.cat(parts, dim=1)

    def forward(self, batch: RankBatch) -> torch.Tensor:
        """Logits [B] (float32)."""
        return self.tower(self.tower_inputs(batch)).squeeze(1)

    def expected_watch_time(self, batch: RankBatch) -> torch.Tensor:
        """Serving score exp(logit) [B]: the learned odds Σ T / (N - k), ≈ expected watch seconds."""
        return self(batch).exp()

    @torch.no_grad()
    def init_video_embeddings(self, matrix) -> None:
        """Copy a [n_videos, D'] video table of the same id space (e.g. the candidate model's).

        D' == embed_dim: copied as is. Otherwise projected onto its top
        min(D', embed_dim) right singular vectors (PCA without centring), the
        remaining columns (D' < embed_dim) zero. Rows 0 and 1 stay zero.
        """
        if self.video_emb is None:
            raise ValueError("init_video_embeddings: the model has no video table (use_video and use_watches off)")
        m = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, torch.Tensor) else matrix)
        m = m.detach().to(torch.float32).cpu()
        V, D = self.video_emb.weight.shape
        if m.ndim != 2 or m.shape[0] != V:
            raise ValueError(f"init_video_embeddings: matrix must be [n_videos={V}, D'], got {tuple(m.shape)}; "
                             "it must come from the same video vocabulary")
        if m.shape[1] != D:
            k = min(m.shape[1], D)
            _, _, vh = torch.linalg.svd(m[N_SPECIAL:], full_matrices=False)
            m = F.pad(m @ vh[:k].T, (0, D - k))
        m = m.clone()
        m[:N_SPECIAL] = 0.0
        self.video_emb.weight.copy_(m.to(self.video_emb.weight.device, self.video_emb.weight.dtype))


def weighted_logistic_loss(logits: torch.Tensor, clicked: torch.Tensor, weight: torch.Tensor,
                           normalize: str = "weight") -> torch.Tensor:
    """Weighted logistic regression (paper 4.2): Σ w_i · BCE(logit_i, clicked_i) / Σ w_i.

    logits, clicked (0/1), weight [B] -> scalar. ``weight`` is the prepare
    column: watch seconds for clicked rows, 1 for unclicked ones. With
    ``normalize="weight"`` (default) the sum is divided by the batch's total
    weight, so the loss is a weighted mean whose scale does not depend on the
    unit of watch time; ``normalize="rows"`` divides by B instead. Either way
    the minimiser is the same within a batch: for rows alike in their features,
    exp(logit) = Σ_clicked T_i / (N - k). (Per-batch Σ w differs between
    batches, so "weight" slightly reweights batches against each other; with
    large batches this is negligible.) All weights 1 give the plain mean
    logistic loss. An all-zero weight batch gives 0.
    """
    if not (logits.shape == clicked.shape == weight.shape) or logits.ndim != 1:
        raise ValueError(f"weighted_logistic_loss: logits, clicked and weight must all be [B], got "
                         f"{tuple(logits.shape)}, {tuple(clicked.shape)}, {tuple(weight.shape)}")
    if normalize not in ("weight", "rows"):
        raise ValueError(f"weighted_logistic_loss: normalize must be 'weight' or 'rows', got '{normalize}'")
    w = weight.to(logits.dtype)
    per_row = F.binary_cross_entropy_with_logits(logits, clicked.to(logits.dtype), reduction="none")
    total = (w * per_row).sum()
    denom = w.sum().clamp_min(torch.finfo(w.dtype).tiny) if normalize == "weight" else max(len(logits), 1)
    return total / denom

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
≈ E[T] when clicks are rare. Serving order: :meth:`RankerModel.expected_watch_time` (or the retrieval
logit, or a blend of both: ``ranker.objective``, :mod:`ytspark.models.blend`). Serving score: that value through the export's calibration
(:mod:`ytspark.models.score_calibration`, MODEL.json ``calibration``): the odds are not E[T] (0.2-2.3x the
observed watch seconds per impression across the embedded default's deciles), so a map from the logit to the
observed watch seconds per impression, fitted at export, turns it into expected watch seconds. It is fitted on
the training impressions of ``ranker.calibration_share`` of the users, held out of training
(:mod:`ytspark.train.rank_rows`), not on the validation impressions: those lie between a user's last two
watches, so at most one click follows them and their watch time per impression is less than half the log's.
The map is strictly increasing and piecewise log-linear: an isotonic fit on
quantile bins of the logit with enough clicks each, or a two-parameter power law of the odds, whichever has
the lower Poisson deviance cross-fitted over two halves of the held-out users (the report's table is
cross-fitted too, each half scored by the other half's map). Chosen over a click head times a watch-time head: it keeps the
order the ranker was selected for (the ranker's own criterion, 1 - weighted per-user loss, is unchanged:
the map is strictly monotone in the logit and applied to the written score only, never to the order), needs
no second network or retraining, and a product of two heads would need its own calibration anyway, judged
on the same held-out clicks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ytspark import schema as S
from ytspark.config import RankerTrainConfig
from ytspark.models.candidate import demographic_dim, masked_mean
from ytspark.models.base import ModelConfig, QuantileModel, relu_tower
from ytspark.models.rank_features import RankBatch
from ytspark.schema import N_SPECIAL

# Continuous features of each switchable group, in RANK_CONTINUOUS names.
GROUP_CONTINUOUS = {
    "use_recency": ("since_last_watch_days", "n_prev_impressions", "since_impression_days", "prev_impression_clicked"),
    "use_channel": ("channel_watches", "since_channel_watch_days"),
    "use_category": ("category_watches", "since_category_watch_days"),
    "use_video_age": ("video_age_days",),
    "use_source": ("retrieval_score",),
}


_DEFAULT = RankerTrainConfig()  # the [ranker] defaults: one set, in ytspark/config.py


@dataclass(frozen=True)
class RankerConfig(ModelConfig):
    """Shape and inputs of :class:`RankerModel`; vocabulary sizes include pad and OOV (``len(Vocab)``).

    A field named as a ``[ranker]`` key defaults to that key's default (``ytspark.config``); the other
    ``use_*`` switches are model-only ablations, all on.
    """

    n_videos: int
    n_languages: int
    n_channels: int
    n_categories: int
    n_sources: int
    embed_dim: int = _DEFAULT.embed_dim  # video id embedding width
    hidden: tuple[int, ...] = _DEFAULT.hidden  # the paper's (1024, 512, 256): conf/paper.toml
    use_video: bool = True
    use_watches: bool = True
    use_affinity: bool = _DEFAULT.use_affinity
    use_language: bool = True
    use_channel: bool = True
    use_category: bool = True
    use_recency: bool = True
    use_video_age: bool = True
    use_source: bool = True
    dropout: float = _DEFAULT.dropout

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

    def quantile_features(self) -> list[str]:
        """Continuous features the model normalises, i.e. the boundaries it needs, in RANK_CONTINUOUS order."""
        used = {f for flag, feats in GROUP_CONTINUOUS.items() if getattr(self, flag) for f in feats}
        return [f for f in S.RANK_CONTINUOUS if f in used]


class ZeroOOVEmbedding(nn.Embedding):
    """An embedding whose pad (0) and OOV (1) ids give exactly zero vectors, whatever rows 0 and 1 hold."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * (ids >= N_SPECIAL).unsqueeze(-1).to(self.weight.dtype)


class RankerModel(QuantileModel):
    """Impression -> logit. ``quantiles``: {feature: boundaries} for ``config.quantile_features()``."""

    def __init__(self, config: RankerConfig, quantiles: Mapping[str, Sequence[float]]):
        super().__init__(config, quantiles, "ranking")
        c = config
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
        assert sum(w for _, w in self.input_layout()) == width, "input_layout out of step with tower_inputs"
        self.tower = relu_tower(width, c.hidden, c.dropout, 1)
        self.reset_embeddings()

    def reset_embeddings(self) -> None:
        """N(0, 1/dim) for every embedding table, rows 0 and 1 zero."""
        with torch.no_grad():
            for emb in (self.video_emb, self.language_emb, self.channel_emb, self.category_emb, self.source_emb):
                if emb is not None:
                    emb.weight.normal_(0.0, 1.0 / math.sqrt(emb.embedding_dim))
                    emb.weight[:N_SPECIAL].zero_()

    def input_layout(self) -> list[tuple[str, int]]:
        """(segment, width) of the columns of :meth:`tower_inputs`, in order: "video", "watches", "affinity",
        "user_language", "video_language", "same_language", "channel", "category", "source", then one segment
        of 3 (x̃, x̃², √x̃) per continuous feature of ``self.norm.names``; switched-off groups are absent."""
        c, out = self.config, []
        if c.use_video:
            out.append(("video", c.embed_dim))
        if c.use_watches:
            out.append(("watches", c.embed_dim))
        if c.use_affinity:
            out.append(("affinity", 1))
        if c.use_language:
            dl = self.language_emb.embedding_dim
            out += [("user_language", dl), ("video_language", dl), ("same_language", 1)]
        for name, emb in (("channel", self.channel_emb), ("category", self.category_emb), ("source", self.source_emb)):
            if emb is not None:
                out.append((name, emb.embedding_dim))
        return out + [(f, 3) for f in self.norm.names]

    def factorised(self, per_video: Sequence[str] = (), constants: Mapping[str, float] | None = None,
                   source_idx: int | None = None) -> "FactorisedRanker":
        """The serving form of this model: :class:`FactorisedRanker` (a snapshot of the first layer)."""
        return FactorisedRanker(self, per_video, constants, source_idx)

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


# Segments of RankerModel.input_layout() by the side of the (user, video) pair they depend on.
USER_SEGMENTS = ("watches", "user_language", "since_last_watch_days")
VIDEO_SEGMENTS = ("video", "video_language", "channel", "category")
PER_VIDEO_OK = ("video_age_days",)  # continuous features that may be video-side (one as_of for the whole run)


class FactorisedRanker:
    """:class:`RankerModel` with its first layer split by input group: the same logits, fewer FLOPs.

    The first layer is ``h = W x + b`` over x = the concatenation of
    :meth:`RankerModel.tower_inputs`. Splitting W's columns by the inputs'
    dependence, ``W x = W_u x_u + W_v x_v + W_p x_p + W_c x_c`` exactly (a sum
    of products, only reordered), with

    - user side x_u (once per user): watch mean, user language embedding,
      powers of since_last_watch_days;
    - video side x_v (once per video, e.g. for the whole [V] table): video
      embedding, video language, channel and category embeddings, and the
      features of ``per_video`` (video_age_days when one as_of holds for the run);
    - constant x_c, folded into the bias: the source embedding of
      ``source_idx`` (serving: always "candidate") and the powers of the
      features of ``constants`` (any feature known to be constant for the run);
    - pair side x_p (per pair, a few numbers): the affinity dot v·w, the
      same-language flag, and the powers of every other continuous feature
      (channel/category watches and days since, retrieval_score, and
      the impression features, video_age_days unless per-video);
      the source embedding too when ``source_idx`` is None.

    So ``pre = U[user] + P[video] + x_p @ W_p^T`` with U = W_u x_u + W_c x_c + b
    ([B, h1]) and P = W_v x_v ([V, h1]), then :meth:`head` (ReLU and the rest
    of the tower, or the logit itself when ``hidden=()``, where the whole
    logit is additive).

    Multiply-adds per (user, candidate) pair, h1 the first layer width
    (``hidden[0]``, or 1 when ``hidden=()``), n_p the pair-side width
    (:attr:`pair_width`: 26 for the full model at serving: 1 affinity + 1
    same-language + 3 x 8 features; 29 with per-user cut-offs), D the video
    embedding width, R = Σ_i h_i·h_{i+1} + h_last the rest of the tower:

    - factorised: n_p·h1 + 2·h1 (adding U and P) + D (the affinity dot) + R;
    - unfactorised :meth:`RankerModel.forward`: input_width·h1 + R, plus an
      H·D watch mean per pair; input_width = 161 with D = 32 and vocabularies
      of 50 languages, 5000 channels, 30 categories, 6 sources.

    With those sizes (:meth:`macs_per_pair` gives any model's numbers):

    =====================  ===========  =============  =========
    hidden                 factorised   unfactorised   rest R
    =====================  ===========  =============  =========
    (1024, 512, 256)       684,320      820,480        655,616
    (256, 128)             40,096       74,112         32,896
    (128,)                 3,744        20,736         128
    (64,)                  1,888        10,368         64
    ()                     60           161            0
    =====================  ===========  =============  =========

    The first layer's cost becomes negligible; what is left is R, which with
    the paper's (1024, 512, 256) tower is ~97 % of the unfactorised cost, so
    there the factorisation saves only ~17 %: 200 candidates cost 135 M
    multiply-adds per user against ~3.3 M for a 50k-video flat search. Only
    a narrow tower (one hidden layer of ≤ 128: ≤ 0.52 M per user) keeps
    ranking below retrieval.

    Built under ``torch.no_grad``: a snapshot of the first layer's weights
    (embeddings are read from the model when called); build it again after
    the weights change. Call everything under ``torch.no_grad``.
    """

    def __init__(self, model: RankerModel, per_video: Sequence[str] = (), constants: Mapping[str, float] | None = None,
                 source_idx: int | None = None):
        per_video, constants = tuple(per_video), dict(constants or {})
        bad = [f for f in per_video if f not in PER_VIDEO_OK]
        if bad:
            raise ValueError(f"FactorisedRanker: per_video may only hold {PER_VIDEO_OK}, got {bad}")
        bad = [f for f in constants if f not in S.RANK_CONTINUOUS or f in per_video]
        if bad:
            raise ValueError(f"FactorisedRanker: constants must be continuous features not in per_video, got {bad}")
        self.model = m = model
        first = m.tower[0]
        with torch.no_grad():
            W, b = first.weight.detach(), first.bias.detach()
            cols, side_of, off = {}, {}, 0
            for name, width in m.input_layout():
                cols[name] = W[:, off:off + width]
                off += width
                if name in USER_SEGMENTS:
                    side_of[name] = "user"
                elif name in VIDEO_SEGMENTS or name in per_video:
                    side_of[name] = "video"
                elif name in constants or (name == "source" and source_idx is not None):
                    side_of[name] = "constant"
                else:
                    side_of[name] = "pair"
            if off != W.shape[1]:
                raise ValueError(f"FactorisedRanker: layout width {off} != first layer input width {W.shape[1]}")
            self.segments = {s: [n for n in cols if side_of[n] == s] for s in ("user", "video", "pair")}
            self.weights = {s: torch.cat([cols[n] for n in names], 1).T.contiguous() if names else None
                            for s, names in self.segments.items()}  # [segment widths, h1]
            bias = b.to(torch.float32).clone()
            for name in (n for n in cols if side_of[n] == "constant"):
                value = torch.tensor([source_idx if name == "source" else constants[name]],
                                     dtype=torch.int64 if name == "source" else torch.float32)
                bias += (self.encode(name, value) @ cols[name].T)[0]
            self.bias = bias
            # folded continuous constants: their first-layer columns, for pairs where they differ
            self.constant_weights = {n: cols[n].T.contiguous() for n in cols
                                     if side_of[n] == "constant" and n != "source"}
        self.width = int(W.shape[0])
        self.per_video, self.constants, self.source_idx = per_video, constants, source_idx
        self.rest = m.tower[1:]
        self.pair_width = int(self.weights["pair"].shape[0]) if self.weights["pair"] is not None else 0

    def constant_delta(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """[m, h1] to add to the first-layer pre-activations of m pairs whose folded constants (``constants``)
        take the given raw values ([m] each) instead: sum over f of (encode(v_f) - encode(c_f)) W_f, exact
        since the first layer is linear in its inputs. Features that are not folded are ignored; None when
        none is. Serving folds the impression features at "never shown" and corrects the pairs shown before."""
        out = None
        for name, v in values.items():
            w = self.constant_weights.get(name)
            if w is None:
                continue
            v = v.to(torch.float32)
            # the folded constant's encoding once ([1, width]), broadcast over the m pairs
            d = (self.encode(name, v) - self.encode(name, torch.full((1,), self.constants[name],
                                                                     dtype=torch.float32))) @ w
            out = d if out is None else out.add_(d)
        return out

    @property
    def pair_names(self) -> tuple[str, ...]:
        """The pair-side inputs :meth:`pair_part` needs ("affinity", "same_language", "source", feature names)."""
        return tuple(self.segments["pair"])

    def encode(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """One segment's tower input columns [N, width] from its raw value [N] (``watches``: the mean [N, D]).

        A continuous feature's value may also come encoded already, [N, 3] (e.g. powers computed once per
        distinct value and gathered): it is then passed through."""
        m = self.model
        if name in m.norm.names and value.ndim == 2:
            return value
        if name == "video":
            return m.video_emb(value)
        if name == "watches":
            return value
        if name in ("user_language", "video_language"):
            return m.language_emb(value)
        if name in ("channel", "category", "source"):
            return getattr(m, f"{name}_emb")(value)
        if name in ("affinity", "same_language"):
            return value.to(torch.float32).reshape(-1, 1)
        return m.norm.powers(name, value)

    def _part(self, side: str, values: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        names = self.segments[side]
        if not names:
            return None
        missing = [n for n in names if n not in values]
        if missing:
            raise KeyError(f"FactorisedRanker: {side}-side input(s) {missing} missing")
        x = torch.cat([self.encode(n, values[n]) for n in names], dim=1)
        return x @ self.weights[side]

    def pair_inputs(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """[N, pair_width] pair-side tower inputs from raw per-pair values of :attr:`pair_names` (None: none)."""
        names = self.segments["pair"]
        if not names:
            return None
        missing = [n for n in names if n not in values]
        if missing:
            raise KeyError(f"FactorisedRanker: pair-side input(s) {missing} missing")
        return torch.cat([self.encode(n, values[n]) for n in names], dim=1)

    def user_part(self, watch_hist: torch.Tensor | None, language_idx: torch.Tensor | None,
                  since_last_watch_days: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(U [B, h1]: user side + constant + bias, w [B, D] the watch mean or None). Unused inputs may be None."""
        c = self.model.config
        w = masked_mean(self.model.video_emb, watch_hist) if c.use_watches else None
        B = next(int(t.shape[0]) for t in (watch_hist, language_idx, since_last_watch_days) if t is not None)
        part = self._part("user", {"watches": w, "user_language": language_idx,
                                   "since_last_watch_days": since_last_watch_days})
        U = self.bias.expand(B, self.width).clone() if part is None else part.add_(self.bias)
        return U, w

    def video_part(self, video_idx: torch.Tensor, video_language_idx: torch.Tensor | None = None,
                   channel_idx: torch.Tensor | None = None, category_idx: torch.Tensor | None = None,
                   video_age_days: torch.Tensor | None = None) -> torch.Tensor | None:
        """P [N, h1]: the video side of N videos (None when the model has no video-side input)."""
        return self._part("video", {"video": video_idx, "video_language": video_language_idx,
                                    "channel": channel_idx, "category": category_idx,
                                    "video_age_days": video_age_days})

    def pair_part(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """x_p W_p^T [N, h1] from raw per-pair values of :attr:`pair_names` (None when there are none)."""
        x = self.pair_inputs(values)
        return None if x is None else x @ self.weights["pair"]

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        """First-layer pre-activations [N, h1] -> logits [N] (ReLU and the rest of the tower; in place on pre)."""
        rest = self.rest
        if len(rest) and isinstance(rest[0], nn.ReLU):
            pre, rest = torch.relu_(pre), rest[1:]
        for layer in rest:
            pre = layer(pre)
        return pre.squeeze(1)

    def forward(self, batch: RankBatch) -> torch.Tensor:
        """Logits [B] of a RankBatch through the factorised first layer: equal to ``model(batch)`` (float
        rounding aside) when the batch's ``constants`` columns (and source_idx, if fixed) hold the fixed values."""
        m, c = self.model, self.model.config
        U, w = self.user_part(batch.watch_hist, batch.language_idx, batch.column("since_last_watch_days"))
        pre = U
        P = self.video_part(batch.video_idx, batch.video_language_idx, batch.channel_idx, batch.category_idx,
                            batch.column("video_age_days"))
        if P is not None:
            pre = pre + P
        values: dict[str, torch.Tensor] = {f: batch.column(f) for f in S.RANK_CONTINUOUS}
        values["source"] = batch.source_idx
        if c.use_affinity:
            values["affinity"] = (m.video_emb(batch.video_idx) * w).sum(dim=1)
        if c.use_language:
            ul, vl = batch.language_idx, batch.video_language_idx
            values["same_language"] = (ul == vl) & (ul >= N_SPECIAL)
        x = self.pair_inputs(values)
        if x is not None:
            pre = torch.addmm(pre, x, self.weights["pair"])
        return self.head(pre)

    __call__ = forward

    def macs_per_pair(self) -> dict[str, int]:
        """Multiply-adds per (user, candidate) pair: {"factorised", "full", "rest"} (``rest``: the tower after
        the first layer; "factorised" counts n_p·h1 + 2·h1 + D·[affinity] + rest, "full" input_width·h1 + rest,
        embedding gathers and the watch mean left out of both)."""
        widths = [self.width] + [layer.out_features for layer in self.rest if isinstance(layer, nn.Linear)]
        rest = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        aff = self.model.config.embed_dim if "affinity" in self.segments["pair"] else 0
        return {"factorised": self.pair_width * self.width + 2 * self.width + aff + rest,
                "full": self.model.input_width * self.width + rest, "rest": rest}


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

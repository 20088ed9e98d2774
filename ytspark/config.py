"""Typed configuration: TOML files in ``conf/`` plus ``--set section.key=value`` overrides.

``load_config(profile="local", overrides=["prepare.max_examples_per_user=50"])``
reads ``conf/default.toml``, then ``conf/<profile>.toml`` on top, then the
overrides, and checks every key and value against the dataclasses below. A
wrong key or type raises :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONF_DIR = Path(os.environ.get("YTSPARK_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"  # ignored when spark-submit already set --master
    app_name: str = "ytspark"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    local_dir: str = ""  # spark.local.dir; empty = Spark's default
    log_level: str = "WARN"
    extra: dict[str, str] = field(default_factory=dict)  # any other spark.* settings


@dataclass(frozen=True)
class DataConfig:
    events: str = ""  # path/URL of the events table; empty = generate synthetic data
    users: str = ""
    videos: str = ""
    format: str = "auto"  # auto | parquet | jsonl | csv
    output: str = "out"  # root of everything ytspark writes
    root: str = ""  # when set, every relative path must stay inside it (no '..' escape)


@dataclass(frozen=True)
class GenerateConfig:
    users: int = 5000
    videos: int = 3000
    channels: int = 300
    categories: int = 20
    days: int = 60
    visits_per_user: float = 12.0  # mean visits per user over the window
    seed: int = 42
    partitions: int = 8
    start_date: str = "2026-01-01"


@dataclass(frozen=True)
class ValidateConfig:
    max_reject_share: float = 0.05  # fail when more than this share of a table is rejected
    max_watch_seconds: float = 86400.0  # longer watches are absurd
    max_watch_over_duration: float = 3.0  # watch_seconds / video_seconds above this is absurd
    future_tolerance_seconds: float = 86400.0  # timestamps after now + this are in the future
    as_of: str = ""  # ISO date used as "now" for the future check; empty = wall clock


@dataclass(frozen=True)
class PrepareConfig:
    history_length: int = 50  # last-N watched ids and last-N search tokens
    max_examples_per_user: int = 100  # fixed cap of candidate rows per user (paper 3.4)
    example_sampling: str = "recent"  # recent | uniform (seeded)
    completed_fraction: float = 0.5  # watch_seconds / video_seconds to count as a positive
    video_min_count: int = 1
    video_top_k: int = 1_000_000
    token_min_count: int = 2
    token_top_k: int = 200_000
    categorical_min_count: int = 1
    quantiles: int = 20  # boundaries for continuous features
    quantile_rel_error: float = 0.001
    target_shards: int = 2  # training ranks the output is sized for
    row_groups_per_shard: int = 4
    seed: int = 7


@dataclass(frozen=True)
class TrainConfig:
    """How both networks are trained: the launcher and its ranks, checkpoints, early stopping."""

    launcher: str = "local"  # local | horovod-spark | horovodrun | torch-distributor
    num_proc: int = 1  # data-parallel ranks (ignored by launcher=local, which runs one)
    threads_per_proc: int = 0  # torch intra-op threads per rank; 0 = cores / num_proc
    reader_workers: int = 2  # Petastorm reader threads per rank
    shuffle_buffer: int = 20000  # rows mixed across row groups before batching
    patience: int = 3  # epochs without a better validation metric before stopping
    steps_per_epoch: int = 0  # cap on steps per epoch on every rank; 0 = one pass over the training rows
    progress: bool = True  # progress bar on rank 0
    seed: int = 11


@dataclass(frozen=True)
class CandidateTrainConfig:
    """The candidate-generation network (paper section 3) and its optimisation."""

    embed_dim: int = 64
    hidden: tuple[int, ...] = (1024, 512, 256)
    use_watches: bool = True
    use_searches: bool = True
    use_demographics: bool = True
    use_example_age: bool = True
    recency: str = "last_k"  # none (the paper's plain mean) | last_k | weighted | attention
    recent_k: int = 5
    tau_days: float = 7.0
    dropout: float = 0.0
    tie_embeddings: bool = False  # one video table for history inputs and softmax outputs (beyond the paper)
    linear_skip: bool = False  # u = tower(x) + linear(x): a deep tower that can fall back to the linear model
    attn_layers: int = 2  # recency = "attention": self-attention layers over the watch history
    attn_heads: int = 2
    seq_loss_weight: float = 0.0  # recency = "attention": weight of the all-positions (SASRec-style) loss
    seq_positions: int = 512  # history transitions drawn per batch for that loss; 0 = all
    num_sampled: int = 4096  # sampled-softmax negatives (whole vocabulary when smaller)
    sampler_alpha: float = 0.75  # proposal Q ∝ count^alpha
    batch_size: int = 512  # per rank
    epochs: int = 6
    lr: float = 0.002  # Adam, multiplied by the number of ranks
    weight_decay: float = 0.0
    eval_k: int = 10  # early stopping on validation HR@eval_k
    # The co-visitation source fused with the network (ytspark/models/covisit.py; beyond the paper, after
    # YouTube's 2010 "related videos"): retrieval score = u·v + b + w * log(1 + co-visitation of the last watches).
    covisit_weights: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # w chosen on validation among 0 and these
    covisit_window: int = 10  # a training label counts with the watches up to this many before it (weight 1/(p+1))
    covisit_top_m: int = 200  # neighbours kept per video
    covisit_recent_k: int = 5  # the user's last watches read at serving ...
    covisit_decay: float = 0.7  # ... weighted decay^p


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluation job: next-watch metrics and the baselines' grid (DESIGN.md "Evaluation")."""

    ks: tuple[int, ...] = (10, 50, 100)  # HR@K / NDCG@K cut-offs
    topk: int = 100  # length of every system's list; >= max(ks)
    coverage_k: int = 10  # coverage and popularity bias are measured on the top coverage_k
    als_ranks: tuple[int, ...] = (32, 64)  # ALS grid, tuned on the validation target's HR@10
    als_reg_params: tuple[float, ...] = (0.01, 0.1)
    als_alphas: tuple[float, ...] = (1.0, 10.0, 40.0)
    als_max_iter: int = 10
    chunk_users: int = 1024  # users scored per numpy block in top-K retrieval
    seed: int = 7


@dataclass(frozen=True)
class ScoreConfig:
    """The nightly scoring job (DESIGN.md "Nightly scoring"): retrieval, ranking, fallback, output."""

    k: int = 200  # candidates retrieved per user (already-watched excluded) before ranking
    n: int = 20  # recommendations kept per user
    index: str = "flat"  # flat (exact inner product) | ivf | hnsw
    ivf_nlist: int = 1024  # IVF cells (capped at corpus / 39 so k-means has enough points)
    ivf_nprobe: int = 32  # IVF cells visited per query
    hnsw_m: int = 32  # HNSW links per node
    ef_construction: int = 200  # HNSW build-time beam
    ef_search: int = 256  # HNSW search beam (raised to the fetch size when smaller)
    recall_sample_users: int = 1000  # users whose approximate top-K is checked against exact search (0 = off)
    batch_size: int = 1024  # users per user-tower / FAISS batch
    threads_per_task: int = 1  # torch and FAISS threads per Spark task (cores come from Spark's parallelism)
    partitions: int = 0  # Spark partitions of the scoring step; 0 = spark.sql.shuffle.partitions
    demographic_list: int = 200  # popular videos kept per (country, age bucket) for the cold-user fallback
    run_date: str = ""  # YYYY-MM-DD: events before the end of this UTC day count; empty = today (UTC)
    seed: int = 5


@dataclass(frozen=True)
class RankerTrainConfig:
    """The ranking network (paper section 4) and its optimisation."""

    embed_dim: int = 32
    hidden: tuple[int, ...] = (1024, 512, 256)
    use_affinity: bool = True  # dot product of the impression video with the watch mean (beyond the paper)
    dropout: float = 0.0
    batch_size: int = 1024  # per rank
    epochs: int = 3
    lr: float = 0.001  # Adam, multiplied by the number of ranks
    weight_decay: float = 0.0
    init_from_candidate: bool = True  # start the video table from the candidate model's embeddings
    negatives: int = 20  # logs without impressions: unclicked rows per label, drawn from the top score.k
    negatives_seed: int = 13  # seeds that draw (a hash of user, label time and video)
    hard_negatives: int = 0  # of those, the best-scored unwatched retrievals always taken
    # Serving order = ranker logit + w * retrieval logit. "auto": w from blend_weights, chosen on the
    # validation rows by the ranker's own criterion (ytspark.models.blend); "ranker": w = 0 (the paper).
    blend: str = "auto"
    blend_weights: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    candidate: CandidateTrainConfig = field(default_factory=CandidateTrainConfig)
    ranker: RankerTrainConfig = field(default_factory=RankerTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _check_value(key: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a table/dict, got {type(value).__name__}")
        return {str(k): str(v) for k, v in value.items()}
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    if origin is list or origin is tuple:
        (inner,) = set(typing.get_args(typ)) - {Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return tuple(_check_value(f"{key}[{i}]", v, inner) for i, v in enumerate(value))
    raise ConfigError(f"config key '{key}' has unsupported type {typ}")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown config key '{full}'; valid keys here: {', '.join(sorted(prefix + n for n in names))}"
            )
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' is a section; set '{full}.<key>' instead")
            kwargs[key] = _build(typ, value, f"{full}.")
        else:
            kwargs[key] = _check_value(full, value, typ)
    return cls(**kwargs)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "extra":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``"train.lr=0.1"`` -> ``{"train": {"lr": 0.1}}``; values use TOML syntax, bare words are strings."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(
    profile: str | None = None,
    overrides: typing.Iterable[str] = (),
    conf_dir: Path | str | None = None,
) -> Config:
    """Load ``default.toml`` + ``<profile>.toml`` + overrides from ``conf_dir`` into a :class:`Config`."""
    conf_dir = Path(conf_dir) if conf_dir else CONF_DIR
    raw: dict[str, Any] = {}
    files = [conf_dir / "default.toml"]
    if profile:
        p = Path(profile)
        files.append(p if p.suffix == ".toml" else conf_dir / f"{profile}.toml")
    for f in files:
        if not f.exists():
            raise ConfigError(f"config file {f} not found; profiles live in {conf_dir}")
        try:
            raw = _merge(raw, tomllib.loads(f.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {f} is not valid TOML: {e}") from e
    for item in overrides:
        raw = _merge(raw, parse_override(item))
    return _build(Config, raw, "")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from ``Config.to_dict()`` output (e.g. a saved manifest)."""
    return _build(Config, raw, "")

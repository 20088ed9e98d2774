"""Typed configuration: TOML files in ``conf/`` plus ``--set section.key=value`` overrides.

``load_config(profile="local", overrides=["prepare.max_examples_per_user=50"])``
reads ``conf/default.toml``, then ``conf/<profile>.toml`` on top, then the
overrides, and checks every key and value against the dataclasses below. A
wrong key or type raises :class:`ConfigError` naming the key. A TOML date or
date-time given for a string key (``--set score.run_date=2026-12-01``) is kept
as its ISO text. It then calls :func:`validate`, which checks every enumerated
or ranged value (``score.index``, ``score.k >= score.n``, ``candidate.dropout``
in [0, 1), ...) and raises one :class:`ConfigError` listing every problem, each
with the key, its value and what is allowed; so the CLI stops before Spark starts.

One set of defaults: the dataclasses below. ``conf/default.toml`` writes the
same values out, every key, with the reasons for them (what was measured); it
overrides nothing (``tests/test_config.py`` checks both). Behaviour changes
go in a profile (``conf/local.toml``, ``conf/paper.toml``...) or ``--set``.
The model dataclasses (``ytspark.models.candidate.CandidateConfig``,
``ytspark.models.ranker.RankerConfig``) default to these values too.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONF_DIR = Path(os.environ.get("YTSPARK_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key and the fix."""


# Allowed values of the enumerated keys, checked by validate() at start-up. The modules that act on them keep
# their own copies: they import pyspark, torch or faiss (too slow for a start-up check) or this module (a cycle).
# tests/test_config.py checks that each pair agrees.
DATA_FORMATS = ("auto", "parquet", "jsonl", "csv")  # ("auto", *ytspark.sources.FORMATS)
PREPARE_SAMPLINGS = ("recent", "uniform")  # ytspark.features.params.SAMPLINGS
PREPARE_TIES = ("ordered", "excluded")  # ytspark.features.params.TIES
PREPARE_TIE_BREAKS = ("log", "hash")  # ytspark.prepare.job keeps log_seq for "log"
TRAIN_LAUNCHERS = ("local", "horovod-spark", "horovodrun", "torch-distributor")  # ytspark.train.launcher.LAUNCHERS
CANDIDATE_RECENCY = ("none", "last_k", "weighted", "attention")  # ytspark.models.candidate.RECENCY_MODES
CANDIDATE_QUERY_GAPS = ("session", "as_of")  # ytspark.models.candidate.QUERY_GAPS
CANDIDATE_ENCODERS = ("auto", "bag", "sequence")  # ytspark.models.candidate.ENCODERS, + auto (chosen on validation)
SCORE_INDEXES = ("flat", "ivf", "hnsw")  # ytspark.score.index.KINDS
RANKER_OBJECTIVES = ("watch_time", "next_watch", "blend")  # ytspark.models.blend.OBJECTIVES
# Keys that were replaced, with what to write instead (a profile or --set that still uses one fails with this).
RENAMED = {"ranker.blend": "use ranker.objective ('auto' -> 'blend', 'ranker' -> 'watch_time')"}
SPARK_LOG_LEVELS = ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", "TRACE")  # SparkContext.setLogLevel


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"  # ignored when spark-submit already set --master
    app_name: str = "ytspark"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    local_dir: str = ""  # spark.local.dir; empty = Spark's default
    log_level: str = "WARN"
    # any other spark.* settings; a profile's [spark.extra] replaces these whole
    extra: dict[str, str] = field(default_factory=lambda: {"spark.sql.execution.arrow.pyspark.enabled": "true",
                                                           "spark.ui.showConsoleProgress": "false"})


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
    series_share: float = 0.3  # share of videos that are episodes of a series (a channel's uploads 1..n, in order)
    p_binge: float = 0.6  # after episode e, the next watch is episode e+1 (autoplay of the series)
    p_autoplay: float = 0.15  # else the next watch is the watched video's fixed "up next" video


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
    ties: str = "ordered"  # same-second watches before a label: ordered (by the tie-break, as serving sees them) | excluded
    # the order of a user's same-second events: log (as they stand in the input: within a file, its row order)
    # | hash (a neutral hash of the event, for logs whose row order means nothing)
    tie_break: str = "log"
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
    sequence_windows: int = 8  # sequence rows (candidate.encoder = sequence | auto): windows per user
    sequence_stride: int = 0  # watches between window ends; 0 = history_length (no overlap)
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

    # bag: the paper's tower over averaged histories (one example per row); sequence: a causal encoder over
    # user windows trained on every position (ytspark/models/sequence.py); auto: both, export keeps the one
    # with the better fused validation HR@eval_k (conf/default.toml says what it costs)
    encoder: str = "auto"
    # The time since the last watch a query of the network is given (serving, evaluation, validation, the
    # ranker's candidates; training examples keep their own): "session" 0, the watch that continues the user's
    # last session (the log's next watch); "as_of" the time from the last watch to the query (serving: the
    # run date), a return visit then. ytspark.models.candidate.CandidateModel.query_vector
    query_gap: str = "session"
    embed_dim: int = 64
    hidden: tuple[int, ...] = ()  # linear u; the paper's (1024, 512, 256) is conf/paper.toml (default.toml says why)
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
    seq_batch_size: int = 16  # per rank, encoder = sequence: user windows (up to history_length examples each)
    seq_lr: float = 0.003  # encoder = sequence: Adam learning rate (multiplied by the number of ranks)
    seq_num_sampled: int = 1024  # encoder = sequence: sampled-softmax negatives per step (every position shares them)
    # encoder = sequence: each position's targets are the next seq_horizon watches after it, the d-th weighted
    # seq_horizon_decay^(d-1) (1 = the next watch alone; conf/default.toml says what 3 / 0.7 bought)
    seq_horizon: int = 3
    seq_horizon_decay: float = 0.7
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
    als_parallelism: int = 4  # grid points fitted at once (driver threads; the same figures as one at a time)
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
    # Output and serving rules (ytspark/score/rules.py); all off by default.
    impression_features: bool = True  # the ranker's impression features from logged impressions; false: 0 (ablation)
    table: str = ""  # also publish the run date's partition of this catalog table (e.g. "db.recommendations")
    exclude: str = ""  # table of video_id [, country] never recommended: path/URL or catalog table name
    max_per_channel: int = 0  # at most this many videos of one channel per list (0 = no cap)
    min_video_age_s: float = 0.0  # leave out videos uploaded less than this before the run date's end (0 = off)
    max_video_age_days: float = 0.0  # leave out videos uploaded more than this many days before it (0 = off)


@dataclass(frozen=True)
class RankerTrainConfig:
    """The ranking network (paper section 4) and its optimisation."""

    embed_dim: int = 32
    hidden: tuple[int, ...] = (128,)  # the paper's (1024, 512, 256) is conf/paper.toml (conf/default.toml says why)
    use_affinity: bool = True  # dot product of the impression video with the watch mean (beyond the paper)
    dropout: float = 0.0
    batch_size: int = 1024  # per rank
    epochs: int = 6
    lr: float = 0.001  # Adam, multiplied by the number of ranks
    weight_decay: float = 0.0
    init_from_candidate: bool = True  # start the video table from the candidate model's embeddings
    negatives: int = 20  # logs without impressions: unclicked rows per label, drawn from the top score.k
    negatives_seed: int = 13  # seeds that draw (a hash of user, label time and video)
    hard_negatives: int = 0  # of those, the best-scored unwatched retrievals always taken
    # Logged impressions: this share of users' training impressions is held out of training and fits the
    # served score's map to watch seconds (ytspark.models.score_calibration). Validation impressions cannot:
    # they lie between a user's last two watches, so at most one click follows them (a third of the rate).
    calibration_share: float = 0.1
    # The serving objective (ytspark.models.blend), read where lists are ordered (score, evaluate):
    # "watch_time": ranker logit (the paper); "next_watch": retrieval logit (the candidate model's order);
    # "blend": ranker logit + w * retrieval logit, w = blend_weight, or (blend_weight = -1) the weight the
    # ranker's export chose among blend_weights on its validation rows by the ranker's own criterion.
    objective: str = "blend"
    blend_weight: float = -1.0
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


def _shown(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return f"{value.isoformat()} (a TOML date-time)"
    if isinstance(value, dt.date):
        return f"{value.isoformat()} (a TOML date)"
    if isinstance(value, dt.time):
        return f"{value.isoformat()} (a TOML time)"
    return repr(value)


def _check_value(key: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a table/dict, got {type(value).__name__}")
        return {str(k): str(v) for k, v in value.items()}
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {_shown(value)}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {_shown(value)}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {_shown(value)}")
        return float(value)
    if typ is str:
        if isinstance(value, (dt.date, dt.time)):  # TOML parses a bare 2026-12-01 as a date: keep its ISO text
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {_shown(value)}")
        return value
    if origin is list or origin is tuple:
        (inner,) = set(typing.get_args(typ)) - {Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {_shown(value)}")
        return tuple(_check_value(f"{key}[{i}]", v, inner) for i, v in enumerate(value))
    raise ConfigError(f"config key '{key}' has unsupported type {typ}")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if full in RENAMED:
            raise ConfigError(f"config key '{full}' was replaced: {RENAMED[full]}")
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
    check: bool = True,
) -> Config:
    """Load ``default.toml`` + ``<profile>.toml`` + overrides from ``conf_dir`` into a :class:`Config`.

    ``check`` (the default): :func:`validate` it, so a value out of range or not among the allowed ones raises
    :class:`ConfigError` here, naming the key; ``check=False`` only checks keys and types (for a test that
    hands a stage a value on purpose).
    """
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
    cfg = _build(Config, raw, "")
    if check:
        validate(cfg)
    return cfg


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from ``Config.to_dict()`` output (e.g. a saved manifest)."""
    return _build(Config, raw, "")


# ---------------------------------------------------------------------------------------------------------------
# Start-up validation: every enumerated or ranged value, so a typo fails in milliseconds instead of after Spark
# started and earlier stages ran. The stages keep their own checks (they are also called as a library).

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MEMORY = re.compile(r"\d+([kmgtp]b?|b)?", re.IGNORECASE)  # Spark's byte strings: 512m, 4g, 4096


def _is_date(text: str) -> bool:
    try:
        return bool(_DATE.fullmatch(text)) and dt.date.fromisoformat(text) is not None
    except ValueError:
        return False


def _is_datetime(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text)
        return True
    except ValueError:
        return False


TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")  # [catalog.][db.]table


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Collects ``config key 'section.key' = value: must be ...`` lines for :func:`validate`."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.problems: list[str] = []

    def value(self, key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(self.cfg, section), name)

    def bad(self, key: str, allowed: str) -> None:
        v = self.value(key)
        shown = list(v) if isinstance(v, tuple) else v
        self.problems.append(f"config key '{key}' = {shown!r}: must be {allowed}")

    def one_of(self, key: str, allowed: tuple[str, ...], fold_case: bool = False) -> None:
        v = self.value(key)
        if (v.upper() if fold_case else v) not in allowed:
            self.bad(key, "one of " + " | ".join(allowed))

    def at_least(self, lo: float, *keys: str) -> None:
        for key in keys:
            if not self.value(key) >= lo:
                self.bad(key, f">= {lo}")

    def above(self, lo: float, *keys: str) -> None:
        for key in keys:
            if not self.value(key) > lo:
                self.bad(key, f"> {lo}")

    def between(self, key: str, lo: float, hi: float, hi_open: bool = False, lo_open: bool = False) -> None:
        v = self.value(key)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            self.bad(key, f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")

    def each_at_least(self, lo: float, key: str, non_empty: bool = False) -> None:
        v = self.value(key)
        if (non_empty and not v) or any(not (_finite_number(x) and x >= lo) for x in v):
            self.bad(key, ("a non-empty list" if non_empty else "a list") + f" of finite values >= {lo}")


def validate(cfg: Config) -> None:
    """Raise :class:`ConfigError` listing every out-of-range or unknown value of ``cfg``.

    Each line names the key, its value and what is allowed, e.g.
    ``config key 'score.index' = 'bogus': must be one of flat | ivf | hnsw``. The types are already
    checked by :func:`load_config`; this checks the values every stage would refuse later (or misuse).
    """
    c = _Checker(cfg)
    # [spark]
    c.at_least(1, "spark.shuffle_partitions")
    c.one_of("spark.log_level", SPARK_LOG_LEVELS, fold_case=True)
    if not cfg.spark.master.strip():
        c.bad("spark.master", "a Spark master URL such as local[*] or spark://host:7077")
    if not _MEMORY.fullmatch(cfg.spark.driver_memory):
        c.bad("spark.driver_memory", "a size such as 512m, 4g or 4096 (MiB)")
    # [data]
    c.one_of("data.format", DATA_FORMATS)
    if not cfg.data.output.strip():
        c.bad("data.output", "a path or URL (the root of everything written)")
    # [generate]
    c.at_least(1, "generate.users", "generate.videos", "generate.channels", "generate.categories",
               "generate.days", "generate.partitions")
    c.above(0, "generate.visits_per_user")
    c.at_least(0, "generate.seed")
    for key in ("generate.series_share", "generate.p_binge", "generate.p_autoplay"):
        c.between(key, 0, 1)
    if not _is_datetime(cfg.generate.start_date):
        c.bad("generate.start_date", "an ISO date YYYY-MM-DD (or date-time)")
    # [validate]
    c.between("validate.max_reject_share", 0, 1)
    c.above(0, "validate.max_watch_seconds", "validate.max_watch_over_duration")
    c.at_least(0, "validate.future_tolerance_seconds")
    if cfg.validate.as_of and not _is_datetime(cfg.validate.as_of):
        c.bad("validate.as_of", "empty (the wall clock) or an ISO date YYYY-MM-DD (or date-time)")
    # [prepare]
    c.at_least(1, "prepare.history_length", "prepare.max_examples_per_user", "prepare.video_top_k",
               "prepare.token_top_k", "prepare.target_shards", "prepare.row_groups_per_shard")
    c.at_least(0, "prepare.video_min_count", "prepare.token_min_count", "prepare.categorical_min_count",
               "prepare.completed_fraction", "prepare.seed")
    c.one_of("prepare.example_sampling", PREPARE_SAMPLINGS)
    c.one_of("prepare.ties", PREPARE_TIES)
    c.one_of("prepare.tie_break", PREPARE_TIE_BREAKS)
    c.at_least(2, "prepare.quantiles")
    c.between("prepare.quantile_rel_error", 0, 1, hi_open=True)
    # [train]
    c.one_of("train.launcher", TRAIN_LAUNCHERS)
    c.at_least(1, "train.num_proc", "train.reader_workers", "train.patience")
    c.at_least(0, "train.threads_per_proc", "train.shuffle_buffer", "train.steps_per_epoch", "train.seed")
    # [candidate] and [ranker]: the two networks
    for net in ("candidate", "ranker"):
        c.at_least(1, f"{net}.embed_dim", f"{net}.batch_size", f"{net}.epochs")
        c.between(f"{net}.dropout", 0, 1, hi_open=True)
        c.above(0, f"{net}.lr")
        c.at_least(0, f"{net}.weight_decay")
        if any(h < 1 for h in c.value(f"{net}.hidden")):
            c.bad(f"{net}.hidden", "a list of layer widths >= 1 ([] = a linear model)")
    cand = cfg.candidate
    c.one_of("candidate.recency", CANDIDATE_RECENCY)
    c.one_of("candidate.encoder", CANDIDATE_ENCODERS)
    c.one_of("candidate.query_gap", CANDIDATE_QUERY_GAPS)
    c.at_least(1, "candidate.seq_batch_size", "candidate.seq_num_sampled", "prepare.sequence_windows",
               "candidate.seq_horizon")
    c.between("candidate.seq_horizon_decay", 0, 1, lo_open=True)
    c.at_least(0, "prepare.sequence_stride")
    c.above(0, "candidate.seq_lr")
    # the attention layers' keys: checked once, for the first of encoder = sequence | auto or recency = attention
    attention = (f"encoder = '{cand.encoder}'" if cand.encoder != "bag" else
                 "recency = 'attention'" if cand.recency == "attention" else None)
    if attention:
        c.at_least(1, "candidate.attn_layers", "candidate.attn_heads")
        if cand.attn_heads >= 1 and cand.embed_dim % cand.attn_heads:
            c.bad("candidate.attn_heads", f"a divisor of candidate.embed_dim ({cand.embed_dim}) with {attention}")
    if cand.recency != "none" and not cand.use_watches:
        c.bad("candidate.recency", "'none' when candidate.use_watches = false")
    if not (cand.use_watches or cand.use_searches or cand.use_demographics or cand.use_example_age):
        c.bad("candidate.use_watches", "true when use_searches, use_demographics and use_example_age are all "
              "false (at least one input group)")
    c.at_least(1, "candidate.recent_k", "candidate.num_sampled", "candidate.eval_k", "candidate.covisit_window",
               "candidate.covisit_top_m", "candidate.covisit_recent_k")
    c.above(0, "candidate.tau_days")
    c.at_least(0, "candidate.seq_loss_weight", "candidate.seq_positions", "candidate.sampler_alpha")
    c.between("candidate.covisit_decay", 0, 1, lo_open=True)
    c.each_at_least(0, "candidate.covisit_weights")
    rk = cfg.ranker
    c.at_least(1, "ranker.negatives")
    c.at_least(0, "ranker.negatives_seed")
    c.between("ranker.calibration_share", 0, 0.5)
    if not 0 <= rk.hard_negatives <= rk.negatives:
        c.bad("ranker.hard_negatives", f"in [0, ranker.negatives = {rk.negatives}]")
    c.one_of("ranker.objective", RANKER_OBJECTIVES)
    if not (rk.blend_weight == -1.0 or (math.isfinite(rk.blend_weight) and rk.blend_weight >= 0)):
        c.bad("ranker.blend_weight", "-1 (the weight chosen on validation among ranker.blend_weights) or >= 0")
    c.each_at_least(0, "ranker.blend_weights", non_empty=rk.objective == "blend" and rk.blend_weight == -1.0)
    # [evaluate]
    ev = cfg.evaluate
    c.each_at_least(1, "evaluate.ks", non_empty=True)
    if ev.ks and all(_finite_number(k) for k in ev.ks) and ev.topk < max(ev.ks):
        c.bad("evaluate.topk", f">= max(evaluate.ks) = {max(ev.ks)}")
    if not 1 <= ev.coverage_k <= max(ev.topk, 1):
        c.bad("evaluate.coverage_k", f"in [1, evaluate.topk = {ev.topk}]")
    c.each_at_least(1, "evaluate.als_ranks", non_empty=True)
    c.each_at_least(0, "evaluate.als_reg_params", non_empty=True)
    c.each_at_least(0, "evaluate.als_alphas", non_empty=True)
    c.at_least(1, "evaluate.als_max_iter", "evaluate.als_parallelism", "evaluate.chunk_users")
    c.at_least(0, "evaluate.seed")
    # [score] (the same rules as ytspark.score.job.check_score_config, and more)
    sc = cfg.score
    c.at_least(1, "score.n")
    if sc.k < max(sc.n, 1):
        c.bad("score.k", f">= score.n = {sc.n} (the top N come from the K retrieved)")
    c.one_of("score.index", SCORE_INDEXES)
    c.at_least(1, "score.ivf_nlist", "score.ivf_nprobe", "score.hnsw_m", "score.ef_construction",
               "score.ef_search", "score.batch_size", "score.threads_per_task", "score.demographic_list")
    c.at_least(0, "score.recall_sample_users", "score.partitions", "score.seed")
    if sc.run_date and not _is_date(sc.run_date):
        c.bad("score.run_date", "empty (today, UTC) or a date YYYY-MM-DD (--run-date sets it)")
    c.at_least(0, "score.max_per_channel", "score.min_video_age_s", "score.max_video_age_days")
    if sc.table and not TABLE_NAME.fullmatch(sc.table):
        c.bad("score.table", "empty (folder output only) or a catalog table name such as db.recommendations")
    if sc.max_video_age_days > 0 and sc.min_video_age_s > sc.max_video_age_days * 86400:
        c.bad("score.min_video_age_s", f"<= score.max_video_age_days * 86400 = {sc.max_video_age_days * 86400:g}")
    if c.problems:
        n = len(c.problems)
        raise ConfigError(f"{n} invalid config value{'s' if n > 1 else ''}:\n  " + "\n  ".join(c.problems))

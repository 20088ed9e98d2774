"""Validation with quarantine: every input row is either accepted (typed) or rejected with a reason.

``validate(df, "events", cfg) -> Validated(accepted, tagged)``. ``accepted``
has the contract columns cast to their types (timestamps as epoch seconds);
``tagged`` has every row with its ``reject_reason`` (null = accepted) and
``raw`` (the original row as JSON), from which the prepare job writes the
rejects table (:data:`REJECTS_SCHEMA`) in one pass. The first failing rule names the reason. Nothing is dropped:
input = accepted + rejected, checked by :func:`summarize`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark.config import ValidateConfig
from ytspark.schema import RAW


class RejectShareError(ValueError):
    """Too large a share of a table was rejected; the message lists the reasons."""


@dataclass
class Validated:
    accepted: DataFrame  # typed contract columns
    tagged: DataFrame  # every input row: __t_<col> typed values, reject_reason (null = accepted), raw


# A plain decimal number; Spark's own cast would also take "1d", "2f" (Java suffixes).
_NUMBER = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"


def _strip(c: Column) -> Column:
    """The string without leading/trailing whitespace (tabs and line breaks too, not only spaces)."""
    return F.regexp_replace(c, r"^\s+|\s+$", "")


def _blank(c: Column) -> Column:
    return c.isNull() | c.rlike(r"^\s*$")


def _number(c: Column, dtype: str) -> Column:
    """A double from a numeric column or a string holding a plain number; booleans and other text give null."""
    if dtype == "boolean":
        return F.lit(None).cast("double")
    if dtype != "string":
        return c.cast("double")
    s = _strip(c)
    return F.when(s.rlike(_NUMBER), s.cast("double"))


def _to_epoch_seconds(c: Column, dtype: str) -> Column:
    """Timestamp, date, number or string (epoch seconds or ISO-8601) -> epoch seconds (double)."""
    if dtype in ("timestamp", "timestamp_ntz"):
        return F.unix_micros(c.cast("timestamp")) / F.lit(1e6)
    if dtype == "date":
        return F.unix_seconds(c.cast("timestamp")).cast("double")
    if dtype != "string":
        return _number(c, dtype)
    as_ts = F.unix_micros(F.to_timestamp(_strip(c))) / F.lit(1e6)
    return F.coalesce(_number(c, dtype), as_ts)


def _finite(c: Column) -> Column:
    return ~F.isnan(c) & (F.abs(c) != F.lit(float("inf")))


def _now_seconds(cfg: ValidateConfig) -> float:
    if cfg.as_of:
        return datetime.fromisoformat(cfg.as_of).replace(tzinfo=timezone.utc).timestamp()
    return time.time()


def _typed(df: DataFrame, table: str) -> tuple[DataFrame, list[tuple[Column, str]]]:
    """Add typed ``__t_<col>`` columns and return the cast-failure rules (invalid_<col>)."""
    cols, _ = S.TABLES[table]
    dtypes = dict(df.dtypes)
    rules = []
    for c, typ in cols.items():
        src = F.col(c)
        if c in S.TIMESTAMP_COLUMNS[table]:
            typed = _to_epoch_seconds(src, dtypes[c])
        elif isinstance(typ, T.IntegerType) and c == S.CLICKED:
            low = F.lower(F.trim(src.cast("string")))
            typed = (
                F.when(low.isin("1", "true", "yes", "1.0"), F.lit(1))
                .when(low.isin("0", "false", "no", "0.0"), F.lit(0))
                .otherwise(F.lit(None).cast("int"))
            )
        elif isinstance(typ, T.StringType):
            typed = F.when(_blank(src.cast("string")), F.lit(None)).otherwise(_strip(src.cast("string")))
        elif isinstance(typ, T.IntegerType):
            num = _number(src, dtypes[c])
            typed = F.when(F.abs(num) < 2**31, num.cast("int"))
        else:
            typed = _number(src, dtypes[c]).cast(typ)
        df = df.withColumn(f"__t_{c}", typed)
        t = F.col(f"__t_{c}")
        bad = src.isNotNull() & ~_blank(src.cast("string")) & t.isNull()
        if isinstance(typ, (T.DoubleType, T.FloatType)):
            bad = bad | (t.isNotNull() & ~_finite(t))
        rules.append((bad, f"invalid_{c}"))
    return df, rules


def _rules(table: str, cfg: ValidateConfig, now: float) -> list[tuple[Column, str]]:
    t = lambda c: F.col(f"__t_{c}")  # noqa: E731
    _, required = S.TABLES[table]
    rules: list[tuple[Column, str]] = [(F.col(S.CORRUPT_RECORD).isNotNull(), "unparseable_line")]
    rules += [(_blank(F.col(c).cast("string")), f"missing_{c}") for c in required]
    future = now + cfg.future_tolerance_seconds
    for c in S.TIMESTAMP_COLUMNS[table]:
        if c == S.EVENT_TS:  # upload times before 1970 are legitimate (old films); event times are not
            rules.append((t(c) < 0, f"{c}_before_epoch"))
        rules.append((t(c) > future, f"{c}_in_future"))
    if table == "events":
        etype = F.lower(t(S.EVENT_TYPE))
        rules += [
            (~etype.isin(*S.EVENT_TYPES), "unknown_event_type"),
            (etype.isin("watch", "impression") & t(S.VIDEO_ID).isNull(), "missing_video_id"),
            ((etype == "search") & t(S.QUERY).isNull(), "missing_query"),
            (t(S.WATCH_SECONDS) < 0, "negative_watch_seconds"),
            (t(S.VIDEO_SECONDS) < 0, "negative_video_seconds"),
            (t(S.WATCH_SECONDS) > cfg.max_watch_seconds, "absurd_watch_seconds"),
            (
                (t(S.VIDEO_SECONDS) > 0) & (t(S.WATCH_SECONDS) > t(S.VIDEO_SECONDS) * cfg.max_watch_over_duration),
                "absurd_watch_seconds",
            ),
        ]
    elif table == "users":
        rules += [((t(S.AGE) < 0) | (t(S.AGE) > 130), "absurd_age"),
                  ((t(S.BIRTH_YEAR) < 1880) | (t(S.BIRTH_YEAR) > 2100), "absurd_birth_year")]
    elif table == "videos":
        rules += [(t(S.DURATION_SECONDS) < 0, "negative_duration_seconds")]
    return rules


# Columns that identify a duplicate row per table.
_DEDUP_KEYS = {
    "events": [S.USER_ID, S.EVENT_TS, S.EVENT_TYPE, S.VIDEO_ID, S.QUERY],
    "users": [S.USER_ID],
    "videos": [S.VIDEO_ID],
}


def validate(df: DataFrame, table: str, cfg: ValidateConfig) -> Validated:
    """Split a raw contract table (from :func:`ytspark.sources.read_table`) into accepted and rejects.

    Rules run in order and the first that fires is the reason: unparseable
    line, missing required field, invalid (uncastable) value, timestamp before
    1970 or in the future, unknown event type, missing video id / query,
    negative or absurd watch time, then duplicates (the most complete copy is kept).
    """
    cols, _ = S.TABLES[table]
    raw_cols = [c for c in df.columns if c != S.LOG_SEQ]  # log_seq: where the row stood, not its content
    seq = [F.col(S.LOG_SEQ)] if S.LOG_SEQ in df.columns else []
    typed, cast_rules = _typed(df, table)
    rules = _rules(table, cfg, _now_seconds(cfg))
    # Order: parse/missing first, then cast failures, then value rules.
    ordered = rules[:1 + len(S.TABLES[table][1])] + cast_rules + rules[1 + len(S.TABLES[table][1]):]
    reason: Column = F.lit(None).cast("string")
    for cond, name in reversed(ordered):
        reason = F.when(F.coalesce(cond, F.lit(False)), F.lit(name)).otherwise(reason)
    raw_struct = F.struct(*[F.col(c).cast("string").alias(c) for c in raw_cols if c != S.CORRUPT_RECORD])
    tagged = typed.withColumn(S.REJECT_REASON, reason).withColumn(
        RAW, F.coalesce(F.col(S.CORRUPT_RECORD), F.to_json(raw_struct)))
    if table == "events":
        tagged = tagged.withColumn(f"__t_{S.EVENT_TYPE}", F.lower(F.col(f"__t_{S.EVENT_TYPE}")))
    # Duplicates: among rows no other rule rejected, keep the first copy of each key.
    keys = [F.col(f"__t_{k}") for k in _DEDUP_KEYS[table]]
    # Keep the most complete copy, then a deterministic one.
    filled = sum(F.col(c).isNotNull().cast("int") for c in raw_cols)
    order = [filled.desc()] + [F.col(c).cast("string").asc_nulls_last() for c in raw_cols] + [s.asc() for s in seq]
    first = F.row_number().over(Window.partitionBy(F.col(S.REJECT_REASON), *keys).orderBy(*order))
    tagged = tagged.withColumn(
        S.REJECT_REASON,
        F.when(F.col(S.REJECT_REASON).isNull() & (first > 1), F.lit("duplicate_" + table.rstrip("s")))
        .otherwise(F.col(S.REJECT_REASON)),
    )
    accepted = tagged.where(F.col(S.REJECT_REASON).isNull()).select(
        *[F.col(f"__t_{c}").cast(typ).alias(c) for c, typ in cols.items()], *seq
    )
    return Validated(accepted=accepted, tagged=tagged)


def summarize(input_rows: int, reason_counts: dict[str, int], table: str, cfg: ValidateConfig) -> dict:
    """Counts for the manifest; raises :class:`RejectShareError` when the rejected share passes the bound."""
    rejected = sum(reason_counts.values())
    accepted = input_rows - rejected
    share = rejected / input_rows if input_rows else 0.0
    out = {"input": input_rows, "accepted": accepted, "rejected": rejected,
           "reject_share": round(share, 6), "reasons": dict(sorted(reason_counts.items()))}
    if share > cfg.max_reject_share:
        top = ", ".join(f"{k}={v}" for k, v in sorted(reason_counts.items(), key=lambda kv: -kv[1])[:5])
        raise RejectShareError(
            f"{table}: {rejected} of {input_rows} rows rejected ({share:.1%} > validate.max_reject_share="
            f"{cfg.max_reject_share:.1%}); top reasons: {top}. The rejects table keeps every row with its reason; "
            f"fix the input or raise validate.max_reject_share"
        )
    return out

"""The event columns every feature builder reads, defined once for prepare, train-ranker rows and serving.

- the order of a user's events (:data:`ROW_ORDER`): time, kind, then
  :func:`event_seq`, which breaks same-second ties: the event's position in
  the input log (``prepare.tie_break = "log"``) or a neutral hash of it;
- ``tokens`` (:data:`TOKENS`), a search's query tokens (``list<string>``,
  :func:`ytspark.vocab.tokens_column`): :func:`token_ids` gives their
  vocabulary ids and :func:`search_tokens` every search's ids of a batch of
  whole users in event order, with the count of tokens before each event (the
  search history of :mod:`ytspark.prepare.batch_candidates`,
  :mod:`ytspark.prepare.batch_sequences` and :mod:`ytspark.features.asof`);
- a video's metadata as vocabulary ids (:func:`video_features`: channel,
  category, language, upload time, duration), what prepare joins to the
  events and evaluation to the watches it counts.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ytspark import schema as S
from ytspark.features.segments import exclusive_cumsum, take
from ytspark.schema import KIND_SEARCH
from ytspark.vocab import Vocab, apply_vocab

TOKENS = "tokens"  # input column: the search's query tokens, list<string>
# Order of a user's events for the row builders. Same-second ties are broken by the events' order in the
# input log where prepare kept it (``prepare.tie_break = "log"``: the ``log_seq`` column of prepared/events),
# else by a hash of the event (neutral); never by the video index: that is popularity rank, and would make
# the held-out last watch the least popular of tied watches (about 1 user in 6 on MovieLens).
ROW_ORDER = (S.TS, "kind", S.EVENT_SEQ)


def event_seq(columns=()) -> Column:
    """The tie-break between a user's events at the same second: ``log_seq`` when ``columns`` (the events'
    columns) hold it, else a deterministic, popularity-neutral hash of the event."""
    if S.LOG_SEQ in columns:
        return F.col(S.LOG_SEQ).cast("long")
    return F.xxhash64(S.USER_ID, S.EVENT_TYPE, S.VIDEO_ID, S.QUERY)


def vocab_ids(column: pa.Array, values: pa.Array) -> np.ndarray:
    """int32 vocabulary ids of a string column: position in ``values`` + 2, OOV (1) for unknown and null (as
    :func:`ytspark.vocab.apply_vocab` in Spark)."""
    pos = pc.index_in(column.cast(pa.string()), value_set=values)
    return pc.fill_null(pc.add(pos, 2), S.OOV).to_numpy(zero_copy_only=False).astype(np.int32)


def token_ids(tokens: pa.Array, vocab_values: pa.Array) -> np.ndarray:
    """Vocab id of every token of a ``list<string>`` column, flattened in order (unknown -> OOV)."""
    return vocab_ids(pc.list_flatten(tokens), vocab_values)


USER_VOCABS = (S.GENDER, S.COUNTRY, S.LANGUAGE, S.DEVICE)  # the users' categorical columns, one vocabulary each
USER_FEATURES = (*S.DEMOGRAPHIC_COLUMNS, S.USER_AGE)  # what user_features gives, in this order


def user_features(c: dict, vocab_values: dict, ref_year: int) -> dict[str, pa.Array]:
    """Per row of raw user columns (``gender``, ``country``, ``language``, ``device``, ``age``,
    ``birth_year``; a missing one counts as null): the demographic ids (``<column>_idx``, OOV for unknown
    and null), ``age_bucket_idx`` (2 + position in ``AGE_BUCKETS``, OOV unknown or below the first bound)
    and ``user_age`` (years, float32; ``age``, else ``ref_year - birth_year``, else -1). Prepare
    (``enrich_events``) and serving (``score.features.Encoder``) both call it."""
    n = len(next(iter(c.values())))

    def num(name: str) -> np.ndarray:
        if name not in c:
            return np.full(n, np.nan)
        return pc.fill_null(c[name].cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)

    age = num(S.AGE)
    age = np.where(np.isnan(age), ref_year - num(S.BIRTH_YEAR), age)
    with np.errstate(invalid="ignore"):
        bucket = np.where(np.isnan(age) | (age < S.AGE_BUCKETS[0]), S.OOV,
                          1 + np.searchsorted(np.asarray(S.AGE_BUCKETS, np.float64), age, side="right"))
    out = {f"{name}_idx": pa.array(vocab_ids(c[name], vocab_values[name]) if name in c
                                   else np.full(n, S.OOV, np.int32)) for name in USER_VOCABS}
    out["age_bucket_idx"] = pa.array(bucket.astype(np.int32))
    out[S.USER_AGE] = pa.array(np.where(np.isnan(age), -1.0, age).astype(np.float32))
    return {k: out[k] for k in USER_FEATURES}


def search_tokens(c: dict, kind: np.ndarray, vocab_tokens: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(token ids of every search in event order, flattened; tokens before each event, exclusive cumsum)."""
    si = np.flatnonzero(kind == KIND_SEARCH)
    n_tok = np.zeros(len(kind), np.int64)
    s_tok = np.zeros(0, np.int32)
    if len(si):
        lists = take(c[TOKENS], si)
        n_tok[si] = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        s_tok = token_ids(lists, vocab_tokens)
    return s_tok, exclusive_cumsum(n_tok)


def video_features(videos: DataFrame, vocabs: dict[str, Vocab]) -> DataFrame:
    """Per video of ``videos``: ``video_id``, its channel, category and language as vocabulary ids (OOV for
    values the vocabularies do not hold), ``upload_ts`` and ``duration_seconds``."""
    df = videos.select(S.VIDEO_ID, S.CHANNEL_ID, S.CATEGORY, S.LANGUAGE, S.UPLOAD_TS, S.DURATION_SECONDS)
    df = apply_vocab(df, vocabs["channel"], S.CHANNEL_ID, S.RANK_CHANNEL)
    df = apply_vocab(df, vocabs["category"], S.CATEGORY, S.RANK_CATEGORY)
    df = apply_vocab(df, vocabs["language"], S.LANGUAGE, S.RANK_VIDEO_LANGUAGE)
    return df.select(S.VIDEO_ID, S.RANK_CHANNEL, S.RANK_CATEGORY, S.RANK_VIDEO_LANGUAGE, S.UPLOAD_TS, S.DURATION_SECONDS)

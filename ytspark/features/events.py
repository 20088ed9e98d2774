"""The event columns every feature builder reads, defined once for prepare, train-ranker rows and serving.

``tokens`` (:data:`TOKENS`) is a search's query tokens (``list<string>``,
:func:`ytspark.vocab.tokens_column`); :func:`token_ids` gives their vocabulary
ids and :func:`search_tokens` every search's ids of a batch of whole users in
event order, with the count of tokens before each event (the search history
of :mod:`ytspark.prepare.batch_candidates`, :mod:`ytspark.prepare.batch_sequences`
and :mod:`ytspark.features.asof`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S
from ytspark.features.segments import exclusive_cumsum, take
from ytspark.schema import KIND_SEARCH

TOKENS = "tokens"  # input column: the search's query tokens, list<string>


def token_ids(tokens: pa.Array, vocab_values: pa.Array) -> np.ndarray:
    """Vocab id of every token of a ``list<string>`` column, flattened in order (unknown -> OOV)."""
    pos = pc.index_in(pc.list_flatten(tokens), value_set=vocab_values)
    return pc.fill_null(pc.add(pos, 2), S.OOV).to_numpy(zero_copy_only=False).astype(np.int32)


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

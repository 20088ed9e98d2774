"""The settings of prepare's row builders: which examples, how far back, how same-second events count.

:class:`CandidateParams` drives the candidate and sequence rows
(:mod:`ytspark.prepare.batch_candidates`, :mod:`ytspark.prepare.batch_sequences`)
and the candidate-side inputs as of a time (:mod:`ytspark.features.asof`: the
ranker's rows, serving); :class:`RankingParams` the ranking rows
(:mod:`ytspark.prepare.batch_ranking`, :mod:`ytspark.prepare.batch_negatives`).
Their values come from ``[prepare]`` (:class:`ytspark.config.PrepareConfig`). The per-user
reference builders the batch code is checked against live in
``tests/reference_rows.py``.

``ties``: a watch label's inputs are the watches before it in prepare's order
(``ordered``: earlier watches of the same second count, as at serving, where
every event before the run date is known) or strictly before its second
(``excluded``: a same-second run counts as a whole only after it). Searches of
the same second sort after watches (:data:`ytspark.features.events.ROW_ORDER`'s kind), so
they are never inputs of a same-second watch.
"""
from __future__ import annotations

from dataclasses import dataclass

from ytspark import schema as S
from ytspark.config import PREPARE_TIES, PrepareConfig


@dataclass(frozen=True)
class CandidateParams:
    history_length: int = 50
    max_examples_per_user: int = 100
    example_sampling: str = "recent"  # recent | uniform
    seed: int = 7
    window_end: float = 0.0  # epoch seconds of the training window's end (for example age)
    ties: str = PrepareConfig.ties  # ordered | excluded: the module docstring

    def __post_init__(self) -> None:
        if self.ties not in TIES:
            raise ValueError(f"prepare.ties must be one of {TIES}, got '{self.ties}'")


TIES = PREPARE_TIES


def split_positions(n_watches: int) -> tuple[int | None, int | None, int]:
    """(val position, test position, end of train labels) for a user with ``n_watches`` watches."""
    if n_watches >= 3:
        return n_watches - 2, n_watches - 1, n_watches - 2
    if n_watches == 2:
        return None, 1, 1
    return None, None, n_watches


SAMPLINGS = ("recent", "uniform")


def check_sampling(how: str) -> None:
    """Refuse an unknown ``prepare.example_sampling`` with the key and the allowed values."""
    if how not in SAMPLINGS:
        raise ValueError(f"prepare.example_sampling must be 'recent' or 'uniform', got '{how}'")


@dataclass(frozen=True)
class RankingParams:
    history_length: int = 50
    source_idx: int = S.OOV  # vocab index of the "impression" candidate source

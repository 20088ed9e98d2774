"""Candidate rows per user (pure numpy): split, rollback, cap, padding. No Spark needed."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ytspark import schema as S
from reference_rows import user_candidate_rows

from ytspark.features.params import CandidateParams, split_positions
from ytspark.schema import DAY

DEMO = {S.USER_AGE: 30.0, **{c: 2 for c in S.DEMOGRAPHIC_COLUMNS}}


def rows_for(w_ts, w_vid, s_ts=(), s_tok=(), completed=None, **params):
    w_ts = np.asarray(w_ts, np.float64)
    completed = np.ones(len(w_ts), bool) if completed is None else np.asarray(completed, bool)
    p = CandidateParams(**{"history_length": 4, "window_end": 100 * DAY, **params})
    return user_candidate_rows("u1", w_ts, np.asarray(w_vid, np.int32), completed,
                               np.asarray(s_ts, np.float64), np.asarray(s_tok, np.int32), DEMO, p)


def test_split_positions():
    assert split_positions(5) == (3, 4, 3)
    assert split_positions(2) == (None, 1, 1)
    assert split_positions(1) == (None, None, 1)
    assert split_positions(0) == (None, None, 0)


def test_known_rows_for_a_hand_built_timeline():
    # watches of videos 10..15 on days 1..6, searches (tokens 7, 8) on day 2.5 and (9) on day 4.5
    df = rows_for([d * DAY for d in range(1, 7)], [10, 11, 12, 13, 14, 15],
                  s_ts=[2.5 * DAY, 2.5 * DAY, 4.5 * DAY], s_tok=[7, 8, 9])
    assert list(df[S.SPLIT]) == ["train"] * 4 + ["val", "test"]
    assert list(df[S.CAND_LABEL]) == [10, 11, 12, 13, 14, 15]
    # history is most recent first, length 4, zero padded
    assert list(df[S.CAND_WATCH_HIST].iloc[0]) == [0, 0, 0, 0]
    assert list(df[S.CAND_WATCH_HIST].iloc[2]) == [11, 10, 0, 0]
    assert list(df[S.CAND_WATCH_HIST].iloc[5]) == [14, 13, 12, 11]  # test row sees the val watch
    assert list(df[S.CAND_SEARCH_HIST].iloc[2]) == [8, 7, 0, 0]  # day-2.5 search precedes day-3 label
    assert list(df[S.CAND_SEARCH_HIST].iloc[4]) == [9, 8, 7, 0]
    assert list(df[S.CAND_WATCH_AGE].iloc[3][:3]) == pytest.approx([1.0, 2.0, 3.0])
    assert df[S.CAND_SINCE_LAST].iloc[0] == -1.0 and df[S.CAND_SINCE_LAST].iloc[1] == pytest.approx(1.0)
    # example age: window end (day 100) minus label day for train rows, 0 for val/test (serving)
    assert list(df[S.CAND_EXAMPLE_AGE]) == pytest.approx([99, 98, 97, 96, 0, 0])
    assert list(df[S.CAND_N_WATCHES]) == [0, 1, 2, 3, 4, 5]


def test_equal_timestamps_are_not_history_when_ties_are_excluded():
    # two watches in the same second: neither sees the other (strictly before)
    df = rows_for([DAY, DAY, 2 * DAY, 3 * DAY, 4 * DAY], [10, 11, 12, 13, 14], ties="excluded")
    first_two = df[df[S.CAND_LABEL].isin([10, 11])]
    for hist in first_two[S.CAND_WATCH_HIST]:
        assert list(hist) == [0, 0, 0, 0]
    assert list(df[df[S.CAND_LABEL] == 12][S.CAND_WATCH_HIST].iloc[0][:2]) in ([11, 10], [10, 11])


def test_ordered_ties_an_earlier_watch_of_the_same_second_is_history():
    """ties = "ordered" (the default): the second of two same-second watches sees the first (its predecessor in
    prepare's order), the first sees neither; since_last is 0 days; a same-second search is not history."""
    df = rows_for([DAY, 2 * DAY, 2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY], [10, 11, 12, 13, 14, 15],
                  s_ts=[2 * DAY], s_tok=[7])
    by_label = {int(r[S.CAND_LABEL]): r for _, r in df.iterrows()}
    assert list(by_label[11][S.CAND_WATCH_HIST]) == [10, 0, 0, 0]
    assert list(by_label[12][S.CAND_WATCH_HIST]) == [11, 10, 0, 0]
    assert by_label[12][S.CAND_N_WATCHES] == 2 and by_label[12][S.CAND_SINCE_LAST] == 0.0
    assert list(by_label[12][S.CAND_SEARCH_HIST]) == [0, 0, 0, 0]  # the day-2 search sorts after day-2 watches
    assert list(by_label[13][S.CAND_SEARCH_HIST]) == [7, 0, 0, 0]
    excl = rows_for([DAY, 2 * DAY, 2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY], [10, 11, 12, 13, 14, 15], ties="excluded")
    assert list(excl[excl[S.CAND_LABEL] == 12][S.CAND_WATCH_HIST].iloc[0]) == [10, 0, 0, 0]


def test_ties_must_be_ordered_or_excluded():
    with pytest.raises(ValueError, match="prepare.ties"):
        CandidateParams(ties="strict")


def test_incomplete_and_oov_watches_are_history_but_not_labels():
    df = rows_for([d * DAY for d in range(1, 7)], [10, 1, 12, 13, 14, 15],
                  completed=[True, True, False, True, True, True])
    train = df[df[S.SPLIT] == "train"]
    assert list(train[S.CAND_LABEL]) == [10, 13]  # 1 is OOV, 12 was not completed
    assert list(train[S.CAND_WATCH_HIST].iloc[1][:3]) == [12, 1, 10]


@pytest.mark.parametrize("how", ["recent", "uniform"])
def test_cap_per_user(how):
    n = 40
    df = rows_for([d * DAY for d in range(n)], list(range(10, 10 + n)), max_examples_per_user=5,
                  example_sampling=how)
    train = df[df[S.SPLIT] == "train"]
    assert len(train) == 5
    assert (df[S.SPLIT] == "val").sum() == 1 and (df[S.SPLIT] == "test").sum() == 1
    if how == "recent":
        assert list(train[S.CAND_LABEL]) == list(range(10 + n - 7, 10 + n - 2))
    else:
        again = rows_for([d * DAY for d in range(n)], list(range(10, 10 + n)), max_examples_per_user=5,
                         example_sampling=how)
        assert list(again[S.CAND_LABEL]) == list(df[S.CAND_LABEL])  # seeded
        assert list(train[S.CAND_LABEL]) != list(range(10 + n - 7, 10 + n - 2))


def test_bad_sampling_name_is_named():
    with pytest.raises(ValueError, match="example_sampling"):
        rows_for([d * DAY for d in range(10)], list(range(10, 20)), max_examples_per_user=2, example_sampling="x")


timelines = st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["w", "s"]), st.integers(2, 9)),
                     min_size=0, max_size=40)


@settings(max_examples=300, deadline=None)
@given(timelines, st.integers(1, 50), st.sampled_from(["ordered", "excluded"]))
def test_rollback_never_leaks_a_later_event(events, cap, ties):
    """Property: every id in a row's histories happened before its label: strictly before its second
    (``excluded``), or at most at its second and then a watch earlier in the order (``ordered``)."""
    events = sorted(events)
    w = [(t * 3600.0, v) for t, k, v in events if k == "w"]
    s = [(t * 3600.0, v) for t, k, v in events if k == "s"]
    # video ids encode their own timestamp so a leak is detectable: id = 100 + hour
    w_ts = np.array([t for t, _ in w]); w_vid = np.array([100 + int(t // 3600) for t, _ in w])
    s_ts = np.array([t for t, _ in s]); s_tok = np.array([100 + int(t // 3600) for t, _ in s])
    df = rows_for(w_ts, w_vid, s_ts, s_tok, max_examples_per_user=cap, history_length=50, ties=ties)
    n_train = (df[S.SPLIT] == "train").sum() if len(df) else 0
    assert n_train <= cap
    for _, r in df.iterrows():
        label_hour = r[S.CAND_LABEL_TS] / 3600.0
        k = int(r[S.CAND_N_WATCHES])
        searches = [int(x) for x in r[S.CAND_SEARCH_HIST] if x != 0]
        assert all(i - 100 < label_hour for i in searches)  # searches: strictly before either way
        watches = [int(x) for x in r[S.CAND_WATCH_HIST] if x != 0]
        if ties == "excluded":
            assert all(i - 100 < label_hour for i in watches)
            # and nothing strictly earlier is missing from a long enough history
            assert len(watches) == k == min(50, int((w_ts < r[S.CAND_LABEL_TS]).sum()))
        else:  # exactly the watches before the label in the order: the label is watch number k
            assert w_ts[k] == r[S.CAND_LABEL_TS] and all(i - 100 <= label_hour for i in watches)
            assert watches == [int(v) for v in w_vid[:k][::-1][:50]]


def test_user_features_known_answers():
    """The users' features prepare and serving both build (``features.events.user_features``): vocabulary ids
    (unknown and null -> OOV), age (age, else ref_year - birth_year, else -1) and its bucket."""
    import pyarrow as pa

    from ytspark.features.events import user_features

    c = {S.GENDER: pa.array(["f", None, "x", "m"]), S.COUNTRY: pa.array(["NL", "DE", None, "NL"]),
         S.DEVICE: pa.array(["ios", "web", "ios", None]),  # no language column: OOV for everyone
         S.AGE: pa.array([34.0, None, None, 17.0]), S.BIRTH_YEAR: pa.array([None, 1990, None, 1950], pa.int32())}
    values = {S.GENDER: pa.array(["f", "m"]), S.COUNTRY: pa.array(["DE", "NL"]), S.LANGUAGE: pa.array(["nl"]),
              S.DEVICE: pa.array(["ios", "web"])}
    out = {k: v.to_pylist() for k, v in user_features(c, values, 2020).items()}
    assert list(out) == [*S.DEMOGRAPHIC_COLUMNS, S.USER_AGE]
    assert out["gender_idx"] == [2, S.OOV, S.OOV, 3]
    assert out["country_idx"] == [3, 2, S.OOV, 3]
    assert out["language_idx"] == [S.OOV] * 4
    assert out["device_idx"] == [2, 3, 2, S.OOV]
    assert out[S.USER_AGE] == [34.0, 30.0, -1.0, 17.0]  # the stated age wins over the birth year
    # buckets 2 + position of the last lower bound <= age in AGE_BUCKETS (0, 18, 25, 35, ...); unknown OOV
    assert out["age_bucket_idx"] == [2 + 2, 2 + 2, S.OOV, 2 + 0]

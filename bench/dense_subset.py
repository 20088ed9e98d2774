"""A dense, strongly ordered subset of a MovieLens folder, written as a MovieLens folder (issue 17's dense log).

    .venv/bin/python bench/dense_subset.py --movielens ../shared/data/ml-latest-small --output out/ml-dense \
        [--movies 1700] [--min-watches 20] [--bursts SECONDS]

Keeps the ``--movies`` most-rated movies, then the users with at least
``--min-watches`` ratings of them; tags are kept for the kept users and
movies. The output has ``ratings.csv``, ``movies.csv`` and ``tags.csv`` in the
input's format, so ``ytspark pipeline --movielens OUT --profile movielens``
runs on it unchanged. Prints the subset's size and density.

``--bursts S`` (the "burst subset"): every rating of a user's session (a gap
of more than S seconds starts a new one) gets the session's first timestamp,
so a session is one same-second burst, as in a log whose client uploads a
session's events at once. The served-table harness then orders a burst by
movie id and holds out its largest: a log whose order is strong and partly
an artefact, for checks of order-aware models (BENCHMARKS.md). The rows are
written shuffled, so only the timestamps and the harness's order count.

The printed counts include ``markov_hr@10`` / ``markov_ndcg@10``: a
first-order Markov chain of the input (the next watch from the last one,
counts of consecutive pairs, popularity after them) scored as the harness
scores a table, a measure of how much of the target the order alone gives.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def as_bursts(r: pd.DataFrame, gap_s: int) -> pd.DataFrame:
    """Ratings with each user's session (consecutive ratings at most ``gap_s`` apart) at its first timestamp,
    shuffled (seed 0)."""
    r = r.sort_values(["userId", "timestamp", "movieId"], kind="mergesort")
    start = (r["userId"] != r["userId"].shift()) | (r["timestamp"] - r["timestamp"].shift() > gap_s)
    r = r.assign(timestamp=r["timestamp"].where(start).ffill().astype("int64"))
    return r.sample(frac=1.0, random_state=0)


def markov_check(r: pd.DataFrame, k: int = 10) -> dict:
    """HR@k / NDCG@k of a first-order Markov chain under the harness's split: order (timestamp, movieId), each
    user's (>= 3 ratings) last held out, input items excluded, whole catalogue."""
    r = r.sort_values(["userId", "timestamp", "movieId"], kind="mergesort")
    r = r[r.groupby("userId")["movieId"].transform("size") >= 3]
    last = r.groupby("userId").cumcount(ascending=False) == 0
    inp, truth = r[~last], r[last].set_index("userId")["movieId"]
    nxt = inp.groupby("userId")["movieId"].shift(-1)
    pairs = pd.DataFrame({"a": inp["movieId"], "b": nxt}).dropna().astype("int64")
    follow = pairs.value_counts().reset_index(name="n").sort_values(["a", "n", "b"], ascending=[True, False, True])
    follow = follow.groupby("a")["b"].apply(list).to_dict()
    popular = inp["movieId"].value_counts().index.tolist()
    hits, gain = 0, 0.0
    for user, items in inp.groupby("userId")["movieId"]:
        seen = set(items)
        recs = [m for m in dict.fromkeys(follow.get(items.iloc[-1], []) + popular[:k + len(seen)]) if m not in seen][:k]
        if truth[user] in recs:
            hits += 1
            gain += 1 / np.log2(recs.index(truth[user]) + 2)
    return {f"markov_hr@{k}": round(hits / len(truth), 3), f"markov_ndcg@{k}": round(gain / len(truth), 3)}


def dense_subset(src: Path, out: Path, movies: int, min_watches: int, bursts: int | None = None) -> dict:
    """Write the subset of ``src`` to ``out`` (``bursts``: sessions as same-second bursts); returns its counts."""
    ratings = pd.read_csv(src / "ratings.csv")
    top = ratings["movieId"].value_counts().nlargest(movies).index
    r = ratings[ratings["movieId"].isin(top)]
    per_user = r["userId"].value_counts()
    r = r[r["userId"].isin(per_user[per_user >= min_watches].index)]
    if bursts is not None:
        r = as_bursts(r, bursts)
    out.mkdir(parents=True, exist_ok=True)
    r.to_csv(out / "ratings.csv", index=False)
    mv = pd.read_csv(src / "movies.csv")
    mv[mv["movieId"].isin(r["movieId"].unique())].to_csv(out / "movies.csv", index=False)
    tags_path = src / "tags.csv"
    if tags_path.exists():
        tags = pd.read_csv(tags_path)
        tags[tags["userId"].isin(r["userId"].unique()) & tags["movieId"].isin(r["movieId"].unique())].to_csv(
            out / "tags.csv", index=False)
    users, items = r["userId"].nunique(), r["movieId"].nunique()
    ties = r.duplicated(["userId", "timestamp"], keep=False).mean()
    return {"ratings": len(r), "users": users, "movies": items, "watches_per_user": round(len(r) / users, 1),
            "density": round(len(r) / (users * items), 4), "share_in_same_second_bursts": round(float(ties), 3),
            **markov_check(r)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--movies", type=int, default=1700)
    ap.add_argument("--min-watches", type=int, default=20)
    ap.add_argument("--bursts", type=int, metavar="SECONDS",
                    help="a user's ratings at most this far apart become one same-second burst")
    args = ap.parse_args()
    print(json.dumps(dense_subset(args.movielens, args.output, args.movies, args.min_watches, args.bursts)))


if __name__ == "__main__":
    main()

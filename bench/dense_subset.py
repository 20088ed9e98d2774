"""A dense, strongly ordered subset of a MovieLens folder, written as a MovieLens folder (issue 17's dense log).

    .venv/bin/python bench/dense_subset.py --movielens ../shared/data/ml-latest-small --output out/ml-dense \
        [--movies 1700] [--min-watches 20]

Keeps the ``--movies`` most-rated movies, then the users with at least
``--min-watches`` ratings of them; tags are kept for the kept users and
movies. The output has ``ratings.csv``, ``movies.csv`` and ``tags.csv`` in the
input's format, so ``ytspark pipeline --movielens OUT --profile movielens``
runs on it unchanged. Prints the subset's size and density.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def dense_subset(src: Path, out: Path, movies: int, min_watches: int) -> dict:
    """Write the subset of ``src`` to ``out``; returns its counts."""
    ratings = pd.read_csv(src / "ratings.csv")
    top = ratings["movieId"].value_counts().nlargest(movies).index
    r = ratings[ratings["movieId"].isin(top)]
    per_user = r["userId"].value_counts()
    r = r[r["userId"].isin(per_user[per_user >= min_watches].index)]
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
            "density": round(len(r) / (users * items), 4), "share_in_same_second_bursts": round(float(ties), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--movies", type=int, default=1700)
    ap.add_argument("--min-watches", type=int, default=20)
    args = ap.parse_args()
    print(json.dumps(dense_subset(args.movielens, args.output, args.movies, args.min_watches)))


if __name__ == "__main__":
    main()

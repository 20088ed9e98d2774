"""The served-table check on any MovieLens folder: the harness's split, the pipeline, the harness's score.

    .venv/bin/python bench/dense_subset.py --movielens ../shared/data/ml-latest-small --output out/ml-burst \
        --bursts 3600
    .venv/bin/python bench/served.py --movielens out/ml-burst [--work DIR] [--set candidate.encoder=auto ...]

What ``../shared/eval/served_table.sh`` does for ml-latest-small, for any folder in its layout (the subsets of
``bench/dense_subset.py``): the harness module (``--harness``) is loaded with its ``DATA`` pointed at the
folder (``bench/peers.py``'s ``load_harness``), ``split`` writes every watch but each user's last, ``ytspark
pipeline --profile movielens --skip evaluate --set score.n=100`` runs on it with the run date the day after
the newest input event (plus any ``--set``), and the harness's ``score`` scores the nightly table: HR@10/50/100,
NDCG@10, MRR@100 over all held-out users. Prints one JSON line; the pipeline's log is ``WORK/pipeline.log``.
Not part of the test suite: a whole pipeline run (2-5 minutes on 2 cores for the subsets).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers import HARNESS, ROOT, load_harness


def served(movielens: Path, work: Path, sets: list[str], harness: Path = HARNESS) -> dict:
    """Split ``movielens`` into ``work/in``, run the pipeline into ``work/out``, return the harness's figures."""
    h = load_harness(harness, movielens)
    with contextlib.redirect_stdout(io.StringIO()) as said:
        h.split(work / "in")
    day = said.getvalue().split()[-1]
    cmd = [sys.executable, "-m", "ytspark.cli", "pipeline", "--events", str(work / "in" / "events.csv"),
           "--videos", str(work / "in" / "videos.csv"), "--profile", "movielens", "--output", str(work / "out"),
           "--skip", "evaluate", "--set", "score.n=100", "--set", f'score.run_date="{day}"']
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    with open(work / "pipeline.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc:
        tail = (work / "pipeline.log").read_text().splitlines()[-20:]
        raise SystemExit(f"served: the pipeline failed (rc {rc}); the end of {work / 'pipeline.log'}:\n"
                         + "\n".join(tail))
    res = h.score(work / "in", str(work / "out" / "recommendations" / f"run_date={day}"))
    return {"data": str(movielens), "set": sets, "pipeline_s": round(time.time() - t0, 1),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", required=True, type=Path, help="a folder with ratings.csv and movies.csv")
    ap.add_argument("--work", type=Path, help="keep the split and the pipeline's output here (default: a temp dir)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the pipeline")
    ap.add_argument("--harness", type=Path, default=HARNESS)
    args = ap.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(served(args.movielens, args.work, args.set, args.harness)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(served(args.movielens, Path(tmp), args.set, args.harness)))


if __name__ == "__main__":
    main()

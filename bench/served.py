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

``--seeds 11,12,13`` trains and serves once per ``train.seed`` on the same split (prepare runs once; the
later runs skip it) and adds each figure's mean and sample standard deviation over the runs: one served run
of 600 users moves by up to 0.03 HR@10 with the seed alone (BENCHMARKS.md), so a difference between two
configurations is read from the means of the same seeds.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers import HARNESS, ROOT, load_harness


def served(movielens: Path, work: Path, sets: list[str], harness: Path = HARNESS,
           seeds: list[int] | None = None) -> dict:
    """Split ``movielens`` into ``work/in``, run the pipeline into ``work/out``, return the harness's figures;
    with ``seeds``, one pipeline run per ``train.seed`` (prepare only in the first), each run's figures under
    ``runs`` and their ``mean`` and ``sd`` (sample standard deviation)."""
    h = load_harness(harness, movielens)
    with contextlib.redirect_stdout(io.StringIO()) as said:
        h.split(work / "in")
    day = said.getvalue().split()[-1]
    runs = []
    for i, seed in enumerate(seeds or [None]):
        run_sets = [*sets, *([f"train.seed={seed}"] if seed is not None else [])]
        cmd = [sys.executable, "-m", "ytspark.cli", "pipeline", "--events", str(work / "in" / "events.csv"),
               "--videos", str(work / "in" / "videos.csv"), "--profile", "movielens", "--output", str(work / "out"),
               "--skip", "evaluate", *(["--skip", "prepare"] if i else []), "--set", "score.n=100",
               "--set", f'score.run_date="{day}"']
        for x in run_sets:
            cmd += ["--set", x]
        t0 = time.time()
        log_path = work / ("pipeline.log" if seed is None else f"pipeline_seed{seed}.log")
        with open(log_path, "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc:
            tail = log_path.read_text().splitlines()[-20:]
            raise SystemExit(f"served: the pipeline failed (rc {rc}); the end of {log_path}:\n" + "\n".join(tail))
        res = h.score(work / "in", str(work / "out" / "recommendations" / f"run_date={day}"))
        runs.append({"data": str(movielens), "set": run_sets, "pipeline_s": round(time.time() - t0, 1),
                     **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}})
        if seeds:
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    if not seeds:
        return runs[0]
    figures = [k for k, v in runs[0].items() if isinstance(v, float) and k != "pipeline_s"]
    return {"data": str(movielens), "set": sets, "seeds": seeds, "runs": runs,
            "mean": {k: round(statistics.fmean(r[k] for r in runs), 4) for k in figures},
            "sd": {k: round(statistics.stdev(r[k] for r in runs), 4) if len(runs) > 1 else 0.0 for k in figures}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", required=True, type=Path, help="a folder with ratings.csv and movies.csv")
    ap.add_argument("--work", type=Path, help="keep the split and the pipeline's output here (default: a temp dir)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the pipeline")
    ap.add_argument("--harness", type=Path, default=HARNESS)
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")],
                    help="comma-separated train.seed values: one run each, with their mean and sd")
    args = ap.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(served(args.movielens, args.work, args.set, args.harness, args.seeds)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(served(args.movielens, Path(tmp), args.set, args.harness, args.seeds)))


if __name__ == "__main__":
    main()

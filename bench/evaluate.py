"""Benchmark: the evaluation baselines (popularity, tuned ALS) on a prepared directory, on local[2].

    .venv/bin/python bench/evaluate.py /work/data/ml/prepared --out bench/out/eval-ml [--set evaluate.als_max_iter=10]

Runs ``ytspark.evaluate.run_baselines`` (ALS grid fitted on train watches
and scored on the validation target, the best refitted on train + validation
watches for the test target), writes the report to ``--out`` and prints one
JSON object: test and validation metrics per system, the ALS grid with each
fit's seconds, the chosen point, the timings and the load average before and
after (the 2 cores are shared: a load far above 2 inflates every time).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark.config import load_config  # noqa: E402
from ytspark.evaluate import run_baselines  # noqa: E402
from ytspark.session import get_spark  # noqa: E402

KEYS = ("hr@10", "hr@50", "hr@100", "ndcg@10", "mrr", "coverage@10", "pop_pct@10", "unreachable", "n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prepared")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "evaluate"))
    ap.add_argument("--profile", default=None, help="config profile; the default is conf/default.toml alone "
                    "(the full ALS grid: the `local` profile keeps one grid point)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.profile, args.overrides)
    load0 = os.getloadavg()
    spark = get_spark(cfg, app_name="ytspark-bench-evaluate")
    try:
        t = time.time()
        ev = run_baselines(spark, cfg, args.prepared, args.out)
        wall = time.time() - t
    finally:
        spark.stop()
    print(json.dumps({
        "prepared": args.prepared,
        "test": {n: {k: round(m["test"][k], 4) for k in KEYS} for n, m in ev.metrics.items()},
        "val": {n: {k: round(m["val"][k], 4) for k in KEYS} for n, m in ev.metrics.items()},
        "details": ev.details,
        "timings": ev.timings,
        "wall_s": round(wall, 1),
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
        "report": f"{args.out}/report.md",
    }, indent=1, default=str))


if __name__ == "__main__":
    main()

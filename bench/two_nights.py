"""Benchmark: two consecutive nights on the generated platform, with and without the impression features.

    make run                                   # a pipeline output: out/raw, out/prepared, out/models
    .venv/bin/python bench/two_nights.py --output out [--seed 1] [--results bench/results/two_nights.json]

1. Night 1: ``run_score`` for the last day of the generated window (``D1``), top N.
2. Night 1's table is shown the next morning (09:00 UTC after D1): each user's
   list is logged as impressions with clicks drawn from the generator's TRUE
   click probability, and the clicked ones as watches
   (:func:`ytspark.generate.log_shown_lists`, seeded).
3. Those events are appended to the raw logs and ``prepare`` runs again.
4. Night 2 (``D2`` = D1 + 1 day) is scored twice with the same models: with the
   ranker's impression features built from the log (the default), and with
   ``score.impression_features = false`` (every pair "never shown", what
   serving did before).

Reported per night-2 table: the share of users' top 10 that repeats a video
they were shown on night 1 and did not click, and the true expected watch
seconds and click probability of the top 10 (:func:`ytspark.generate.true_engagement`
at night 2's showing time). Quality here serves the ranker's objective, watch
time, and the list's freshness; no model is retrained between the nights.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark import schema as S  # noqa: E402
from ytspark.config import load_config  # noqa: E402
import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)

SHOWN_AT_H = 9.0  # the night's table is shown at 09:00 UTC the next day


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date().isoformat()


def _top(spark, path: str, n: int) -> pd.DataFrame:
    t = spark.read.parquet(path).select(S.USER_ID, "rank", S.VIDEO_ID, "source").toPandas()
    return t[t["rank"] <= n]


def _measure(table: pd.DataFrame, unclicked: pd.DataFrame, gcfg, ts: float) -> dict:
    from ytspark.generate import true_engagement

    rep = table.merge(unclicked, on=[S.USER_ID, S.VIDEO_ID], how="inner")
    truth = true_engagement(gcfg, table[S.USER_ID].to_numpy(), table[S.VIDEO_ID].to_numpy(), ts)
    per_user = truth.assign(u=table[S.USER_ID].to_numpy()).groupby("u")
    return {"users": int(table[S.USER_ID].nunique()), "rows": int(len(table)),
            "repeats_of_unclicked": int(len(rep)), "repeat_share": round(len(rep) / max(len(table), 1), 4),
            "users_with_a_repeat": int(rep[S.USER_ID].nunique()),
            "true_watch_seconds_top10_per_user": round(float(per_user["expected_watch_seconds"].sum().mean()), 1),
            "true_p_click_mean": round(float(truth["p_click"].mean()), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="out", help="a pipeline output (raw/, prepared/, models/)")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--work", default=None, help="scratch folder (default: <output>/two_nights)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "two_nights.json"))
    args = ap.parse_args(argv)

    from ytspark.generate import log_shown_lists
    from ytspark.prepare import read_inputs, run_prepare
    from ytspark.prepared import load_manifest
    from ytspark.score import run_score
    from ytspark.score.features import as_of_ts
    from ytspark.session import get_spark

    out = Path(args.output).resolve()
    work = Path(args.work or out / "two_nights").resolve()
    shutil.rmtree(work, ignore_errors=True)
    cfg = load_config(args.profile)
    spark = get_spark(cfg, app_name="ytspark-bench-two-nights")
    t0 = time.time()
    prepared, models = str(out / "prepared"), str(out / "models")
    d1 = _day(float(load_manifest(spark, prepared)["window_end"]))
    d2 = (dt.date.fromisoformat(d1) + dt.timedelta(days=1)).isoformat()
    shown1_ts = as_of_ts(d1) + SHOWN_AT_H * 3600
    shown2_ts = as_of_ts(d2) + SHOWN_AT_H * 3600

    m1 = run_score(spark, cfg, prepared, models, d1, str(work / "night1"), ranker_dir=models)
    night1 = spark.read.parquet(m1["path"]).select(S.USER_ID, S.VIDEO_ID, "rank").toPandas()
    logged = log_shown_lists(night1, cfg.generate, shown1_ts, args.seed, watches=True)
    imps = logged[logged[S.EVENT_TYPE] == "impression"]
    unclicked = imps[imps[S.CLICKED].astype(float) == 0][[S.USER_ID, S.VIDEO_ID]].drop_duplicates()

    raw2 = work / "raw2"
    events = spark.read.parquet(str(out / "raw" / "events"))
    extra = spark.createDataFrame(logged.astype({c: "object" for c in logged.columns if logged[c].dtype == object}),
                                  schema=events.schema)
    events.unionByName(extra).write.parquet(str(raw2 / "events"))
    cfg2 = replace(cfg, data=replace(cfg.data, events=str(raw2 / "events"), users=str(out / "raw" / "users"),
                                     videos=str(out / "raw" / "videos"), format="parquet"))
    prepared2 = str(work / "prepared2")
    run_prepare(spark, cfg2, read_inputs(spark, cfg2), prepared2)

    res = {"d1": d1, "d2": d2, "seed": args.seed, "top": args.top, "shown_rows": int(len(imps)),
           "clicked_rows": int((imps[S.CLICKED].astype(float) > 0).sum()), "night1_unclicked": int(len(unclicked))}
    res["night1"] = _measure(_top(spark, m1["path"], args.top), pd.DataFrame(columns=[S.USER_ID, S.VIDEO_ID]),
                             cfg.generate, shown1_ts)
    for name, on in (("night2_with_impression_features", True), ("night2_features_zeroed", False)):
        c = replace(cfg, score=replace(cfg.score, impression_features=on))
        m = run_score(spark, c, prepared2, models, d2, str(work / name), ranker_dir=models)
        res[name] = {**_measure(_top(spark, m["path"], args.top), unclicked, cfg.generate, shown2_ts),
                     "manifest_impression_features": m["impression_features"], "score_s": m["timings"]["total_s"]}
    res["seconds"] = round(time.time() - t0, 1)
    res.update(R.stamp("two_nights"))
    spark.stop()
    R.write_json("two_nights", res, args.results)
    a, b = res["night2_with_impression_features"], res["night2_features_zeroed"]
    print(f"night 1 ({d1}) shown to {res['night1']['users']:,} users: {res['shown_rows']:,} impressions, "
          f"{res['clicked_rows']:,} clicked")
    print("\n".join(R.md_table(
        [f"night 2 ({d2}), top {args.top}", "repeats of night-1 unclicked", "share", "users with one",
         "true watch s / user", "true P(click)"],
        [[name, f"{r['repeats_of_unclicked']:,}", f"{r['repeat_share']:.1%}", f"{r['users_with_a_repeat']:,}",
          f"{r['true_watch_seconds_top10_per_user']:,.0f}", f"{r['true_p_click_mean']:.4f}"]
         for name, r in (("with impression features", a), ("features zeroed", b))])))
    print(f"({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

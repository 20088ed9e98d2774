"""Benchmark: does the ranking network improve on the candidate model's own order?

    # synthetic platform (generate defaults, 5,000 users): train, then measure
    .venv/bin/python bench/rerank.py syn --root /work/data/syn --train [--set ranker.epochs=2]
    # ml-latest-small: prepare, train-candidates, train-ranker (candidate negatives), then measure
    .venv/bin/python bench/rerank.py ml --root /work/data/mlrank --movielens ../shared/data/ml-latest-small --train

``syn`` (the generator knows the truth): for every test user at the test
target's time, the candidate model's top ``score.k`` unseen videos; top 10 in
retrieval order vs top 10 after reranking (``ytspark.evaluate.systems``, the
evaluation's "candidate + ranking" path). Measured by (i) the generator's true
expected watch time of those 10 videos for that user at that time:
P(click) x mean completion x duration from
:func:`ytspark.generate.true_engagement` (interest at t, the click and
completion logistics; 0 for a video not yet uploaded), and (ii) the weighted per-user loss and AUC
on the held-out impressions (validation and test rows of the ranker's training
rows, whose ``retrieval_score`` is the candidate logit as of each impression),
ranker score vs retrieval score as the ordering. Also HR@10 / NDCG@10 of both.

``ml``: HR@10 and NDCG@10 on the test (and validation) target, candidate order
vs candidate + ranking, with the ranker trained on candidate negatives.

Writes the figures with the date, command, machine and commit to
bench/results/rerank_<kind>.json; with --write-benchmarks also replaces the
"### bench/rerank.py <kind>" table in BENCHMARKS.md (``bench/results.py render
rerank_<kind>`` does the same from the JSON).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark import schema as S  # noqa: E402
from ytspark.config import load_config  # noqa: E402
import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)

AREA = "## Ranking"

YT = str(ROOT / ".venv" / "bin" / "ytspark")


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    return round(time.time() - t, 1)


def true_watch_time(cfg, user_ids: np.ndarray, as_of: np.ndarray, videos: np.ndarray, video_values) -> dict:
    """The generator's truth for video ``videos[b, k]`` (vocab idx) shown to user b at as_of[b]: [B, K] arrays
    ``watch`` (expected watch seconds), ``p_click``, ``duration`` (0 where it cannot be watched: padding, OOV
    or not uploaded yet), from :func:`ytspark.generate.true_engagement`."""
    from ytspark import generate as G

    videos = np.asarray(videos)
    out = {k: np.zeros(videos.shape, np.float64) for k in ("watch", "p_click", "duration")}
    ids = np.array([None, None] + [str(v) for v in video_values], dtype=object)  # idx 0, 1: padding, OOV
    b, k = np.nonzero(videos >= 2)
    if len(b):
        tr = G.true_engagement(cfg.generate, np.asarray(user_ids, dtype=object)[b], ids[videos[b, k]],
                               np.asarray(as_of, np.float64)[b])
        ok = tr["available"].to_numpy()
        out["watch"][b, k] = tr["expected_watch_seconds"].to_numpy()
        out["p_click"][b, k] = tr["p_click"].to_numpy()
        out["duration"][b, k] = np.where(ok, tr["duration"].to_numpy(), 0.0)
    return out


def ordering_metrics(cols: dict, logit: np.ndarray, weight: float = 0.0) -> dict:
    from ytspark.models.blend import blend_key, slate_metrics
    from ytspark.models.rank_metrics import auc, weighted_per_user_loss

    user, clicked = cols[S.USER_ID], np.asarray(cols[S.RANK_CLICKED])
    watch = np.asarray(cols[S.RANK_WATCH_SECONDS], np.float64)
    ret = np.asarray(cols["retrieval_score"], np.float64)
    out = {}
    orders = [("retrieval", ret), ("ranker", np.asarray(logit, np.float64))]
    if weight:
        orders.append((f"blend (w = {weight:g})", blend_key(orders[1][1], ret, weight)))
    for name, s in orders:
        w = weighted_per_user_loss(user, s, clicked, watch)
        out[name] = {"wpul": w["weighted_per_user_loss"], "auc": auc(s, clicked), "users": w["n_users"],
                     "slate_ndcg@10": slate_metrics(user, s, clicked, 10)["ndcg@10"]}
    out["rows"] = int(len(clicked))
    return out


def measure(spark, cfg, root: str, truth: bool) -> dict:
    from ytspark.evaluate.metrics import ranking_metrics
    from ytspark.evaluate.protocol import load_eval_sets
    from ytspark.evaluate.systems import candidate_topk, ranked_topk
    from ytspark.models.blend import ServingOrder, retrieval_weight
    from ytspark.models.export import load_ranker, read_model_dir
    from ytspark.rows import read_split
    from ytspark.train.ranker_task import load_split, predict_logit
    from ytspark.vocab import Vocab

    prepared, models = f"{root}/prepared", f"{root}/models"
    rmd = read_model_dir(models, "ranker")
    res = {"candidate_model": read_model_dir(models, "candidate").version, "ranker": rmd.version,
           "rank_rows_mode": rmd.meta.get("rank_rows_mode"), "ranker_history": rmd.json("metrics.json")["history"],
           "blend": rmd.meta.get("blend"), "monitor": rmd.meta.get("monitor")}
    weight = retrieval_weight(rmd.meta)
    systems = ["candidate", "candidate + ranking"] + (["candidate + ranking, w = 0"] if weight else [])
    sets = load_eval_sets(spark, prepared)
    for split, es in sets.items():
        t = time.time()
        cand = candidate_topk(models, prepared, es, 10)
        ranked = ranked_topk(spark, models, models, prepared, es, 10, cfg.score.k,
                             objective=cfg.ranker.objective, blend_weight=cfg.ranker.blend_weight)
        tops = [cand, ranked] + ([ranked_topk(spark, models, models, prepared, es, 10, cfg.score.k,
                                              order=ServingOrder("watch_time"))]
                                 if weight else [])
        r = {"users": len(es), "seconds": round(time.time() - t, 1)}
        for name, top in zip(systems, tops):
            m = ranking_metrics(top, es, ks=(10,))
            r[name] = {"hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]}
        if truth:
            ts = read_split(f"{prepared}/candidates/{split}", [S.USER_ID, S.CAND_LABEL_TS])
            as_of = es.align(ts[S.USER_ID], np.asarray(ts[S.CAND_LABEL_TS], np.float64))
            values = Vocab.load(spark, f"{prepared}/vocab/video.json").values
            tc = true_watch_time(cfg, es.user_ids, as_of, cand, values)
            tr = true_watch_time(cfg, es.user_ids, as_of, ranked, values)
            tw_c, tw_r = tc["watch"].sum(axis=1), tr["watch"].sum(axis=1)
            d = tw_r - tw_c
            for name, tt, tw in (("candidate", tc, tw_c), ("candidate + ranking", tr, tw_r)):
                r[name]["true_watch_s@10"] = float(tw.mean())
                r[name]["true_p_click@10"] = float(tt["p_click"].mean())
                r[name]["duration_s@10"] = float(tt["duration"].mean())
            r["true_watch_gain"] = {"mean_s": float(d.mean()), "stderr_s": float(d.std(ddof=1) / np.sqrt(len(d))),
                                    "ratio": float(tw_r.mean() / tw_c.mean()), "users_better": float((d > 0).mean()),
                                    "users_worse": float((d < 0).mean())}
        res[split] = r
    ranker = load_ranker(models)[0]
    rows = rmd.meta.get("rank_rows")
    counts = json.loads(Path(rows, "manifest.json").read_text())["rows"] if rows else {}
    for split in ("val", "test"):
        if counts.get(split, 1) == 0:
            res[f"impressions_{split}"] = {"rows": 0}  # e.g. synthetic: slates come before the watch they lead to
            continue
        cols = load_split(prepared, split, rows)
        res[f"impressions_{split}"] = ordering_metrics(cols, predict_logit(ranker, cols), weight)
    return res


def render(doc: dict) -> str:
    """The "### bench/rerank.py <kind>" table of BENCHMARKS.md from a results document."""
    res = doc["res"]
    lines = [f"### bench/rerank.py {doc['kind']} ({doc['date']})", "",
             f"Reranking the candidate model's top {res['k']}. Command: `{doc['command']}`  ",
             R.machine_line(doc, f", Spark local[2]; load average at the end {doc['load_after'][0]:.1f}"),
             f"Models: candidate {res['candidate_model']}, ranker {res['ranker']} (rows: {res['rank_rows_mode']}); "
             f"{doc['notes']}. Stage times (s): {doc['steps'] or 'not run by this command'}.\n"]
    for split in ("test", "val"):
        if split not in res:
            continue
        r = res[split]
        truth = "true_watch_s@10" in r["candidate"]
        extra = truth and "true_p_click@10" in r["candidate"]
        head = "| system | HR@10 | NDCG@10 |" + (" true expected watch s, top 10 |" if truth else "") + \
            (" mean true P(click) | mean duration s |" if extra else "")
        lines += [f"{'Test' if split == 'test' else 'Validation'} target ({r['users']} users):\n", head,
                  "|---|---:|---:|" + ("---:|" if truth else "") + ("---:|---:|" if extra else "")]
        for name in [x for x in r if isinstance(r[x], dict) and "hr@10" in r[x]]:
            m = r[name]
            lines.append(f"| {name} order | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} |"
                         + (f" {m['true_watch_s@10']:.1f} |" if truth else "")
                         + (f" {m['true_p_click@10']:.4f} | {m['duration_s@10']:.0f} |" if extra else ""))
        if truth:
            g = r["true_watch_gain"]
            lines.append(f"\nReranking changes the true watch time of the top 10 by {g['mean_s']:+.1f} s per user "
                         f"(± {g['stderr_s']:.1f} s standard error, x{g['ratio']:.3f}); better for "
                         f"{g['users_better']:.0%} of users, worse for {g['users_worse']:.0%}.")
        lines.append("")
    b = res.get("blend") or {}
    if b.get("criterion"):
        lines += [f"Serving blend (`ranker.objective = blend`, `blend_weight = -1`, ytspark/models/blend.py): key = ranker logit + w x retrieval "
                  f"logit, w chosen on the validation rows by {b['criterion']}: "
                  + ", ".join(f"w={w}: {v:.4f}" for w, v in b["by_weight"].items())
                  + f" -> **w = {b['retrieval_weight']:g}**.\n"]
    lines += ["Held-out impression rows (ordering within each user's rows; WPUL lower is better):\n",
              "| rows | ordering | weighted per-user loss | AUC | NDCG@10 in slate | users |",
              "|---|---|---:|---:|---:|---:|"]
    for split in ("val", "test"):
        m = res[f"impressions_{split}"]
        if not m["rows"]:
            lines.append(f"| {split} (0: no held-out rows in this split) | | | | | |")
            continue
        for name in [x for x in m if isinstance(m[x], dict)]:
            lines.append(f"| {split} ({m['rows']:,}) | {name} | {m[name]['wpul']:.4f} | {m[name]['auc']:.4f} "
                         f"| {m[name].get('slate_ndcg@10', float('nan')):.4f} | {m[name]['users']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["syn", "ml"])
    ap.add_argument("--root", required=True, help="output root (raw/, prepared/, models/)")
    ap.add_argument("--movielens", help="ml: the ml-latest-small folder")
    ap.add_argument("--train", action="store_true", help="run the pipeline stages first")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides for training")
    R.add_args(ap, "rerank_<kind>", 'the "### bench/rerank.py <kind>" table')
    args = ap.parse_args()
    doc = {**R.stamp("rerank"), "kind": args.kind}
    profile = "movielens" if args.kind == "ml" else None
    sets = [x for o in args.overrides for x in ("--set", o)]
    common = ["--output", args.root, *(["--profile", profile] if profile else []), *sets]
    steps = {}
    if args.train:
        if args.kind == "syn":
            if not Path(args.root, "prepared", "_SUCCESS").exists():
                steps["generate+prepare+train-candidates"] = run(
                    [YT, "pipeline", *common, "--skip", "train-ranker", "--skip", "score", "--skip", "evaluate"])
        else:
            if not Path(args.root, "prepared", "_SUCCESS").exists():
                steps["prepare"] = run([YT, "prepare", "--movielens", args.movielens, *common])
            if not Path(args.root, "models", "candidate", "LATEST").exists():
                steps["train-candidates"] = run([YT, "train-candidates", *common])
        steps["train-ranker"] = run([YT, "train-ranker", *common])
    cfg = load_config(profile, args.overrides)
    from ytspark.session import get_spark

    spark = get_spark(cfg, app_name="bench-rerank")
    try:
        res = measure(spark, cfg, args.root.rstrip("/"), truth=args.kind == "syn")
    finally:
        spark.stop()
    res["k"] = cfg.score.k
    print(json.dumps({k: v for k, v in res.items() if k != "ranker_history"}, indent=1, default=float))
    r = cfg.ranker
    mon = f"val_{res.get('monitor') or 'one_minus_wpul'}"
    notes = (f"ranker: hidden {list(r.hidden)}, {r.epochs} epochs (best epoch by {mon}: "
             f"{max(res['ranker_history'], key=lambda h: h.get(mon, -1)).get('epoch')})")
    if args.overrides:
        notes += f", overrides {args.overrides}"
    doc.update(res=res, steps=steps, notes=notes, load_after=R.load())
    R.finish(f"rerank_{args.kind}", doc, render, args, AREA)


if __name__ == "__main__":
    main()

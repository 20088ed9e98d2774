"""Benchmark: the serving blend's trade-off between the next watch and watch time, on the validation target.

    make run
    .venv/bin/python bench/objective.py --output out [--results bench/results/objective.json]

The three serving objectives (``ranker.objective``, ``ytspark.models.blend``):
"watch_time" (w = 0, the paper's order by expected watch time), "blend" (ranker
logit + w x retrieval logit, one row per w of ``ranker.blend_weights``) and
"next_watch" (the candidate model's order, the retrieval row). For each w the ranked validation lists
(``ytspark.evaluate.systems.ranked_topk``, features as of each target) get
HR@10 / NDCG@10 against the validation watch and, on a generated world, the
generator's true watch seconds and click probability of the top 10
(``ytspark.evaluate.truth``); "retrieval" is the candidate model's own order.
The w the export chose (``ranker.blend_weight = -1``, by the ranker's own
criterion on the validation rows) is marked.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark.config import load_config  # noqa: E402
import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="out")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "objective.json"))
    args = ap.parse_args(argv)

    from ytspark.evaluate.metrics import ranking_metrics
    from ytspark.evaluate.protocol import load_eval_sets
    from ytspark.evaluate.systems import candidate_topk, ranked_candidates
    from ytspark.evaluate.truth import truth_metrics
    from ytspark.models.blend import ServingOrder, retrieval_weight
    from ytspark.models.export import read_model_dir
    from ytspark.session import get_spark

    cfg = load_config(args.profile)
    spark = get_spark(cfg, app_name="ytspark-bench-objective")
    out = Path(args.output).resolve()
    prepared, models = str(out / "prepared"), str(out / "models")
    es = load_eval_sets(spark, prepared)[args.split]
    chosen = retrieval_weight(read_model_dir(models, "ranker").meta)
    t0 = time.time()
    lists = {}
    ranked = ranked_candidates(spark, models, models, prepared, es, cfg.score.k)  # scored once, ordered per w
    for w in sorted({*cfg.ranker.blend_weights, chosen}):
        lists[f"w={w:g}"] = ranked.topk(ServingOrder("blend", w), 10)
    lists["retrieval"] = candidate_topk(models, prepared, es, 10)
    truth = truth_metrics(spark, prepared, lists, es)
    rows = []
    for name, top in lists.items():
        m = ranking_metrics(top, es, [10], 10, system=name)
        rows.append({"order": name, "chosen": name == f"w={chosen:g}", "hr@10": round(m["hr@10"], 4),
                     "ndcg@10": round(m["ndcg@10"], 4), **truth.get(name, {})})
    spark.stop()
    res = {**R.stamp("objective"), "split": args.split, "users": len(es), "chosen_w": chosen,
           "seconds": round(time.time() - t0, 1), "rows": rows}
    R.write_json("objective", res, args.results)
    print("\n".join(R.md_table(
        [f"order ({args.split}, {len(es):,} users)", "HR@10", "NDCG@10", "true watch s of the top 10", "true P(click)"],
        [[r["order"] + (" (chosen)" if r["chosen"] else ""), f"{r['hr@10']:.4f}", f"{r['ndcg@10']:.4f}",
          f"{r.get('true_watch_s@10', float('nan')):,.0f}", f"{r.get('true_p_click@10', float('nan')):.4f}"]
         for r in rows])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ablation of the candidate network (the bag encoder) in the style of the paper's Figure 6: inputs added one at
a time, then depth, then the co-visitation source fused with the linear network (ytspark.models.covisit).

    .venv/bin/python bench/ablation.py --prepared out/prepared [--epochs 5] [--only NAME ...]

Every variant is trained with the real training path (Petastorm, the loop,
launcher ``local``, early stopping on validation HR@10) and scored by the
evaluation protocol (test target = each user's last watch, whole catalogue,
every video watched before it excluded). Writes the figures with the date,
command, machine and commit to bench/results/ablation.json (ablation_<profile>.json
with --profile); with --write-benchmarks also replaces the "### bench/ablation.py"
table in BENCHMARKS.md (``bench/results.py render ablation`` does the same).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark.config import load_config  # noqa: E402
from ytspark.evaluate.metrics import ranking_metrics  # noqa: E402
from ytspark.evaluate.protocol import load_eval_sets  # noqa: E402
from ytspark.evaluate.systems import candidate_topk  # noqa: E402
from ytspark.session import get_spark  # noqa: E402
from ytspark.train.launcher import train  # noqa: E402
import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)

AREA = "## Quality"

NO_EXTRAS = ["candidate.use_searches=false", "candidate.use_demographics=false", "candidate.use_example_age=false"]
VARIANTS = [
    ("watches only", ['candidate.recency="none"', *NO_EXTRAS]),
    ("+ searches", ['candidate.recency="none"', "candidate.use_demographics=false", "candidate.use_example_age=false"]),
    ("+ demographics", ['candidate.recency="none"', "candidate.use_example_age=false"]),
    ("+ example age (the paper's model)", ['candidate.recency="none"']),
    ("+ recency inputs (last 5 ids, time since last)", ['candidate.recency="last_k"']),
    ("depth 0 (linear), all inputs", ['candidate.recency="last_k"', "candidate.hidden=[]"]),
    ("depth 1: 256", ['candidate.recency="last_k"', "candidate.hidden=[256]"]),
    ("depth 2: 512-256", ['candidate.recency="last_k"', "candidate.hidden=[512,256]"]),
    ("depth 3: 1024-512-256", ['candidate.recency="last_k"', "candidate.hidden=[1024,512,256]"]),
    ("depth 4: 2048-1024-512-256", ['candidate.recency="last_k"', "candidate.hidden=[2048,1024,512,256]"]),
    (COVISIT := "depth 0 + the fused co-visitation source (the default)",
     ['candidate.recency="last_k"', "candidate.hidden=[]"]),
]
BASE_DEPTH = "candidate.hidden=[512,256]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default=str(ROOT / "out" / "prepared"))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--only", nargs="*", help="variant name prefixes to run")
    R.add_args(ap, "ablation[_<profile>]", 'the "### bench/ablation.py" table (with --profile)')
    args = ap.parse_args()
    doc = {**R.stamp("ablation"), "profile": args.profile, "epochs": args.epochs}
    cfg0 = load_config(args.profile, ['spark.master="local[2]"', *args.overrides])
    spark = get_spark(cfg0, app_name="ytspark-ablation")
    sets = load_eval_sets(spark, args.prepared, ("test",))
    test = sets["test"]
    rows = []
    for name, over in VARIANTS:
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        depth = [] if any(o.startswith("candidate.hidden") for o in over) else [BASE_DEPTH]
        fused = name == COVISIT  # the other rows measure the network alone
        cfg = load_config(args.profile, ['candidate.encoder="bag"', *depth, *over, f"candidate.epochs={args.epochs}",
                                         "train.progress=false", "train.patience=2",
                                         *([] if fused else ["candidate.covisit_weights=[]"]), *args.overrides])
        t = time.time()
        with tempfile.TemporaryDirectory(prefix="ytspark-ablation-") as models:
            r = train(cfg, "candidate", args.prepared, models)
            m = ranking_metrics(candidate_topk(r["model_dir"], args.prepared, test, 100, covisit=fused), test,
                                (10, 50, 100))
        rows.append((name, m, r["best_epoch"], round(time.time() - t)))
        print(f"{name}: hr@10 {m['hr@10']:.4f} hr@50 {m['hr@50']:.4f} ndcg@10 {m['ndcg@10']:.4f} "
              f"(best epoch {r['best_epoch']}, {rows[-1][3]}s)", flush=True)
    spark.stop()
    doc.update(users=len(test), catalogue=test.n_catalogue, rows=[
        {"variant": n, "metrics": m, "best_epoch": e, "seconds": sec} for n, m, e, sec in rows])
    R.finish("ablation" + (f"_{args.profile}" if args.profile else ""), doc, render, args, AREA)


def render(doc: dict) -> str:
    """The "### bench/ablation.py[ --profile P]" table of BENCHMARKS.md from a results document."""
    profile = f" --profile {doc['profile']}" if doc.get("profile") else ""
    lines = [
        f"### bench/ablation.py{profile} ({doc['date']})", "",
        f"Command: `{doc['command']}`  ",
        R.machine_line(doc),
        f"Test target of {doc['users']:,} users, catalogue {doc['catalogue']:,}, watched videos excluded; each variant "
        f"trained up to {doc['epochs']} epochs (early stopping on validation HR@10). Variants that do not set the "
        "tower use 512-256; the depth rows use every input; every row but the co-visitation one is the network "
        "alone.", "",
        "| variant | HR@10 | HR@50 | HR@100 | NDCG@10 | MRR | best epoch | seconds |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r['variant']} | {m['hr@10']:.4f} | {m['hr@50']:.4f} | {m['hr@100']:.4f} | {m['ndcg@10']:.4f} | "
          f"{m['mrr']:.4f} | {r['best_epoch']} | {r['seconds']} |" for r in doc["rows"] for m in [r["metrics"]]],
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

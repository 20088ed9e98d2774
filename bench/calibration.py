"""Benchmark: is the written ``score`` the expected watch seconds per impression? (issue 16)

    make run        # or: ytspark pipeline --output out (a generated world: the truth columns need one)
    .venv/bin/python bench/calibration.py --output out [--write-benchmarks]

On the ranker's held-out users' training impressions (``<models>/ranker/_rows/calibration``,
``ranker.calibration_share``: never trained on) the served score per decile of the logit
against the observed watch seconds per impression, for two maps from the logit to seconds:

- **now**: the export's map, fitted on these rows, judged cross-fitted (each half of the users
  scored by the map fitted on the other half: ``score_calibration.cross_fit``);
- **before**: the same fit on the validation impressions, the rows the map used to come from.
  They lie between a user's last two watches, so at most one click can follow them: their
  click rate and watch time per impression are a fraction of the log's, and so was the score.

On a generated world it adds the generator's expected watch seconds of each row
(``ytspark.evaluate.truth.true_watch_of_rows``: the click and completion model of the
recommended entries of a home slate) beside the observed; logged slates also hold the videos
the user came for, always clicked, which that model leaves out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)

AREA = "Ranking"


def _split_stats(w: np.ndarray, truth: np.ndarray | None) -> dict:
    return {"rows": int(len(w)), "click_rate": round(float((w > 0).mean()), 4),
            "watch_s": round(float(w.mean()), 2),
            **({"truth_s": round(float(np.nanmean(truth)), 2)} if truth is not None else {})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="out", help="the pipeline's output directory (prepared/, models/)")
    ap.add_argument("--profile", default=None)
    R.add_args(ap, "calibration", '"Ranker score calibration"')
    args = ap.parse_args(argv)

    from ytspark import schema as S
    from ytspark.config import load_config
    from ytspark.evaluate.truth import true_watch_of_rows
    from ytspark.models import score_calibration as C
    from ytspark.session import get_spark
    from ytspark.models.export import load_ranker
    from ytspark.train.ranker_task import load_split, predict_logit

    out = Path(args.output).resolve()
    prepared, models = str(out / "prepared"), str(out / "models")
    model, md = load_ranker(models)
    cal = md.meta.get("calibration") or {}
    if cal.get("fitted_on") != S.CALIBRATION:
        raise SystemExit(f"{models}/ranker: its map was fitted on '{cal.get('fitted_on', 'val')}', not on held-out "
                         "users' impressions: retrain the ranker (ranker.calibration_share > 0, logged impressions)")
    spark = get_spark(load_config(args.profile), app_name="ytspark-bench-calibration")
    data = {}
    for split in (S.CALIBRATION, "val"):
        rows = load_split(prepared, split, md.meta["rank_rows"], extra=(S.RANK_IMPRESSION_TS,))
        data[split] = {"pred": np.exp(predict_logit(model, rows)).astype(np.float64),
                       "watch": np.asarray(rows[S.RANK_WATCH_SECONDS], np.float64),
                       "users": np.asarray(rows[S.USER_ID]), "truth": true_watch_of_rows(spark, prepared, rows)}
    spark.stop()
    h, v = data[S.CALIBRATION], data["val"]
    before = C.fit(v["pred"], v["watch"], v["users"])
    served = {"now": C.cross_fit(h["pred"], h["watch"], h["users"], cal), "before": C.apply(before, h["pred"])}
    deciles = []
    for b, idx in enumerate(np.array_split(np.argsort(h["pred"], kind="stable"), 10)):
        w = h["watch"][idx]
        deciles.append({"decile": b, "rows": int(len(idx)), "exp_logit": float(h["pred"][idx].mean()),
                        "now": float(served["now"][idx].mean()), "before": float(served["before"][idx].mean()),
                        "observed": float(w.mean()), "se": float(w.std(ddof=1) / np.sqrt(len(idx))),
                        **({"truth": float(np.nanmean(h["truth"][idx]))} if h["truth"] is not None else {})})
    doc = {**R.stamp("calibration"), "output": str(args.output), "ranker": md.version,
           "map": {k: cal.get(k) for k in ("method", "choice", "cv_deviance", "n", "n_clicked")},
           "splits": {S.CALIBRATION: _split_stats(h["watch"], h["truth"]), "val": _split_stats(v["watch"], v["truth"])},
           "overall": {k: round(float(s.mean() / h["watch"].mean()), 3) for k, s in served.items()},
           "deciles": deciles}
    R.finish("calibration", doc, render, args, AREA)
    return 0


def render(doc: dict) -> str:
    d = doc["deciles"]
    ok = sum(abs(r["now"] / r["observed"] - 1) <= 0.25 for r in d if r["observed"] > 0)
    was = sum(abs(r["before"] / r["observed"] - 1) <= 0.25 for r in d if r["observed"] > 0)
    cs, vs = doc["splits"]["calibration"], doc["splits"]["val"]
    truth = "truth" in d[0]
    head = ["decile", "exp(logit), s", "served now, s", "observed, s", "now / observed", "before / observed"]
    head += ["generator's E[T], s"] if truth else []
    rows = [[r["decile"], f"{r['exp_logit']:.1f}", f"{r['now']:.1f}", f"{r['observed']:.1f} ± {r['se']:.1f}",
             f"{r['now'] / r['observed']:.2f}", f"{r['before'] / r['observed']:.2f}",
             *([f"{r['truth']:.1f}"] if truth else [])] for r in d]
    m = doc["map"]
    lines = [
        f"### Ranker score calibration ({doc['date']})", "",
        f"**Verdict:** goal (the written `score` within ±25% of the observed watch seconds per impression in every "
        f"decile, on rows its map was not fitted on): **{ok} of {len(d)} deciles met** on the held-out users' "
        f"impressions (the map fitted on validation, as before, met {was}: overall {doc['overall']['before']:.2f}x "
        f"the observed against {doc['overall']['now']:.2f}x now).", "",
        f"`{doc['command']}` after `ytspark pipeline --output {doc['output']}` (`make run`'s world). "
        + R.machine_line(doc), "",
        "Which rows fit the map. The validation impressions lie between each user's last two watches, so at most "
        "one click can follow them: their click rate is "
        f"{vs['click_rate']:.1%} and their watch time {vs['watch_s']:.1f} s per impression, against "
        f"{cs['click_rate']:.1%} and {cs['watch_s']:.1f} s on training impressions ({vs['rows']:,} and "
        f"{cs['rows']:,} rows). That is a selection by the future, not the generator's behaviour (the training "
        "impressions' click rate is flat over the last ten days of the log), and a map fitted there served about "
        "half the watch time an impression gets. Now `train-ranker` holds a hashed `ranker.calibration_share` "
        "(10%) of the users out of training (`<models>/ranker/_rows/calibration`, "
        "`ytspark/train/rank_rows.py`) and fits the map on their training impressions; the evaluation report's "
        "calibration panel uses the same rows.", "",
        "Per decile of the logit: mean exp(logit), served score, observed watch seconds per impression (0 when not "
        "clicked; ± one standard error). **Cross-fitted, not in-sample:** \"now\" scores each half of the held-out "
        "users by the map fitted on the other half (`score_calibration.cross_fit`); \"before\" is the map fitted on "
        f"the validation impressions. The export's map: {m.get('method')} (cross-fitted Poisson deviance "
        f"{', '.join(f'{k} {v:.1f}' for k, v in (m.get('cv_deviance') or {}).items())}; "
        f"{m.get('n_clicked'):,} clicked of {m.get('n'):,} rows).", "",
        *R.md_table(head, rows, "r" * len(head)), "",
    ]
    if truth:
        lines += [
            f"The generator's expected watch seconds (the last column; {cs['truth_s']:.1f} s a row against "
            f"{cs['watch_s']:.1f} s observed) is the click and completion model of the entries a recommender adds "
            "to a home slate, the model that decides the clicks on a nightly list in `bench/two_nights.py`. A "
            "logged slate also shows the videos the user came for, always clicked, so the observed watch time of "
            "logged impressions is above that model's; the map follows the logs, as it must on real data.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

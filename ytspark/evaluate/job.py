"""The evaluation job: baselines and any other system's top-K lists, metrics on val and test, the report.

``run_baselines(spark, cfg, prepared_dir)`` loads both target splits once,
computes popularity and ALS (grid tuned on the validation target, the chosen
point refitted for the test target) and returns an :class:`Evaluation`.
Other systems join with ``add_system(ev, name, {"val": topk, "test": topk},
cfg.evaluate)`` (lists in ``ev.sets[split].user_ids`` order; see
``EvalSet.align``), then ``write_evaluation(out_dir, ev, curves)`` writes
the report. ``ytspark.pipeline.run_evaluate`` assembles them (with the models' systems).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from pyspark.sql import SparkSession

from ytspark.config import Config, EvaluateConfig
from ytspark.evaluate.baselines import als_grid, als_score_block, als_topk, popularity_topk, tune_als
from ytspark.evaluate.impressions import HeldOut, load_held_out, video_channels
from ytspark.evaluate.metrics import hr_curve, ranking_metrics
from ytspark.evaluate.protocol import EvalSet, load_eval_sets
from ytspark.evaluate.report import write_report

log = logging.getLogger(__name__)

MAIN_SPLIT = "test"


@dataclass
class Evaluation:
    """Everything one evaluation run holds: target sets, lists, metrics, baseline details and timings."""

    sets: dict[str, EvalSet]
    topk: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # system -> split -> [B, K]
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # system -> split -> metrics
    details: dict[str, list[dict]] = field(default_factory=dict)  # table title -> rows
    timings: dict[str, float] = field(default_factory=dict)
    held_out: HeldOut | None = None  # the main split's held-out impressions (None: the log has none)
    channels: np.ndarray | None = None  # channel code of each video index (-1 unknown)

    def table(self, split: str = MAIN_SPLIT) -> dict[str, dict]:
        """system -> metrics of one split (the report's main table for ``test``)."""
        return {name: by[split] for name, by in self.metrics.items() if split in by}


def add_system(ev: Evaluation, name: str, topk_by_split: dict[str, np.ndarray], cfg: EvaluateConfig) -> None:
    """Score a system's lists on the splits given (each [B, K] in ``ev.sets[split]`` user order)."""
    for split, topk in topk_by_split.items():
        if split not in ev.sets:
            raise ValueError(f"add_system('{name}'): no '{split}' targets loaded; splits are {sorted(ev.sets)}")
        m = ranking_metrics(np.asarray(topk), ev.sets[split], cfg.ks, cfg.coverage_k, system=name,
                            channel_of=ev.channels)
        ev.topk.setdefault(name, {})[split] = np.asarray(topk)
        ev.metrics.setdefault(name, {})[split] = m
        log.info("evaluate %s on %s: %s", name, split,
                 " ".join(f"{k}={v:.4f}" for k, v in m.items() if k.startswith(("hr@", "ndcg@10", "mrr"))))


def add_impression_scores(ev: Evaluation, name: str, scores) -> None:
    """Score the main split's held-out impressions (:mod:`ytspark.evaluate.impressions`) for system ``name``
    (already added): ``scores`` is float [N] in ``ev.held_out`` order, or a ``score_block(a, b)`` over the
    catalogue. Adds wpul, auc, watch_ndcg (:func:`ytspark.models.rank_metrics.impression_metrics`) to its
    metrics; nothing without held-out impressions."""
    from ytspark.models.rank_metrics import impression_metrics

    h, es = ev.held_out, ev.sets.get(MAIN_SPLIT)
    if h is None or es is None or not len(h):
        return
    s = scores if isinstance(scores, np.ndarray) else h.scores(scores, len(es))
    s = np.nan_to_num(np.asarray(s, np.float64), nan=-np.inf)
    s[np.isneginf(s)] = np.min(s[np.isfinite(s)], initial=0.0) - 1.0  # "never recommended": below every other
    m = impression_metrics(h.rows, s, h.clicked, h.watch_seconds)
    ev.metrics[name][MAIN_SPLIT].update(m)
    log.info("evaluate %s on held-out impressions: wpul=%.4f auc=%.4f watch_ndcg=%.4f", name, m["wpul"], m["auc"],
             m["watch_ndcg"])


def run_baselines(spark: SparkSession, cfg: Config, prepared_dir: str, out_dir: str | None = None) -> Evaluation:
    """Popularity and tuned ALS on the validation and test targets of ``prepared_dir``.

    ALS: every point of the ``[evaluate]`` grid is fitted on the training
    watches and scored on the validation target; the best HR@10 (HR at the
    first of ``evaluate.ks`` when 10 is not among them) is refitted
    on training + validation watches and scored on the test target. The
    report is written to ``out_dir`` when given.
    """
    e = cfg.evaluate
    if e.topk < max(e.ks):
        raise ValueError(f"evaluate.topk={e.topk} must be >= max(evaluate.ks)={max(e.ks)}")
    t0 = time.time()
    sets = load_eval_sets(spark, prepared_dir)
    main = sets[MAIN_SPLIT]
    ev = Evaluation(sets=sets, held_out=load_held_out(spark, prepared_dir, main),
                    channels=video_channels(spark, prepared_dir, main.n_items))
    ev.timings["load_s"] = round(time.time() - t0, 2)

    t = time.time()
    add_system(ev, "popularity", {s: popularity_topk(es, e.topk, e.chunk_users) for s, es in ev.sets.items()}, e)
    pop = main.item_counts.astype(np.float64)  # the watch count itself: equal counts tie (half a pair each)
    add_impression_scores(ev, "popularity", lambda a, b: np.broadcast_to(pop, (b - a, len(pop))))
    ev.timings["popularity_s"] = round(time.time() - t, 2)

    t = time.time()
    grid = als_grid(e.als_ranks, e.als_reg_params, e.als_alphas, e.als_max_iter, e.seed)
    select = "hr@10" if 10 in e.ks else f"hr@{e.ks[0]}"
    best, rows, val_topk = tune_als(spark, prepared_dir, ev.sets["val"], grid, e.topk, e.ks, select, e.chunk_users,
                                    e.als_parallelism)
    ev.timings["als_tuning_s"] = round(time.time() - t, 2)
    t = time.time()
    test_topk, info, factors = als_topk(spark, prepared_dir, ev.sets["test"], e.topk, best, e.chunk_users)
    ev.timings["als_test_s"] = round(time.time() - t, 2)
    add_system(ev, "als", {"val": val_topk, "test": test_topk}, e)
    add_impression_scores(ev, "als", als_score_block(factors, ev.sets["test"])[0])
    ev.details["ALS grid (fitted on train watches, scored on the validation target)"] = rows
    ev.details["ALS chosen, refitted on train + validation watches for the test target"] = [
        {**asdict(best), "fit_s": info["fit_s"], "retrieval_s": info["retrieval_s"], "cold_users": info["cold_users"]}]
    ev.timings["total_s"] = round(time.time() - t0, 2)
    if out_dir:
        write_evaluation(out_dir, ev, prepared_dir=prepared_dir)
    return ev


def write_evaluation(out_dir: str, ev: Evaluation, curves: dict[str, list[dict]] | None = None,
                     prepared_dir: str = "", calibration: dict[str, dict] | None = None) -> str:
    """Write ``ev`` as a report (test metrics table, validation table, HR@K curves, details); returns report.md."""
    test = ev.sets.get(MAIN_SPLIT)
    hr = {name: hr_curve(by[MAIN_SPLIT], test) for name, by in ev.topk.items() if MAIN_SPLIT in by}
    notes = [
        "Protocol: per user the last watch is the test target, the one before the validation target; "
        "whole-catalogue ranking; videos watched before the target are excluded.",
        f"Prepared data: `{prepared_dir}`" if prepared_dir else "",
        f"Targets: val {len(ev.sets['val']) if 'val' in ev.sets else 0}, test {len(test) if test else 0}; "
        f"catalogue {test.n_catalogue if test else 0} videos.",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in ev.timings.items()),
    ]
    extra = {"Validation target": [{"system": n, **m} for n, m in ev.table("val").items()], **ev.details}
    return write_report(out_dir, ev.table(MAIN_SPLIT), curves, hr, extra, "ytspark evaluation (test target)",
                        [n for n in notes if n], calibration)

"""The stages in order, and the one place that wires them together.

``run_pipeline(spark, cfg)`` is ``make run``: generate (when no input is
configured) -> prepare -> train-candidates -> train-ranker -> score ->
evaluate, each under ``data.output`` (:func:`paths`). Each ``run_<stage>``
function is one command of ``ytspark`` (:mod:`ytspark.cli` parses the
arguments and calls it; ``jobs/*.py`` go through the same parser) and may be
called directly by a test or a notebook.

It is the one module that imports every stage: a stage package
(``prepare``, ``train``, ``score``, ``evaluate``) reads the previous stage's
output from storage and imports at most the stage next to it
(``tests/test_layout.py``).

Each function imports its stage's modules when it runs: a command loads only
the libraries its stages use (``generate`` no torch), and importing this
module (as ``cli`` does before the config is checked) loads no pyspark.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any, Iterable, Sequence

from ytspark.config import Config

log = logging.getLogger("ytspark")

STAGES = ("generate", "prepare", "train-candidates", "train-ranker", "score", "evaluate")


def paths(cfg: Config) -> dict[str, str]:
    """Where each stage writes under ``data.output`` (absolute on the driver; URLs kept as they are)."""
    from ytspark.storage import resolve

    out = resolve(cfg.data.root, cfg.data.output) if cfg.data.root else cfg.data.output
    if "://" not in out and not os.path.isabs(out):
        # absolute on the driver: executors and Horovod ranks run in their own working directories
        out = os.path.abspath(out)
    return {"raw": f"{out}/raw", "prepared": f"{out}/prepared", "models": f"{out}/models",
            "evaluation": f"{out}/evaluation", "scores": out}


# --- model directories ------------------------------------------------------------------------------------------

def has_model(path: str, kind: str) -> bool:
    """Whether ``path`` (a models root or a model dir) holds a published ``kind`` model."""
    from ytspark.models.export import ModelDirError, resolve_model_dir

    try:
        resolve_model_dir(path, kind)
        return True
    except ModelDirError:
        return False


def compare_models(items: Sequence[str], kind: str = "candidate") -> list[tuple[str, str]]:
    """``--compare NAME=DIR`` (``--compare-ranker``: kind "ranker") values -> [(name, dir)]; a bad value or a
    missing model raises, naming it."""
    from ytspark.models.export import ModelDirError, read_model_dir

    flag = "--compare" if kind == "candidate" else "--compare-ranker"
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"{flag} '{item}' must look like NAME=DIR (e.g. {flag} linear=out/models_linear)")
        try:
            read_model_dir(path.strip(), kind)
        except ModelDirError as e:
            raise ModelDirError(f"{flag} {name}: {e}") from None
        out.append((name.strip(), path.strip()))
    return out


def check_models(cfg: Config, models: str | None = None, *, baselines_hint: bool = False,
                 compare: Sequence[str] = (), compare_ranker: Sequence[str] = ()) -> None:
    """Raise ModelDirError when score/evaluate would read a missing, incomplete or other-version model
    (before Spark starts). ``baselines_hint``: the message suggests ``--no-model`` (evaluate)."""
    from ytspark.models.export import ModelDirError, read_model_dir

    models = models or paths(cfg)["models"]
    try:
        read_model_dir(models, "candidate")
    except ModelDirError as e:
        raise ModelDirError(f"{e}{'; or pass --no-model for baselines only' if baselines_hint else ''}") from None
    if has_model(models, "ranker"):
        read_model_dir(models, "ranker")
    compare_models(compare)
    compare_models(compare_ranker, "ranker")


def _history(models: str, kind: str) -> list[dict]:
    from ytspark.models.export import read_model_dir

    if not has_model(models, kind):
        return []
    return read_model_dir(models, kind).json("metrics.json")["history"]


def _covisit_weight(models: str) -> float:
    """The co-visitation weight the candidate model under ``models`` serves with (0: the network alone)."""
    from ytspark.models.export import read_model_dir

    return float((read_model_dir(models, "candidate").meta.get("covisit") or {}).get("weight", 0.0))


# --- the stages ---------------------------------------------------------------------------------------------------

def run_generate(spark, cfg: Config) -> dict:
    """``ytspark generate``: the synthetic platform into ``<output>/raw``; returns its counts and path."""
    from ytspark.generate import generate

    target = paths(cfg)["raw"]
    t = time.time()
    counts = generate(spark, cfg.generate, target)
    log.info("generate: %s in %.1fs -> %s", counts, time.time() - t, target)
    return {"raw": target, **counts}


def read_raw(spark, cfg: Config, movielens: str | None = None):
    """The raw tables of ``data.*`` (or a MovieLens folder) in the input contract."""
    if movielens:
        from ytspark.movielens import read_movielens

        return read_movielens(spark, movielens)
    from ytspark.prepare import read_inputs

    return read_inputs(spark, cfg)


def run_prepare(spark, cfg: Config, movielens: str | None = None) -> dict:
    """``ytspark prepare``: validate the raw logs and write ``<output>/prepared``; returns its manifest."""
    from ytspark import prepare

    raw = read_raw(spark, cfg, movielens)
    target = paths(cfg)["prepared"]
    m = prepare.run_prepare(spark, cfg, raw, target)
    ev = m["tables"]["events"]
    log.info("prepare: events input=%d accepted=%d rejected=%d %s", ev["input"], ev["accepted"], ev["rejected"],
             ev["reasons"])
    log.info("prepare: candidate rows %s, ranking rows %s, vocab sizes %s -> %s",
             m["candidates"], m["ranking"], m["vocab_sizes"], target)
    return {"prepared": target, "manifest": m}


def run_train(spark, cfg: Config, task: str, prepared: str | None = None, models: str | None = None,
              resume: bool = False, candidate_model: str | None = None) -> dict:
    """``ytspark train-candidates`` (task "candidate") or ``train-ranker`` (task "ranker").

    The ranker first turns the prepared impressions (or, without them, the candidate model's retrievals) into
    ``<models>/ranker/_rows`` with the candidate model under ``candidate_model`` (default ``models``).
    """
    from ytspark.train.launcher import train

    p = paths(cfg)
    prepared, models = prepared or p["prepared"], models or p["models"]
    candidate = rows = None
    t = time.time()
    if task == "ranker":
        candidate = candidate_model or models
        if has_model(candidate, "candidate"):
            from ytspark.train.rank_rows import build_rank_rows

            rows = f"{models.rstrip('/')}/ranker/_rows"
            build_rank_rows(spark, cfg, prepared, candidate, rows)
        else:
            log.warning("train-ranker: no candidate model at %s; the video table starts from random and the "
                        "network trains without retrieval scores", candidate)
            candidate = None
    result = train(cfg, task, prepared, models, resume=resume, spark=spark, candidate_model=candidate,
                   rank_rows=rows)
    result["seconds"] = round(time.time() - t, 1)
    return {"task": task, **result}


def run_score(spark, cfg: Config, prepared: str | None = None, models: str | None = None,
              run_date: str | None = None) -> dict:
    """``ytspark score``: ``<output>/recommendations/run_date=.../`` (with the ranker when one is published)."""
    from ytspark.score.job import run_score as score_users

    p = paths(cfg)
    prepared, models = prepared or p["prepared"], models or p["models"]
    ranker = models if has_model(models, "ranker") else None
    # --run-date is already score.run_date (see cli); the argument still wins for a caller that built cfg itself
    return score_users(spark, cfg, prepared, models, run_date or cfg.score.run_date or None, p["scores"],
                       ranker_dir=ranker)


def run_evaluate(spark, cfg: Config, prepared: str | None = None, models: str | None = None, no_model: bool = False,
                 compare: Sequence[str] = (), compare_ranker: Sequence[str] = ()) -> dict:
    """``ytspark evaluate``: baselines, ytspark's systems (and ``compare``/``compare_ranker`` models) on the
    validation and test targets; writes ``<output>/evaluation``; returns the report path and the test table."""
    from ytspark.evaluate.job import MAIN_SPLIT, add_impression_scores, add_system, run_baselines, write_evaluation
    from ytspark.evaluate.truth import truth_metrics

    p = paths(cfg)
    prepared, models = prepared or p["prepared"], models or p["models"]
    ev = run_baselines(spark, cfg, prepared)
    curves: dict[str, list[dict]] = {}
    calibration: dict[str, dict] = {}
    if not no_model:
        if not has_model(models, "candidate"):
            raise FileNotFoundError(f"no candidate model under {models}: run `ytspark train-candidates` first, "
                                    "or pass --no-model for baselines only")

        def add(name: str, system) -> None:
            """``system(evalset, held)`` -> top-K, or (top-K, held-out impression scores) for the main split."""
            t = time.time()
            out = {s: system(ev.sets[s], ev.held_out if s == MAIN_SPLIT else None) for s in ev.sets}
            scores = {s: o[1] for s, o in out.items() if isinstance(o, tuple)}
            add_system(ev, name, {s: o[0] if isinstance(o, tuple) else o for s, o in out.items()}, cfg.evaluate)
            if MAIN_SPLIT in scores:
                add_impression_scores(ev, name, scores[MAIN_SPLIT])
            ev.timings[name] = round(time.time() - t, 1)

        calibration = _add_model_systems(spark, cfg, prepared, models, ev, add, compare, compare_ranker)
        curves = {f"{kind} network": h for kind in ("candidate", "ranker") if (h := _history(models, kind))}
    split = "test" if "test" in ev.sets else next(iter(ev.sets))
    for name, m in truth_metrics(spark, prepared, {n: by[split] for n, by in ev.topk.items() if split in by},
                                 ev.sets[split]).items():  # generated data: the ranker's objective, by the truth
        ev.metrics[name][split].update(m)
    report = write_evaluation(p["evaluation"], ev, curves, prepared, calibration)
    return {"report": report, "evaluation": p["evaluation"], "table": ev.table()}


def _add_model_systems(spark, cfg: Config, prepared: str, models: str, ev: Any, add,
                       compare: Sequence[str], compare_ranker: Sequence[str]) -> dict[str, dict]:
    """Add ytspark's candidate model (and ranker, and the compared models) to ``ev`` through ``add``; returns the
    report's calibration tables."""
    from ytspark import schema as S
    from ytspark.evaluate.systems import candidate_calibration, candidate_topk, ranked_topk
    from ytspark.models.export import load_ranker
    from ytspark.train.ranker_task import calibration_panels, evaluate_ranker, load_split

    k = max(cfg.evaluate.topk, max(cfg.evaluate.ks))
    add("ytspark candidate", lambda es, h: candidate_topk(models, prepared, es, k, held=h))
    if _covisit_weight(models) > 0:  # the fused source's share, measured in the same run
        add("ytspark candidate network alone",
            lambda es, h: candidate_topk(models, prepared, es, k, covisit=False, held=h))
    for name, other in compare_models(compare):
        add(f"ytspark candidate ({name})", lambda es, h, other=other: candidate_topk(other, prepared, es, k, held=h))
        if _covisit_weight(other) > 0:
            add(f"ytspark candidate ({name}) network alone",
                lambda es, h, other=other: candidate_topk(other, prepared, es, k, covisit=False, held=h))
    calibration = {"candidate network: P(next watch) of the top 10 (test)": {
        "rows": candidate_calibration(models, prepared, ev.sets["test"], 10), "x": "mean softmax probability",
        "y": "observed hit rate"}}
    if not has_model(models, "ranker"):
        return calibration
    r = cfg.ranker
    for name, other in [("", models), *compare_models(compare_ranker, "ranker")]:
        add("ytspark candidate + ranking" + (f" ({name})" if name else ""),
            lambda es, h, other=other: ranked_topk(spark, models, other, prepared, es, k, cfg.score.k,
                                                   objective=r.objective, blend_weight=r.blend_weight, held=h))
    ranker_model, rmd = load_ranker(models)
    cal = rmd.meta.get("calibration")
    split = (cal or {}).get("fitted_on", "val")  # the held-out users' impressions, or validation
    rows = load_split(prepared, split, rmd.meta.get("rank_rows"))
    if len(rows[S.USER_ID]):
        res = evaluate_ranker(ranker_model, rows, cal=cal)
        calibration.update(calibration_panels(res, split))  # exp(logit), and the served score cross-fitted
    return calibration


def run_check_skew(spark, cfg: Config, prepared: str | None = None, sample: int = 500, seed: int = 0):
    """``ytspark check-skew``: per feature, how the serving code's ranker inputs differ from the training rows
    for a seeded sample of the prepared ranking rows; returns (prepared dir, pandas table)."""
    from ytspark.score.skew import check_skew

    prepared = prepared or paths(cfg)["prepared"]
    return prepared, check_skew(spark, prepared, n=sample, seed=seed)


def can_train_ranker(cfg: Config, models: str | None = None) -> bool:
    """Impressions in the prepared data, or a candidate model whose retrievals stand in for them."""
    from ytspark.train.data import read_json

    m = read_json(f"{paths(cfg)['prepared']}/manifest.json")
    return int(m["ranking"]["train"]) > 0 or has_model(models or paths(cfg)["models"], "candidate")


def run_pipeline(spark, cfg: Config, skip: Iterable[str] = (), movielens: str | None = None,
                 resume: bool = False) -> dict[str, dict]:
    """``ytspark pipeline`` (``make run``): every stage of :data:`STAGES` but those in ``skip`` (which reuse their
    existing output), on ``data.events`` / ``movielens``, or on freshly generated data when neither is given.

    Without impressions and without a candidate model, train-ranker is skipped (scores = retrieval).
    Returns stage -> that stage's summary.
    """
    summary: dict[str, dict] = {}
    skip = set(skip)
    unknown = skip - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) to skip {sorted(unknown)}; stages are {', '.join(STAGES)}")
    if not (cfg.data.events or movielens):
        raw = paths(cfg)["raw"]
        if "generate" not in skip:
            summary["generate"] = run_generate(spark, cfg)
        cfg = replace(cfg, data=replace(cfg.data, events=f"{raw}/events", users=f"{raw}/users",
                                        videos=f"{raw}/videos", format="parquet"))
    for stage in STAGES[1:]:
        if stage in skip:
            log.info("pipeline: skipping %s", stage)
            continue
        t = time.time()
        log.info("pipeline: stage %s starts", stage)
        if stage == "prepare":
            summary[stage] = run_prepare(spark, cfg, movielens)
        elif stage == "train-candidates":
            summary[stage] = run_train(spark, cfg, "candidate", resume=resume)
        elif stage == "train-ranker":
            if not can_train_ranker(cfg):
                log.info("pipeline: no impressions and no candidate model, train-ranker skipped (scores = retrieval)")
                continue
            summary[stage] = run_train(spark, cfg, "ranker", resume=resume)
        elif stage == "score":
            summary[stage] = run_score(spark, cfg)
        else:
            summary[stage] = run_evaluate(spark, cfg)
        log.info("pipeline: stage %s done in %.1fs", stage, time.time() - t)
    return summary

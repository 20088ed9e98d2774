"""Benchmark: nightly scoring users/s on local[2] against ALS recommendForAllUsers and a bare FAISS search.

    .venv/bin/python bench/score.py --users 100000 --videos 50000 --dim 64 [--out bench/out] [--no-write]

Setup (not timed): a synthetic prepared directory written with pyarrow (users
with random Zipf-popular watch histories over the last 30 days, some searches,
demographics; vocabularies, quantiles, manifest) and a candidate model
directory with random weights (``[candidate]`` defaults: 64-dim output, the
default tower, ``recency="last_k"``) and, unless ``--covisit-weight 0``, a
co-visitation table of the generated watches fused with it, published with
``write_model_dir``.

Timed, in one run:

1. ``run_score`` end to end (serving rows from the raw events, index, fallback
   lists, user tower, exact FAISS top-200 excluding watched, top 20, atomic
   Parquet write); the manifest's ``score_write_s`` is the scoring step alone
   (serving rows already built and cached), the analogue of ALS's
   ``recommendForAllUsers`` on ready factors.
2. Spark MLlib ALS (implicit, same users, items and rank, ``maxIter=1`` on the
   same watch pairs, fit untimed): ``recommendForAllUsers(20)`` + Parquet write.
3. The floor: one Python process, the same model and histories, user tower then
   ``IndexFlatIP.search`` of the same folded vectors for the same fetch depth,
   with all cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark import schema as S  # noqa: E402
from ytspark.config import load_config  # noqa: E402
from ytspark.session import get_spark  # noqa: E402

DAY = 86400.0
RUN_DATE = "2026-11-22"
COUNTRIES = ("US", "IN", "BR", "GB", "DE", "JP")
WORDS = [f"w{i}" for i in range(300)]


def make_prepared(base: Path, users: int, videos: int, watches: float, seed: int) -> tuple[str, dict]:
    """A prepared directory (events/users/videos Parquet, vocab, quantiles, manifest); returns (path, arrays)."""
    rng = np.random.default_rng(seed)
    out = base / "prepared"
    shutil.rmtree(out, ignore_errors=True)
    end = dt_end = _end_ts()  # the newest event is an hour before the run date ends
    n_w = np.maximum(1, rng.poisson(watches, users))
    uid = np.repeat(np.arange(users), n_w)
    pop = 1.0 / np.arange(1, videos + 1) ** 0.9
    vid = rng.choice(videos, len(uid), p=pop / pop.sum())
    ts = dt_end - rng.uniform(0, 30 * DAY, len(uid))
    n_s = rng.binomial(1, 0.3, users)
    s_uid = np.repeat(np.arange(users), n_s)
    s_ts = dt_end - rng.uniform(0, 30 * DAY, len(s_uid))
    queries = [" ".join(rng.choice(WORDS, 2)) for _ in range(len(s_uid))]
    user_ids = np.array([f"u{i:07d}" for i in range(users)], dtype=object)
    video_ids = np.array([f"v{i:06d}" for i in range(videos)], dtype=object)
    ev = pa.table({
        S.EVENT_TS: np.concatenate([ts, s_ts]),
        S.USER_ID: np.concatenate([user_ids[uid], user_ids[s_uid]]),
        S.EVENT_TYPE: np.array(["watch"] * len(uid) + ["search"] * len(s_uid), dtype=object),
        S.VIDEO_ID: np.concatenate([video_ids[vid], np.full(len(s_uid), None, dtype=object)]),
        S.QUERY: np.array([None] * len(uid) + queries, dtype=object),
        S.WATCH_SECONDS: np.full(len(uid) + len(s_uid), 60.0),
        S.VIDEO_SECONDS: np.full(len(uid) + len(s_uid), 100.0),
        S.CLICKED: pa.nulls(len(uid) + len(s_uid), pa.int32()),
        S.DEVICE: pa.nulls(len(uid) + len(s_uid), pa.string()),
        S.COUNTRY: pa.nulls(len(uid) + len(s_uid), pa.string()),
    })
    (out / "events").mkdir(parents=True)
    rows = ev.num_rows
    for i, a in enumerate(range(0, rows, rows // 8 + 1)):
        pq.write_table(ev.slice(a, rows // 8 + 1), out / "events" / f"part-{i:05d}.parquet")
    country = rng.choice(COUNTRIES, users)
    age = rng.uniform(13, 80, users)
    us = pa.table({S.USER_ID: user_ids, S.GENDER: rng.choice(["f", "m"], users), S.AGE: age,
                   S.BIRTH_YEAR: pa.nulls(users, pa.int32()), S.COUNTRY: country,
                   S.LANGUAGE: rng.choice(["en", "hi", "pt"], users), S.DEVICE: rng.choice(["mobile", "tv"], users)})
    (out / "users").mkdir()
    pq.write_table(us, out / "users" / "part-00000.parquet")
    vs = pa.table({S.VIDEO_ID: video_ids, S.UPLOAD_TS: np.full(videos, end - 60 * DAY),
                   S.DURATION_SECONDS: np.full(videos, 100.0), S.LANGUAGE: rng.choice(["en", "hi"], videos),
                   S.CHANNEL_ID: np.array([f"c{i % 500}" for i in range(videos)], dtype=object),
                   S.CATEGORY: np.array([f"k{i % 20}" for i in range(videos)], dtype=object),
                   S.TITLE: np.full(videos, "t", dtype=object)})
    (out / "videos").mkdir()
    pq.write_table(vs, out / "videos" / "part-00000.parquet")
    counts = np.bincount(vid, minlength=videos)
    order = np.lexsort((np.arange(videos), -counts))
    vocab = {"video": [str(video_ids[i]) for i in order],
             "token": WORDS + [f"{a} {b}" for a in WORDS[:40] for b in WORDS[:40]],
             "gender": ["f", "m"], "country": list(COUNTRIES), "language": ["en", "hi", "pt"],
             "device": ["mobile", "tv"], "channel": [f"c{i}" for i in range(500)],
             "category": [f"k{i}" for i in range(20)], "source": ["impression", "candidate", "popular", "demographic"]}
    (out / "vocab").mkdir()
    for name, values in vocab.items():
        (out / "vocab" / f"{name}.json").write_text(json.dumps({"name": name, "values": values, "counts": []}))
    q = {"candidates": {S.USER_AGE: list(np.linspace(13, 80, 20)), S.CAND_EXAMPLE_AGE: list(np.linspace(0, 30, 20)),
                        S.CAND_SINCE_LAST: list(np.linspace(0, 30, 20)), S.CAND_N_WATCHES: list(np.linspace(0, 60, 20))},
         "ranking": {}}
    (out / "quantiles.json").write_text(json.dumps(q))
    manifest = {"manifest_version": 1, "window_end": end, "vocab_sizes": {k: len(v) + 2 for k, v in vocab.items()},
                "config": {"prepare": {"history_length": 50}}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").write_text("")
    rank_of = np.empty(videos, np.int64)
    rank_of[order] = np.arange(videos) + 2  # video number -> vocab idx
    return str(out), {"uid": uid, "vidx": rank_of[vid], "ts": ts, "n_w": n_w, "country": country, "age": age,
                      "sizes": manifest["vocab_sizes"]}


def _end_ts() -> float:
    from ytspark.score.features import as_of_ts

    return as_of_ts(RUN_DATE) - 3600.0


def bench_covisitation(arrays: dict, n_videos: int, weight: float):
    """The co-visitation table of the generated watches (each watch after the user's previous ones, as
    training rows would give it; ``[candidate]`` window/top_m/recent_k/decay), fused with ``weight``."""
    from ytspark.models.covisit import build_covisitation

    c = load_config(None).candidate
    order = np.lexsort((arrays["ts"], arrays["uid"]))
    u, v = arrays["uid"][order], arrays["vidx"][order]
    hist = np.zeros((len(v), c.covisit_window), np.int64)
    for p in range(c.covisit_window):
        same = np.r_[np.zeros(p + 1, bool), u[p + 1:] == u[:-(p + 1)]]
        hist[:, p] = np.where(same, np.r_[np.zeros(p + 1, np.int64), v[:-(p + 1)]], 0)
    return build_covisitation(hist, v, n_videos, c.covisit_window, c.covisit_top_m, c.covisit_recent_k,
                              c.covisit_decay).with_weight(weight)


def make_model(base: Path, prepared: str, sizes: dict, dim: int, seed: int, covisit=None) -> str:
    import torch

    from ytspark.models.candidate import CandidateConfig, CandidateModel
    from ytspark.models.export import write_model_dir

    c = load_config(None).candidate
    demo = tuple(len(S.AGE_BUCKETS) + 2 if col == "age_bucket_idx" else sizes[col.removesuffix("_idx")]
                 for col in S.DEMOGRAPHIC_COLUMNS)
    cfg = CandidateConfig(n_videos=sizes["video"], n_tokens=sizes["token"], demographic_vocab_sizes=demo,
                          embed_dim=dim, hidden=tuple(c.hidden), recency=c.recency, recent_k=c.recent_k)
    torch.manual_seed(seed)
    quant = json.loads(Path(prepared, "quantiles.json").read_text())["candidates"]
    model = CandidateModel(cfg, quant)
    vocab = {f"vocab/{p.name}": json.loads(p.read_text()) for p in Path(prepared, "vocab").glob("*.json")}
    root = base / "models"
    shutil.rmtree(root, ignore_errors=True)
    meta = {"model_config": cfg.to_dict(), **({"covisit": covisit.meta()} if covisit is not None else {})}
    arrays = {"video_embeddings": model.video_embeddings().numpy(), "video_bias": model.video_biases().numpy(),
              **(covisit.arrays() if covisit is not None else {})}
    return str(write_model_dir(root, "candidate", state_dict=model.state_dict(), meta=meta, arrays=arrays,
                               json_files={**vocab, "quantiles.json": quant}, version="bench-random"))


def cpu_tree() -> float:
    """CPU seconds (user + system, reaped children included) of this process and all its descendants.

    The JVM and the Python workers are descendants, so differences of this are the CPU a Spark step
    cost, whatever else runs on the machine (wall time depends on the load, CPU time much less).
    """
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            c = proc.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pass
    return total


class Steps:
    """``on_step`` hook for run_score: wall and CPU seconds of every step."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float]] = []

    def __call__(self, name: str) -> None:
        self.marks.append((name, time.time(), cpu_tree()))

    def table(self) -> dict[str, dict[str, float]]:
        return {a[0]: {"wall_s": b[1] - a[1], "cpu_s": b[2] - a[2]} for a, b in zip(self.marks, self.marks[1:])}


def bench_ours(spark, cfg, prepared: str, model: str, out: str) -> dict:
    from ytspark.score import run_score

    steps = Steps()
    t, c = time.time(), cpu_tree()
    m = run_score(spark, cfg, prepared, model, RUN_DATE, out, on_step=steps)
    m["wall_s"], m["cpu_s"], m["steps"] = time.time() - t, cpu_tree() - c, steps.table()
    return m


def bench_als(spark, arrays: dict, users: int, videos: int, rank: int, out: str) -> dict:
    from pyspark.ml.recommendation import ALS

    pairs = np.unique(arrays["uid"] * videos + arrays["vidx"])
    df = spark.createDataFrame(pa.table({"user": (pairs // videos).astype(np.int32),
                                         "item": (pairs % videos).astype(np.int32),
                                         "rating": np.ones(len(pairs), np.float32)}).to_pandas())
    t = time.time()
    model = ALS(rank=rank, maxIter=1, implicitPrefs=True, userCol="user", itemCol="item", ratingCol="rating",
                seed=1).fit(df)
    fit_s = time.time() - t
    t, c = time.time(), cpu_tree()
    model.recommendForAllUsers(20).write.mode("overwrite").parquet(out)
    rec_s, cpu_s = time.time() - t, cpu_tree() - c
    return {"fit_s": fit_s, "recommend_write_s": rec_s, "cpu_s": cpu_s, "users_per_s": users / rec_s,
            "users_per_cpu_s": users / cpu_s}


def bench_floor(model_dir: str, arrays: dict, users: int, k: int) -> dict:
    """Single process: user tower then FAISS flat search of the same vectors, all cores."""
    import faiss
    import torch

    from ytspark.models.export import load_candidate
    from ytspark.models.features import batch_from_numpy
    from ytspark.score import index as ix
    from ytspark.score.bundle import folded_table

    torch.set_num_threads(os.cpu_count())
    faiss.omp_set_num_threads(os.cpu_count())
    model, _ = load_candidate(model_dir)
    H = 50
    order = np.lexsort((arrays["ts"], arrays["uid"]))
    uid, vidx, ts = arrays["uid"][order], arrays["vidx"][order], arrays["ts"][order]
    ends = np.cumsum(arrays["n_w"])
    hist = np.zeros((users, H), np.int64)
    for j in range(H):  # slot j = the (j+1)-th most recent watch
        pos = ends - 1 - j
        ok = pos >= ends - arrays["n_w"]
        hist[ok, j] = vidx[pos[ok]]
    cols = {S.CAND_WATCH_HIST: hist, S.CAND_WATCH_AGE: np.zeros((users, H), np.float32),
            S.CAND_SEARCH_HIST: np.zeros((users, H), np.int64), S.USER_AGE: arrays["age"].astype(np.float32),
            S.CAND_SINCE_LAST: np.ones(users, np.float32), S.CAND_N_WATCHES: arrays["n_w"].astype(np.float32),
            **{c: np.full(users, 2, np.int64) for c in S.DEMOGRAPHIC_COLUMNS}}
    index = ix.build_index(folded_table(model), "flat")
    t, c = time.time(), time.process_time()
    qs = []
    with torch.no_grad():
        for a in range(0, users, 4096):
            b = batch_from_numpy({c: v[a:a + 4096] for c, v in cols.items()}, serving=True)
            qs.append(model.fold_user(model.user_vector(b)).numpy())
    q = np.concatenate(qs)
    tower_s, tower_cpu = time.time() - t, time.process_time() - c
    fetch = k + ix.FETCH_STEP * int(np.ceil(np.median(arrays["n_w"]) / ix.FETCH_STEP))  # what search() fetches
    t, c = time.time(), time.process_time()
    for a in range(0, users, 4096):
        index.search(q[a:a + 4096], fetch)
    search_s, search_cpu = time.time() - t, time.process_time() - c
    return {"tower_s": tower_s, "search_s": search_s, "fetch": fetch, "total_s": tower_s + search_s,
            "cpu_s": tower_cpu + search_cpu, "users_per_s": users / (tower_s + search_s),
            "users_per_cpu_s": users / (tower_cpu + search_cpu), "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--videos", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--watches", type=float, default=20.0, help="mean watches per user")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--skip-als", action="store_true")
    ap.add_argument("--covisit-weight", type=float, default=1.0,
                    help="fuse a co-visitation table of the generated watches with this weight (0: network alone)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = ap.parse_args()
    base = Path(args.out) / f"score-u{args.users}"
    t = time.time()
    prepared, arrays = make_prepared(base, args.users, args.videos, args.watches, seed=3)
    cv = bench_covisitation(arrays, arrays["sizes"]["video"], args.covisit_weight) if args.covisit_weight > 0 else None
    model = make_model(base, prepared, arrays["sizes"], args.dim, seed=4, covisit=cv)
    warm_base = Path(args.out) / "score-warmup"
    warm_prepared, warm_arrays = make_prepared(warm_base, 2000, 2000, args.watches, seed=5)
    warm_cv = bench_covisitation(warm_arrays, warm_arrays["sizes"]["video"], args.covisit_weight) \
        if args.covisit_weight > 0 else None
    warm_model = make_model(warm_base, warm_prepared, warm_arrays["sizes"], args.dim, seed=6, covisit=warm_cv)
    setup_s = time.time() - t
    cfg = load_config(None, ["spark.master=local[2]", "spark.shuffle_partitions=8", 'spark.driver_memory="6g"'])
    floor0 = bench_floor(model, arrays, args.users, cfg.score.k)
    spark = get_spark(cfg, "ytspark-bench-score")
    load0 = os.getloadavg()
    # A fresh JVM and fresh Python workers pay JIT warm-up and imports once; a small run pays them here.
    cold = bench_ours(spark, cfg, warm_prepared, warm_model, str(warm_base / "out"))["wall_s"]
    als = None if args.skip_als else bench_als(spark, arrays, args.users, args.videos, args.dim, str(base / "als"))
    ours = bench_ours(spark, cfg, prepared, model, str(base / "out"))
    spark.stop()
    floor1 = bench_floor(model, arrays, args.users, cfg.score.k)
    load1 = os.getloadavg()
    floor = {k: (floor0[k] + floor1[k]) / 2 for k in floor0 if k != "fetch"}
    floor.update(fetch=floor0["fetch"], before=floor0, after=floor1)
    res = {"users": args.users, "videos": args.videos, "dim": args.dim, "events": int(len(arrays["uid"])),
           "hidden": list(load_config(None).candidate.hidden),
           "covisit": None if cv is None else {"weight": cv.weight, "nnz": int(len(cv.indices)),
                                               "top_m": int(load_config(None).candidate.covisit_top_m)},
           "setup_s": setup_s, "cold_2000_users_s": cold, "ours": {k: ours[k] for k in ("wall_s", "cpu_s", "steps", "timings", "rows", "users",
                                                              "coverage", "model_builds", "partitions")},
           "als": als, "floor": floor, "load_before": load0, "load_after": load1}
    print(json.dumps(res, indent=2, default=float))
    if not args.no_write:
        write_markdown(res, " ".join(["bench/score.py", *sys.argv[1:]]))


def write_markdown(r: dict, command: str) -> None:
    o, a, f = r["ours"], r["als"], r["floor"]
    n = r["users"]
    sw = o["steps"]["score_write"]
    fmt = "/".join
    lines = [
        f"## Scoring ({date.today().isoformat()})", "",
        f"Command: `.venv/bin/python {command}`  ",
        f"Machine: 2 cores, 24 GiB RAM, no GPU, {platform.machine()}, Python {platform.python_version()}, "
        f"Spark local[2]. Load average (1/5/15 min) at the start of the Spark part: "
        f"{fmt(f'{x:.1f}' for x in r['load_before'])}, at the end: {fmt(f'{x:.1f}' for x in r['load_after'])} "
        "(other sessions' jobs shared the 2 cores, so wall times are inflated and noisy; CPU seconds, summed "
        "over the driver, the JVM and the Python workers, are the load-independent measure).", "",
        f"{n:,} users, {r['videos']:,} videos, {r['dim']}-dim vectors, {r['events']:,} watch events; "
        f"random candidate model (tower {r['hidden'] or 'linear'}, recency last_k), exact IndexFlatIP over the folded "
        "[v, b] table, K=200 (already-watched excluded), N=20; "
        + (f"fused co-visitation table of the generated watches ({r['covisit']['nnz']:,} entries, top "
           f"{r['covisit']['top_m']} per video, weight {r['covisit']['weight']}): FAISS's top K merged with each "
           "user's neighbours (ytspark.models.covisit.merge_topk)." if r["covisit"] else "network alone.") + "", "",
        "| system | what is timed | wall s | users/s (wall) | CPU s | users per CPU-s |", "|---|---|---:|---:|---:|---:|",
        f"| ytspark `run_score` | end to end: serving rows from raw events, index, scoring, atomic write, "
        f"summary | {o['wall_s']:.1f} | {n / o['wall_s']:,.0f} | {o['cpu_s']:.0f} | {n / o['cpu_s']:,.0f} |",
        f"| ytspark scoring step | `mapInArrow`: tower + FAISS + exclusion + top-N + Parquet write (serving rows "
        f"cached) | {sw['wall_s']:.1f} | {n / sw['wall_s']:,.0f} | {sw['cpu_s']:.0f} | {n / sw['cpu_s']:,.0f} |",
    ]
    if a:
        lines.append(f"| Spark MLlib ALS | `recommendForAllUsers(20)` + Parquet write (fit {a['fit_s']:.0f} s "
                     f"untimed) | {a['recommend_write_s']:.1f} | {a['users_per_s']:,.0f} | {a['cpu_s']:.0f} | "
                     f"{a['users_per_cpu_s']:,.0f} |")
    lines += [
        f"| bare FAISS (floor) | one process, 2 threads: tower + `IndexFlatIP.search(k={f['fetch']})`, mean of a "
        f"run before and after Spark | {f['total_s']:.1f} | {f['users_per_s']:,.0f} | {f['cpu_s']:.0f} | "
        f"{f['users_per_cpu_s']:,.0f} |", "",
        "Steps of `run_score` (wall s / CPU s): " + ", ".join(
            f"{k} {v['wall_s']:.1f}/{v['cpu_s']:.0f}" for k, v in o["steps"].items()) + ".",
        f"Floor runs: before {f['before']['total_s']:.1f} s wall / {f['before']['cpu_s']:.0f} CPU s "
        f"(tower {f['before']['tower_s']:.1f} s, search {f['before']['search_s']:.1f} s), after "
        f"{f['after']['total_s']:.1f} s / {f['after']['cpu_s']:.0f} CPU s.",
        f"Warm-up first (not in the table): `run_score` on 2,000 users in the fresh JVM took "
        f"{r['cold_2000_users_s']:.0f} s (JIT, Python worker start, torch/FAISS imports: a fixed cost per job); "
        "then ALS, then ytspark.", "",
    ]
    if a:
        lines.append(f"Ratios: scoring step vs ALS {n / sw['wall_s'] / a['users_per_s']:.1f}x (wall), "
                     f"{a['cpu_s'] / sw['cpu_s']:.1f}x (CPU); end to end vs ALS {n / o['wall_s'] / a['users_per_s']:.1f}x "
                     f"(wall), {a['cpu_s'] / o['cpu_s']:.1f}x (CPU).")
    lines.append(f"Spark overhead: scoring step / bare floor = {sw['wall_s'] / f['total_s']:.2f}x (wall), "
                 f"{sw['cpu_s'] / f['cpu_s']:.2f}x (CPU); goal <= 1.5x.")
    text = "\n".join(lines) + "\n"
    bm = ROOT / "BENCHMARKS.md"
    cur = bm.read_text()
    start = cur.find("## Scoring")
    if start >= 0:
        nxt = cur.find("\n## ", start + 1)
        cur = cur[:start] + (cur[nxt + 1:] if nxt >= 0 else "")
    bm.write_text(cur.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()

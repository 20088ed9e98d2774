"""Benchmark: the nightly job users actually run (``ytspark score`` with the ranker) against Spark MLlib ALS.

    .venv/bin/python bench/nightly.py                          # 5,000 x 3,000 (the embedded default) and 100,000 x 50,000
    .venv/bin/python bench/nightly.py --users 3000 --videos 2000 --results /tmp/n.json   # one small size
    .venv/bin/python bench/nightly.py --prepared out/prepared --model out/models/candidate --ranker out/models/ranker
    add --write-benchmarks to replace the "## Nightly scoring" section of BENCHMARKS.md, --no-ranker for an extra
    retrieval-only row, --skip-als to leave ALS out, --repeats N to time each system N times, interleaved, and
    report the median run (BENCHMARKS.md's figures: --no-ranker --repeats 2 --write-benchmarks).

Setup (not timed), per size: a synthetic prepared directory written with pyarrow
(users with Zipf-popular watch histories over the last 30 days, some searches,
impression slates with ``clicked``/``watch_seconds``, demographics, videos with
channels/categories/languages; vocabularies, ``candidates`` and ``ranking``
quantiles, manifest), a random-weight candidate model (``[candidate]`` defaults)
fused with the co-visitation table of the generated watches, and a random-weight
ranker (``[ranker]`` defaults, exported as ``ytspark/train/ranker_task.py``
does: MODEL.json ``model_config`` and ``blend``, ``vocab/``, ``quantiles.json``
with a ``ranking`` section), all published with ``write_model_dir``. With
``--prepared/--model/--ranker`` a real pipeline output is timed instead.

Timed, in one JVM (Spark local[2]):

1. the session start and a first, cold ``run_score`` on a separate world of the
   embedded default size (5,000 users x 3,000 videos): JIT, Python worker start,
   torch/FAISS imports, i.e. the job's fixed cost (goal: under 15 s);
2. per size: ``run_score`` end to end with the ranker (serving rows from the raw
   events, fallback lists, broadcasts, user tower, exact top-K (flat) fused
   with co-visitation, ranker over the K pairs, top N, atomic Parquet write,
   summary), its ``on_step`` marks and, when the manifest has them, the summed
   in-task seconds ``timings.task_s``; optionally the same without the ranker;
3. per size: ALS (implicit, rank = candidate dim, ``maxIter=1`` on the same
   (user, video) watch pairs, fit untimed) ``recommendForAllUsers(20)`` + Parquet write.

Measured alongside: CPU seconds of the process tree (driver + JVM + Python workers),
peak RSS of the tree sampled every 0.2 s (total, the JVM, the largest Python
worker), the load average, and the compute floor: FLOPs per user (user tower +
flat search + ranker x score.k) over a float32 GEMM rate measured in the same run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark import schema as S  # noqa: E402
from ytspark.config import load_config  # noqa: E402
from ytspark.schema import DAY  # noqa: E402
import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)
from results import load  # noqa: E402

RUN_DATE = "2026-11-22"
COUNTRIES = ("US", "IN", "BR", "GB", "DE", "JP")
LANGS = ("en", "hi", "pt")
WORDS = [f"w{i}" for i in range(300)]
N_CHANNELS, N_CATEGORIES = 500, 20
DEFAULT_SIZE = (5000, 3000)  # [generate] users x videos of conf/default.toml
SECTION = "## Nightly scoring"
GOAL_X_ALS, GOAL_COLD_S = 3.0, 15.0  # the nightly job against ALS in users/s; the cold run_score's wall seconds


# ------------------------------------------------------------------ synthetic world

def _end_ts() -> float:
    from ytspark.score.features import as_of_ts

    return as_of_ts(RUN_DATE) - 3600.0  # the newest event is an hour before the run date ends


def make_prepared(base: Path, users: int, videos: int, watches: float, impressions: float, seed: int) -> tuple[str, dict]:
    """A prepared directory (events/users/videos Parquet, vocab, quantiles, manifest); returns (path, arrays).

    Events per user: Poisson(``watches``) watches (at least one), a search with probability 0.3,
    Poisson(``impressions``) impressions (30 % clicked, with watch seconds). Events are written
    sorted by user then time, all types mixed, as the generator and prepare leave them.
    """
    rng = np.random.default_rng(seed)
    out = base / "prepared"
    shutil.rmtree(out, ignore_errors=True)
    end = _end_ts()
    pop = 1.0 / np.arange(1, videos + 1) ** 0.9
    pop /= pop.sum()
    n_w = np.maximum(1, rng.poisson(watches, users))
    uid = np.repeat(np.arange(users), n_w)
    vid = rng.choice(videos, len(uid), p=pop)
    ts = end - rng.uniform(0, 30 * DAY, len(uid))
    n_s = rng.binomial(1, 0.3, users)
    s_uid = np.repeat(np.arange(users), n_s)
    s_ts = end - rng.uniform(0, 30 * DAY, len(s_uid))
    n_i = rng.poisson(impressions, users)
    i_uid = np.repeat(np.arange(users), n_i)
    i_vid = rng.choice(videos, len(i_uid), p=pop)
    i_ts = end - rng.uniform(0, 30 * DAY, len(i_uid))
    i_clk = (rng.random(len(i_uid)) < 0.3).astype(np.int32)
    i_ws = np.where(i_clk == 1, rng.uniform(5, 100, len(i_uid)), np.nan)
    nw, ns, ni = len(uid), len(s_uid), len(i_uid)
    n = nw + ns + ni

    user_ids = pa.array([f"u{i:07d}" for i in range(users)], pa.string())
    video_ids = pa.array([f"v{i:06d}" for i in range(videos)], pa.string())
    words = np.array(WORDS, dtype=object)
    q_words = rng.integers(0, len(WORDS), (ns, 2))
    queries = pa.array([f"{words[a]} {words[b]}" for a, b in q_words], pa.string())
    all_uid = np.concatenate([uid, s_uid, i_uid])
    all_ts = np.concatenate([ts, s_ts, i_ts])
    order = np.lexsort((all_ts, all_uid))
    kind = np.concatenate([np.zeros(nw, np.int8), np.ones(ns, np.int8), np.full(ni, 2, np.int8)])
    vid_all = np.concatenate([vid, np.zeros(ns, np.int64), i_vid])
    has_vid = kind != 1
    q_pos = np.full(n, -1, np.int64)
    q_pos[nw:nw + ns] = np.arange(ns)
    ws = np.concatenate([np.full(nw, 60.0), np.full(ns, np.nan), i_ws])
    clicked = np.concatenate([np.zeros(nw + ns, np.int32), i_clk])
    o_kind = kind[order]
    ev = pa.table({
        S.EVENT_TS: all_ts[order],
        S.USER_ID: user_ids.take(pa.array(all_uid[order])),
        S.EVENT_TYPE: pa.array(np.array(["watch", "search", "impression"], dtype=object)[o_kind], pa.string()),
        S.VIDEO_ID: video_ids.take(pa.array(vid_all[order], mask=~has_vid[order])),
        S.QUERY: queries.take(pa.array(np.maximum(q_pos[order], 0), mask=q_pos[order] < 0)),
        S.WATCH_SECONDS: pa.array(ws[order], mask=np.isnan(ws[order])),
        S.VIDEO_SECONDS: pa.array(np.where(o_kind == 1, np.nan, 100.0), mask=o_kind == 1),
        S.CLICKED: pa.array(clicked[order], pa.int32(), mask=o_kind != 2),
        S.DEVICE: pa.nulls(n, pa.string()),
        S.COUNTRY: pa.nulls(n, pa.string()),
    })
    (out / "events").mkdir(parents=True)
    step = n // 8 + 1
    for i, a in enumerate(range(0, n, step)):
        pq.write_table(ev.slice(a, step), out / "events" / f"part-{i:05d}.parquet")
    del ev
    country = rng.choice(COUNTRIES, users)
    age = rng.uniform(13, 80, users)
    us = pa.table({S.USER_ID: user_ids, S.GENDER: rng.choice(["f", "m"], users), S.AGE: age,
                   S.BIRTH_YEAR: pa.nulls(users, pa.int32()), S.COUNTRY: country,
                   S.LANGUAGE: rng.choice(LANGS, users), S.DEVICE: rng.choice(["mobile", "tv"], users)})
    (out / "users").mkdir()
    pq.write_table(us, out / "users" / "part-00000.parquet")
    vs = pa.table({S.VIDEO_ID: video_ids, S.UPLOAD_TS: end - rng.uniform(0, 365 * DAY, videos),
                   S.DURATION_SECONDS: np.full(videos, 100.0), S.LANGUAGE: rng.choice(["en", "hi"], videos),
                   S.CHANNEL_ID: pa.array([f"c{i % N_CHANNELS}" for i in range(videos)], pa.string()),
                   S.CATEGORY: pa.array([f"k{i % N_CATEGORIES}" for i in range(videos)], pa.string()),
                   S.TITLE: pa.array(["t"] * videos, pa.string())})
    (out / "videos").mkdir()
    pq.write_table(vs, out / "videos" / "part-00000.parquet")
    counts = np.bincount(vid, minlength=videos)
    vorder = np.lexsort((np.arange(videos), -counts))
    vocab = {"video": [f"v{i:06d}" for i in vorder],
             "token": WORDS + [f"{a} {b}" for a in WORDS[:40] for b in WORDS[:40]],
             "gender": ["f", "m"], "country": list(COUNTRIES), "language": list(LANGS),
             "device": ["mobile", "tv"], "channel": [f"c{i}" for i in range(N_CHANNELS)],
             "category": [f"k{i}" for i in range(N_CATEGORIES)],
             "source": ["impression", "candidate", "popular", "demographic"]}
    (out / "vocab").mkdir()
    for name, values in vocab.items():
        (out / "vocab" / f"{name}.json").write_text(json.dumps({"name": name, "values": values, "counts": []}))
    q = {"candidates": {S.USER_AGE: _lin(13, 80), S.CAND_EXAMPLE_AGE: _lin(0, 30), S.CAND_SINCE_LAST: _lin(0, 30),
                        S.CAND_N_WATCHES: _lin(0, 60)},
         "ranking": ranking_quantiles(watches)}
    (out / "quantiles.json").write_text(json.dumps(q))
    manifest = {"manifest_version": 1, "window_end": end, "vocab_sizes": {k: len(v) + 2 for k, v in vocab.items()},
                "events_by_type": {"watch": int(nw), "search": int(ns), "impression": int(ni)},
                "config": {"prepare": {"history_length": 50}}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").write_text("")
    rank_of = np.empty(videos, np.int64)
    rank_of[vorder] = np.arange(videos) + 2  # video number -> vocab idx
    return str(out), {"uid": uid, "vidx": rank_of[vid], "ts": ts, "sizes": manifest["vocab_sizes"],
                      "events": manifest["events_by_type"]}


def _lin(a: float, b: float, n: int = 20) -> list[float]:
    return [float(x) for x in np.linspace(a, b, n)]


def ranking_quantiles(watches: float) -> dict[str, list[float]]:
    """Boundaries of every RANK_CONTINUOUS feature (strictly increasing; -1 = never, as prepare writes it)."""
    return {"since_last_watch_days": [-1.0, *_lin(0.01, 30, 19)], "n_prev_impressions": _lin(0, 19),
            "since_impression_days": [-1.0, *_lin(0.01, 30, 19)], "prev_impression_clicked": [0.0, 1.0],
            "channel_watches": _lin(0, max(10.0, watches / 2)), "since_channel_watch_days": [-1.0, *_lin(0.01, 30, 19)],
            "category_watches": _lin(0, max(10.0, watches)), "since_category_watch_days": [-1.0, *_lin(0.01, 30, 19)],
            "video_age_days": _lin(0, 365), "retrieval_score": _lin(-3, 3)}


def make_covisitation(arrays: dict, n_videos: int, weight: float):
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


def _vocab_files(prepared: str) -> dict:
    return {f"vocab/{p.name}": json.loads(p.read_text()) for p in Path(prepared, "vocab").glob("*.json")}


def make_candidate(root: Path, prepared: str, sizes: dict, dim: int, seed: int, covisit=None,
                   encoder: str = "bag") -> str:
    """A random-weight candidate model of the ``[candidate]`` defaults: ``encoder`` bag (the paper's tower) or
    sequence (the causal encoder; ``candidate.encoder = auto`` publishes either)."""
    import torch

    from ytspark.models.candidate import CandidateConfig, CandidateModel
    from ytspark.models.export import write_model_dir

    c = load_config(None).candidate
    demo = tuple(len(S.AGE_BUCKETS) + 2 if col == "age_bucket_idx" else sizes[col.removesuffix("_idx")]
                 for col in S.DEMOGRAPHIC_COLUMNS)
    cfg = CandidateConfig(n_videos=sizes["video"], n_tokens=sizes["token"], demographic_vocab_sizes=demo,
                          embed_dim=dim, hidden=tuple(c.hidden), recency=c.recency, recent_k=c.recent_k,
                          encoder=encoder, attn_layers=c.attn_layers, attn_heads=c.attn_heads)
    torch.manual_seed(seed)
    quant = json.loads(Path(prepared, "quantiles.json").read_text())["candidates"]
    model = CandidateModel(cfg, quant)
    meta = {"model_config": cfg.to_dict(), **({"covisit": covisit.meta()} if covisit is not None else {})}
    arrays = {"video_embeddings": model.video_embeddings().numpy(), "video_bias": model.video_biases().numpy(),
              **(covisit.arrays() if covisit is not None else {})}
    return str(write_model_dir(root, "candidate", state_dict=model.state_dict(), meta=meta, arrays=arrays,
                               json_files={**_vocab_files(prepared), "quantiles.json": quant},
                               version="bench-random"))


def ranker_config(sizes: dict):
    """``RankerConfig`` from the prepared vocab sizes and the default ``[ranker]`` section: every key the two
    share (embed_dim, hidden, use_affinity, dropout, and whatever the config gains later), ``use_source`` on as
    in a pipeline with a candidate model (``train_rank_rows``)."""
    from ytspark.models.ranker import RankerConfig

    r = asdict(load_config(None).ranker)
    shared = {k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items()
              if k in RankerConfig.__dataclass_fields__ and k not in ("n_videos", "n_languages", "n_channels",
                                                                       "n_categories", "n_sources")}
    return RankerConfig.from_vocab_sizes(sizes, **{**shared, "use_source": True})


def make_ranker(root: Path, prepared: str, sizes: dict, seed: int) -> str:
    """A random-weight ranker directory laid out as RankerTask.export + the launcher publish it."""
    import torch

    from ytspark.models.blend import paper_blend
    from ytspark.models.export import write_model_dir
    from ytspark.models.ranker import RankerModel

    cfg = ranker_config(sizes)
    torch.manual_seed(seed)
    quant = json.loads(Path(prepared, "quantiles.json").read_text())["ranking"]
    model = RankerModel(cfg, quant)
    meta = {"blend": paper_blend(), "model_config": cfg.to_dict(), "prepared": prepared, "vocab_sizes": sizes,
            "monitor": "one_minus_wpul", "rank_rows_mode": "impressions"}
    return str(write_model_dir(root, "ranker", state_dict=model.state_dict(), meta=meta,
                               json_files={**_vocab_files(prepared), "quantiles.json": quant},
                               version="bench-random"))


def make_world(base: Path, users: int, videos: int, args, seed: int) -> dict:
    t = time.time()
    shutil.rmtree(base, ignore_errors=True)
    prepared, arrays = make_prepared(base, users, videos, args.watches, args.impressions, seed)
    cv = make_covisitation(arrays, arrays["sizes"]["video"], args.covisit_weight) if args.covisit_weight > 0 else None
    model = make_candidate(base / "models", prepared, arrays["sizes"], args.dim, seed + 1, cv, args.encoder)
    ranker = make_ranker(base / "models", prepared, arrays["sizes"], seed + 2)
    return {"prepared": prepared, "model": model, "ranker": ranker, "run_date": RUN_DATE, "arrays": arrays,
            "users": users, "videos": videos, "dim": args.dim, "events": arrays["events"],
            "covisit": None if cv is None else {"weight": cv.weight, "nnz": int(len(cv.indices))},
            "setup_s": time.time() - t, "generated": True}


def pipeline_world(args) -> dict:
    """A real pipeline output: the prepared dir's watches (before the run date) for ALS, the models as given."""
    from ytspark.models.export import read_model_dir
    from ytspark.score.features import as_of_ts

    pm = json.loads(Path(args.prepared, "manifest.json").read_text())
    run_date = args.run_date or dt.datetime.fromtimestamp(pm["window_end"], dt.timezone.utc).date().isoformat()
    md = read_model_dir(args.model, "candidate")
    ev = pq.read_table(Path(args.prepared, "events"), columns=[S.EVENT_TS, S.USER_ID, S.EVENT_TYPE, S.VIDEO_ID])
    ev = ev.filter(pc.less(ev[S.EVENT_TS], as_of_ts(run_date)))
    by_type = {r["values"]: int(r["counts"]) for r in pc.value_counts(ev[S.EVENT_TYPE]).to_pylist()}
    w = ev.filter(pc.equal(ev[S.EVENT_TYPE], "watch"))
    vocab = pa.array(md.json("vocab/video.json")["values"], pa.string())
    vidx = pc.index_in(w[S.VIDEO_ID], value_set=vocab).to_numpy(zero_copy_only=False).astype(np.float64)
    keep = ~np.isnan(vidx)  # out-of-vocabulary watches are left out
    uid = pc.dictionary_encode(w[S.USER_ID]).combine_chunks().indices.to_numpy()
    users = len(pc.unique(pq.read_table(Path(args.prepared, "users"), columns=[S.USER_ID])[S.USER_ID]))
    return {"prepared": args.prepared, "model": str(md.path), "ranker": args.ranker, "run_date": run_date,
            "arrays": {"uid": uid[keep].astype(np.int64),
                       "vidx": vidx[keep].astype(np.int64) + 2},
            "users": users, "videos": int(md.meta["model_config"]["n_videos"]) - 2,
            "dim": int(md.meta["model_config"]["embed_dim"]), "events": by_type,
            "covisit": md.meta.get("covisit"), "setup_s": 0.0, "generated": False}


# ------------------------------------------------------------------ measuring

def _tree():
    import psutil

    me = psutil.Process()
    return me, [me, *me.children(recursive=True)]


class CpuTracker:
    """CPU seconds (user + system) of this process and all its descendants, those that have exited included.

    Every process of the tree is remembered by (pid, start time) with the CPU it had when last seen; the
    total is the sum over them, so a Python worker that exits (idle workers are stopped by the JVM) keeps
    counting with what it used until at most one sampling interval before its end. (``children_user`` is
    not used: a dead worker's CPU reaches its parent only when reaped, and then would be counted twice.)
    The JVM and the Python workers are descendants, so differences of this are the CPU a Spark step
    cost, whatever else runs on the machine (wall time depends on the load, CPU time much less).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, float], float] = {}

    def update(self, procs=None) -> None:
        import psutil

        procs = _tree()[1] if procs is None else procs
        got = {}
        for proc in procs:
            try:
                with proc.oneshot():
                    c = proc.cpu_times()
                    got[(proc.pid, proc.create_time())] = c.user + c.system
            except psutil.Error:
                pass
        with self._lock:
            self._seen.update(got)

    def total(self) -> float:
        self.update()
        with self._lock:
            return float(sum(self._seen.values()))


CPU = CpuTracker()


def cpu_tree() -> float:
    """CPU seconds of the process tree so far (:class:`CpuTracker`)."""
    return CPU.total()


class MemorySampler:
    """Peak RSS of the process tree, sampled every ``interval`` s in a background thread.

    ``total``: sum over the tree (forked Python workers share pages with their daemon, so this
    over-counts a little); ``jvm``: the java process; ``python_worker``: the largest single Python
    process other than the driver (the PySpark daemon and its forked workers); ``driver``: this
    process; ``python_procs``: the most Python processes (daemon + workers) seen at once. In local mode
    the JVM and the workers together stand for the executor's memory.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.reset()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.peak = {"total_mb": 0.0, "jvm_mb": 0.0, "python_worker_mb": 0.0, "driver_mb": 0.0,
                         "python_procs": 0, "samples": 0}

    def sample(self) -> None:
        import psutil

        me, procs = _tree()
        CPU.update(procs)
        total = jvm = worker = driver = 0.0
        n_py = 0
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
                name = p.name().lower()
            except psutil.Error:
                continue
            total += rss
            if p.pid == me.pid:
                driver = rss
            elif "java" in name:
                jvm = max(jvm, rss)
            elif "python" in name:
                worker = max(worker, rss)
                n_py += 1
        with self._lock:
            pk = self.peak
            pk["total_mb"], pk["jvm_mb"] = max(pk["total_mb"], total), max(pk["jvm_mb"], jvm)
            pk["python_worker_mb"], pk["driver_mb"] = max(pk["python_worker_mb"], worker), max(pk["driver_mb"], driver)
            pk["python_procs"] = max(pk["python_procs"], n_py)
            pk["samples"] += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a process vanished mid-walk: next sample
                pass

    def take(self) -> dict:
        """The peaks since the last reset (rounded), then reset."""
        self.sample()
        with self._lock:
            out = {k: (round(v, 1) if k.endswith("_mb") else v) for k, v in self.peak.items()}
        self.reset()
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Steps:
    """``on_step`` hook for run_score: wall and CPU seconds of every step."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float]] = []

    def __call__(self, name: str) -> None:
        self.marks.append((name, time.time(), cpu_tree()))

    def table(self) -> dict[str, dict[str, float]]:
        return {a[0]: {"wall_s": round(b[1] - a[1], 3), "cpu_s": round(b[2] - a[2], 3)}
                for a, b in zip(self.marks, self.marks[1:])}


def gemm_rate(n: int = 2048, repeats: int = 5) -> dict:
    """float32 ``n x n`` matmul FLOP/s with all cores, best of ``repeats`` (after one warm-up)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    return {"n": n, "threads": os.cpu_count(), "best_s": best, "gflops": 2.0 * n ** 3 / best / 1e9}


def _linear_flops(widths: list[int]) -> int:
    return int(sum(2 * a * b for a, b in zip(widths, widths[1:])))


def flops_per_user(model_dir: str, ranker_dir: str | None, k: int) -> dict:
    """Multiply-adds x 2 per user of the three dense stages; sparse work (co-visitation merge, seen
    exclusion, feature lookups, sorting) is left out: this is the floor of the dense part.

    user tower: every ``nn.Linear`` of the candidate model's user side + the masked means of the
    watch and search histories (H x D adds each); flat search: V x (D + 1) x 2 over the folded table;
    ranker per pair, three ways: ``plain`` = sum of in x out x 2 over its Linear layers [input, *hidden, 1];
    ``factorised`` = the first layer split into a per-user and a per-video part computed once, leaving
    hidden[0] adds + the rest of the tower per pair; ``serving`` = 2 x what the serving path
    (``RankerModel.factorised`` as :mod:`ytspark.score.rank` builds it) reports in ``macs_per_pair()``:
    the small pair-side part of the first layer, the U + P adds, the affinity dot and the rest (absent
    when the ranker has no factorised form).
    """
    import torch

    from ytspark.models.export import load_candidate
    from ytspark.score.bundle import read_ranker

    model, md = load_candidate(model_dir)
    c = model.config
    H = 50
    tower = sum(2 * m.in_features * m.out_features for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and not name.startswith("seq_proj"))
    pool = (H if c.use_watches else 0) * c.embed_dim + (H if c.use_searches else 0) * c.embed_dim
    if c.encoder == "sequence":  # every Linear of the encoder runs at each of the H positions, plus per layer the
        # q/k/v projection (2 x D x 3D) and causal attention (scores and weighted sum, ~H/2 keys: 2 x 2 x H/2 x D)
        tower = H * (tower + c.attn_layers * (2 * c.embed_dim * 3 * c.embed_dim + 2 * H * c.embed_dim))
    V = int(c.n_videos)
    search = V * (c.embed_dim + 1) * 2
    out = {"user_tower": int(tower + pool), "search": int(search), "V": V, "D": int(c.embed_dim), "k": int(k),
           "ranker_pair": None, "per_user": {}}
    if ranker_dir:
        from ytspark.models.ranker import RankerConfig, RankerModel

        rmd, rcfg, rq = read_ranker(ranker_dir)
        rc = RankerConfig.from_dict(rcfg)
        rm = RankerModel(rc, rq).eval()
        width = int(getattr(rm, "input_width", 0)) or next(
            m.in_features for m in rm.modules() if isinstance(m, torch.nn.Linear))
        widths = [width, *rc.hidden, 1]
        plain = _linear_flops(widths)
        pair = {"plain": plain, "factorised": int(rc.hidden[0] + _linear_flops(widths[1:])) if rc.hidden else plain,
                "widths": widths}
        if hasattr(rm, "factorised"):
            try:
                src = rmd.json("vocab/source.json")["values"]  # the path is a URL string
                with torch.no_grad():
                    from ytspark.score.rank import _NEVER_SHOWN  # as serving builds it
                    fact = rm.factorised(("video_age_days",), dict(_NEVER_SHOWN),
                                         2 + src.index("candidate") if "candidate" in src else S.OOV)
                macs = fact.macs_per_pair()
                pair["serving"] = int(2 * macs["factorised"])
                pair["serving_macs"] = {k_: int(v) for k_, v in macs.items()}
            except Exception as e:  # an older or changed ranker API: the two counts above stay
                pair["serving_error"] = repr(e)
        out["ranker_pair"] = pair
    base = out["user_tower"] + out["search"]
    for mode in ("plain", "factorised", "serving"):
        if out["ranker_pair"] and mode in out["ranker_pair"]:
            out["per_user"][mode] = int(base + out["ranker_pair"][mode] * k)
    out["per_user"]["retrieval"] = int(base)
    return out


def bench_ours(spark, cfg, world: dict, out: str, mem: MemorySampler, ranker: bool) -> dict:
    from ytspark.score import run_score

    steps = Steps()
    shutil.rmtree(out, ignore_errors=True)
    l0 = load()
    mem.take()
    t, c = time.time(), cpu_tree()
    steps("start")  # loading the manifest and the models, before run_score's first step
    m = run_score(spark, cfg, world["prepared"], world["model"], world["run_date"], out,
                  ranker_dir=world["ranker"] if ranker else None, on_step=steps)
    wall, cpu = time.time() - t, cpu_tree() - c
    timings = m.get("timings") or {}
    users = int(m.get("users", world["users"]))
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "users": users,
            "users_per_s": users / wall, "users_per_cpu_s": users / max(cpu, 1e-9),
            "steps": steps.table(), "task_s": timings.get("task_s"), "timings": timings,
            "peak_rss": mem.take(), "rows": m.get("rows"), "cold_users": m.get("cold_users"),
            "users_with_list": m.get("users_with_list"), "coverage": m.get("coverage"),
            "rows_by_source": m.get("rows_by_source"), "model_builds": m.get("model_builds"),
            "partitions": m.get("partitions"), "ranker": bool(ranker), "load_before": l0, "load_after": load()}


def bench_als(spark, world: dict, out: str, mem: MemorySampler) -> dict:
    from pyspark.ml.recommendation import ALS

    a = world["arrays"]
    V = int(a["vidx"].max()) + 1
    pairs = np.unique(a["uid"] * V + a["vidx"])
    df = spark.createDataFrame(pa.table({"user": (pairs // V).astype(np.int32), "item": (pairs % V).astype(np.int32),
                                         "rating": np.ones(len(pairs), np.float32)}).to_pandas())
    t = time.time()
    model = ALS(rank=world["dim"], maxIter=1, implicitPrefs=True, userCol="user", itemCol="item",
                ratingCol="rating", seed=1).fit(df)
    fit_s = time.time() - t
    shutil.rmtree(out, ignore_errors=True)
    users = len(np.unique(a["uid"]))
    l0 = load()
    mem.take()
    t, c = time.time(), cpu_tree()
    model.recommendForAllUsers(20).write.mode("overwrite").parquet(out)
    wall, cpu = time.time() - t, cpu_tree() - c
    return {"fit_s": round(fit_s, 3), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "users": users,
            "pairs": int(len(pairs)), "users_per_s": users / wall, "users_per_cpu_s": users / max(cpu, 1e-9),
            "peak_rss": mem.take(), "load_before": l0, "load_after": load()}


# ------------------------------------------------------------------ driver

def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        u, v = part.lower().split("x")
        out.append((int(u), int(v)))
    return out


def size_key(users: int, videos: int) -> str:
    return f"u{users}_v{videos}"


def measure_world(spark, cfg, world: dict, out: Path, args, mem: MemorySampler) -> dict:
    res = {k: world[k] for k in ("users", "videos", "dim", "events", "covisit", "setup_s", "run_date")}
    res["paths"] = {k: world[k] for k in ("prepared", "model", "ranker")}
    res["load_before"] = load()
    has_ranker = bool(world["ranker"])
    runs: dict[str, list[dict]] = {"ours": [], "ours_no_ranker": [], "als": []}
    for _ in range(max(1, args.repeats)):  # interleaved, so a slow spell of the machine hits both systems
        if has_ranker:
            runs["ours"].append(bench_ours(spark, cfg, world, str(out / "ours"), mem, ranker=True))
        if args.no_ranker or not has_ranker:
            runs["ours_no_ranker"].append(bench_ours(spark, cfg, world, str(out / "ours_no_ranker"), mem,
                                                     ranker=False))
        if not args.skip_als:
            runs["als"].append(bench_als(spark, world, str(out / "als"), mem))
    for key, rs in runs.items():  # the median run by wall time; every run's wall and CPU seconds kept beside it
        res[key] = median_run(rs)
    res["load_after"] = load()
    if res["als"]:
        for key in ("ours", "ours_no_ranker"):
            if res[key]:
                res[key]["vs_als"] = {"wall": res[key]["users_per_s"] / res["als"]["users_per_s"],
                                      "cpu": res[key]["users_per_cpu_s"] / res["als"]["users_per_cpu_s"]}
    fl = flops_per_user(world["model"], world["ranker"], cfg.score.k)
    mode = args.ranker_flops_mode if has_ranker else "retrieval"
    if mode not in fl["per_user"]:
        mode = "factorised"
    res["floor"] = {"flops": fl, "mode": mode}
    return res


def median_run(runs: list[dict]) -> dict | None:
    """The run of median wall time (the lower middle one of an even count), with ``runs_wall_s`` and
    ``runs_cpu_s`` of every run; None for no runs."""
    if not runs:
        return None
    mid = dict(sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2])
    mid["runs_wall_s"] = [r["wall_s"] for r in runs]
    mid["runs_cpu_s"] = [r["cpu_s"] for r in runs]
    return mid


def add_floor(res: dict, rate: float, threads: int) -> None:
    """Floor seconds and users/s of every FLOPs count at ``rate`` FLOP/s (a GEMM on ``threads`` cores, so the
    floor's CPU seconds are ``threads`` x its wall seconds); the job's ratios to the chosen count."""
    fl = res["floor"]
    n = (res["ours"] or res["ours_no_ranker"])["users"]
    fl["gemm_gflops"] = rate / 1e9
    fl["by_mode"] = {mode: {"flops_per_user": f, "floor_s": n * f / rate, "floor_cpu_s": n * f / rate * threads,
                            "floor_users_per_s": rate / f} for mode, f in fl["flops"]["per_user"].items()}
    for key in ("ours", "ours_no_ranker"):
        if res[key]:
            f = fl["by_mode"][fl["mode"] if key == "ours" else "retrieval"]
            res[key]["vs_floor"] = {"wall": res[key]["wall_s"] / f["floor_s"],
                                    "cpu": res[key]["cpu_s"] / f["floor_cpu_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]},100000x50000",
                    help="comma-separated USERSxVIDEOS worlds to time (default: the embedded default and 100k x 50k)")
    ap.add_argument("--users", type=int, help="time one world of this many users (with --videos) instead of --sizes")
    ap.add_argument("--videos", type=int)
    ap.add_argument("--warmup", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}",
                    help="USERSxVIDEOS of the cold first run (a separate world; default: the embedded default size)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--encoder", choices=("bag", "sequence"), default="bag",
                    help="the random candidate model's encoder (candidate.encoder = auto publishes either)")
    ap.add_argument("--watches", type=float, default=20.0, help="mean watches per user")
    ap.add_argument("--impressions", type=float, default=50.0, help="mean impressions per user")
    ap.add_argument("--covisit-weight", type=float, default=1.0,
                    help="fuse a co-visitation table of the generated watches with this weight (0: network alone)")
    ap.add_argument("--prepared", help="time a real pipeline output: its prepared directory (with --model, --ranker)")
    ap.add_argument("--model", help="candidate model directory (or its root, following LATEST)")
    ap.add_argument("--ranker", help="ranker model directory (or its root); without it only retrieval is timed")
    ap.add_argument("--run-date", help="with --prepared: the run date (default: the day of its window_end)")
    ap.add_argument("--no-ranker", action="store_true", help="also time retrieval only (an extra, labelled row)")
    ap.add_argument("--skip-als", action="store_true")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each system this many times per size, interleaved; the median run is reported "
                         "(ALS's own time moves by up to 20%% between runs)")
    ap.add_argument("--ranker-flops-mode", choices=("plain", "factorised", "serving"), default="serving",
                    help="which ranker FLOPs count gives the headline floor (all are reported; serving falls "
                         "back to factorised when the ranker has no factorised form)")
    ap.add_argument("--driver-memory", default="6g")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="scratch directory for worlds and outputs")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "nightly.json"))
    ap.add_argument("--no-write", action="store_true", help="print only: no results JSON, no BENCHMARKS.md")
    ap.add_argument("--write-benchmarks", action="store_true",
                    help="replace the '## Nightly scoring' section of BENCHMARKS.md with this run")
    args = ap.parse_args()
    if args.prepared and not args.model:
        ap.error("--prepared needs --model (and usually --ranker)")
    if (args.users is None) != (args.videos is None):
        ap.error("--users and --videos go together")
    sizes = [(args.users, args.videos)] if args.users else parse_sizes(args.sizes)
    out = Path(args.out) / "nightly"

    from ytspark.session import get_spark

    # ---- setup (untimed): the worlds
    t = time.time()
    wu, wv = parse_sizes(args.warmup)[0]
    warm = make_world(out / "warmup", wu, wv, args, seed=101)
    worlds: dict[str, dict] = {}
    if args.prepared:
        worlds["pipeline"] = pipeline_world(args)
    else:
        for i, (u, v) in enumerate(sizes):
            worlds[size_key(u, v)] = make_world(out / size_key(u, v), u, v, args, seed=3 + 10 * i)
    setup_s = time.time() - t
    print(f"setup {setup_s:.0f} s: " + ", ".join(f"{k} {w['events']}" for k, w in worlds.items()), flush=True)

    cfg = load_config(None, ["spark.master=local[2]", "spark.shuffle_partitions=8",
                             f'spark.driver_memory="{args.driver_memory}"'])
    mem = MemorySampler(0.2)
    gemm0 = gemm_rate()
    load0 = load()
    t = time.time()
    spark = get_spark(cfg, "ytspark-bench-nightly")
    spark.sparkContext.setLogLevel("WARN")
    session_s = time.time() - t
    cold = bench_ours(spark, cfg, warm, str(out / "warmup" / "score"), mem, ranker=True)
    print(f"cold run_score on {wu}x{wv}: {cold['wall_s']:.1f} s (session start {session_s:.1f} s)", flush=True)
    results: dict = {}
    for key, world in worlds.items():
        results[key] = measure_world(spark, cfg, world, out / key / "runs", args, mem)
        r = results[key]
        print(f"{key}: " + ", ".join(f"{name} {r[name]['wall_s']:.1f} s wall / {r[name]['cpu_s']:.0f} CPU s"
                                     for name in ("ours", "ours_no_ranker", "als") if r[name]), flush=True)
    spark.stop()
    mem.stop()
    gemm1 = gemm_rate()
    gemm = {"before": gemm0, "after": gemm1, "best_flops": max(gemm0["gflops"], gemm1["gflops"]) * 1e9}
    for res in results.values():  # the floor at the best GEMM rate of the run (before and after Spark)
        add_floor(res, gemm["best_flops"], gemm0["threads"])
    doc = {"script": "nightly", "date": date.today().isoformat(), "commit": R.commit(),
           "command": " ".join(["bench/nightly.py", *sys.argv[1:]]), "machine": machine(), "spark_master": "local[2]",
           "encoder": args.encoder,
           "config": {"score": asdict(cfg.score), "ranker": asdict(cfg.ranker)},
           "setup_s": setup_s, "session_start_s": session_s,
           "cold": {"users": wu, "videos": wv, **cold, "with_session_s": session_s + cold["wall_s"]},
           "gemm": gemm, "load_before": load0, "load_after": load(), "sizes": results}
    print(json.dumps({"cold_s": cold["wall_s"], "session_s": session_s,
                      "gemm_gflops": gemm["best_flops"] / 1e9,
                      **{k: summary(r) for k, r in results.items()}}, indent=2, default=float))
    if not args.no_write:
        R.write_json("nightly", doc, args.results)
        if args.write_benchmarks:
            R.write_section(render(doc))


def machine() -> dict:
    return {**R.machine(), "torch_threads_note": "Spark tasks: score.threads_per_task torch/FAISS threads each"}


def summary(r: dict) -> dict:
    def short(x):
        if not x:
            return None
        return {k: x[k] for k in ("wall_s", "cpu_s", "users_per_s", "users_per_cpu_s", "vs_als", "vs_floor",
                                  "task_s", "peak_rss") if k in x}
    f = r["floor"]["by_mode"]
    return {"users": r["users"], "ours": short(r["ours"]), "ours_no_ranker": short(r["ours_no_ranker"]),
            "als": short(r["als"]),
            "steps": (r["ours"] or r["ours_no_ranker"])["steps"],
            "floor": {m: {"flops_per_user": v["flops_per_user"], "floor_s": round(v["floor_s"], 3),
                          "floor_users_per_s": round(v["floor_users_per_s"])} for m, v in f.items()},
            "load": [r["load_before"], r["load_after"]]}


# ------------------------------------------------------------------ BENCHMARKS.md

def _mb(p: dict | None) -> str:
    if not p:
        return "-"
    n = f" ({p['python_procs']} py)" if p.get("python_procs") else ""
    return f"{p['total_mb'] / 1024:.1f} / {p['jvm_mb'] / 1024:.1f} / {p['python_worker_mb'] / 1024:.2f}{n}"


def verdict(doc: dict) -> str:
    """One line against the goals: the largest size's ratio to ALS, and the cold fixed cost."""
    parts = []
    big = max(doc["sizes"].values(), key=lambda r: r["users"])
    va = (big["ours"] or {}).get("vs_als")
    if va:
        size = f"{big['users']:,} x {big['videos']:,}" if big.get("videos") else f"{big['users']:,} users"
        parts.append(f"the nightly job with the ranker serves **{va['wall']:.2f}x** ALS's users/s at {size} "
                     f"(goal ≥ {GOAL_X_ALS:g}x: {'met' if va['wall'] >= GOAL_X_ALS else '**not met**'})")
    cold = doc["cold"]["wall_s"]
    parts.append(f"the cold fixed cost is {cold:.1f} s (goal < {GOAL_COLD_S:g} s: "
                 f"{'met' if cold < GOAL_COLD_S else '**not met**'})")
    return "**Verdict:** " + "; ".join(parts) + "."


def render(doc: dict) -> str:
    """The "## Nightly scoring" section of BENCHMARKS.md from a results document."""
    m = doc["machine"]
    fmt = "/".join
    lines = [
        f"{SECTION} ({doc['date']})", "", verdict(doc), "",
        f"Command: `.venv/bin/python {doc['command']}`  ",
        f"Machine: {m['cores']} cores, {m['ram_gib']:.0f} GiB RAM, no GPU, {m['arch']}, Python {m['python']}, "
        + (f"commit {doc['commit']}, " if doc.get("commit") else "") +
        f"Spark local[2] (score.threads_per_task = {doc['config']['score']['threads_per_task']}). Load average "
        f"(1/5/15 min) at the start: {fmt(f'{x:.1f}' for x in doc['load_before'])}, at the end: "
        f"{fmt(f'{x:.1f}' for x in doc['load_after'])}. CPU seconds are summed over the driver, the JVM and the "
        "Python workers (the load-independent measure); peak RSS is sampled every 0.2 s over the same process "
        "tree (total / JVM / largest Python worker, GiB, and the most Python processes seen at once: in local mode "
        "the JVM and the workers are the executor; the total counts pages that forked workers share once per "
        "process, so it over-states the machine's use).", "",
        "What is timed: `ytspark.score.run_score` as `ytspark score` runs it, with the ranking network "
        f"(`[ranker]` defaults: embed_dim {doc['config']['ranker']['embed_dim']}, hidden "
        f"{list(doc['config']['ranker']['hidden'])}) over each user's K = {doc['config']['score']['k']} fused "
        f"retrievals, N = {doc['config']['score']['n']} written: serving rows from the raw prepared events "
        "(watches, searches, impressions), fallback lists, broadcasts, user tower, exact top K over the folded "
        "video table (`score.index` = flat) fused with the co-visitation source, ranker, top N, atomic Parquet "
        "write, summary; step `start` is run_score's loading before its first mark. Random-weight models "
        "(the cost does not depend on the weights). ALS: Spark MLlib implicit ALS of the same rank on the same "
        "(user, video) watch pairs, `maxIter=1`, fit untimed; `recommendForAllUsers(20)` + Parquet write timed.", "",
        f"Fixed cost: the Spark session started in {doc['session_start_s']:.1f} s; the first, cold `run_score` "
        f"(fresh JVM and Python workers, with the ranker) on a separate {doc['cold']['users']:,}-user x "
        f"{doc['cold']['videos']:,}-video world took **{doc['cold']['wall_s']:.1f} s** wall "
        f"({doc['cold']['cpu_s']:.0f} CPU s; {doc['cold']['with_session_s']:.1f} s with the session start; goal "
        "< 15 s). Its steps (wall/CPU s): " + ", ".join(
            f"{k} {v['wall_s']:.1f}/{v['cpu_s']:.1f}" for k, v in doc["cold"]["steps"].items()) + ".", "",
        f"GEMM rate (torch float32 2048 x 2048 matmul, {doc['gemm']['before']['threads']} threads, best of 5, "
        f"before / after the Spark part): {doc['gemm']['before']['gflops']:.1f} / "
        f"{doc['gemm']['after']['gflops']:.1f} GFLOP/s; the floor uses the better one.", "",
        "| size | system | wall s | users/s (wall) | CPU s | users per CPU-s | x ALS (wall / CPU) | peak RSS GiB "
        "(total / JVM / worker) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for key, r in doc["sizes"].items():
        label = f"{r['users']:,} x {r['videos']:,}" if key != "pipeline" else f"pipeline ({r['users']:,} users)"

        def row(name: str, x: dict | None) -> None:
            if not x:
                return
            va = x.get("vs_als")
            ratio = f"{va['wall']:.2f} / {va['cpu']:.2f}" if va else "-"
            lines.append(f"| {label} | {name} | {x['wall_s']:.1f} | {x['users_per_s']:,.0f} | {x['cpu_s']:.0f} | "
                         f"{x['users_per_cpu_s']:,.0f} | {ratio} | {_mb(x.get('peak_rss'))} |")

        row("ytspark `run_score` with ranker", r["ours"])
        row("ytspark `run_score`, retrieval only (`--no-ranker`)", r["ours_no_ranker"])
        if r["als"]:
            row(f"Spark MLlib ALS (fit {r['als']['fit_s']:.0f} s untimed)", r["als"])
        fl = r["floor"]
        mode = fl["mode"]
        f = fl["by_mode"][mode]
        lines.append(f"| {label} | compute floor ({mode} FLOPs at {fl['gemm_gflops']:.0f} GFLOP/s) | "
                     f"{f['floor_s']:.1f} | {f['floor_users_per_s']:,.0f} | {f['floor_cpu_s']:.0f} | "
                     f"{f['floor_users_per_s'] / doc['gemm']['before']['threads']:,.0f} | - | - |")
        main = r["ours"] or r["ours_no_ranker"]
        ev = r["events"]
        fs = fl["flops"]
        rp = fs["ranker_pair"]
        note = [f"**{label}**: {ev.get('watch', 0):,} watches, {ev.get('search', 0):,} searches, "
                f"{ev.get('impression', 0):,} impressions"
                + (f"; co-visitation table {r['covisit']['nnz']:,} entries, weight {r['covisit']['weight']}"
                   if r.get("covisit") and "nnz" in r["covisit"] else "") + ".",
                "Steps of `run_score` (wall/CPU s): " + ", ".join(
                    f"{k} {v['wall_s']:.1f}/{v['cpu_s']:.1f}" for k, v in main["steps"].items()) + "."]
        if main.get("task_s"):
            note.append("Summed in-task seconds (`timings.task_s`): " + ", ".join(
                f"{k} {v:.1f}" for k, v in main["task_s"].items()) + ".")
        if r["ours"] and r["ours_no_ranker"]:
            x = r["ours_no_ranker"]
            note.append("Retrieval only, steps: " + ", ".join(
                f"{k} {v['wall_s']:.1f}/{v['cpu_s']:.1f}" for k, v in x["steps"].items()) + "."
                + (" In-task seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in x["task_s"].items()) + "."
                   if x.get("task_s") else ""))
        note.append(
            f"FLOPs per user: tower {fs['user_tower']:,}, flat search {fs['search']:,} (V {fs['V']:,} x (D+1) x 2)"
            + (f", ranker per pair {rp['plain']:,} plain (widths {rp['widths']}) / {rp['factorised']:,} factorised "
               "(hidden[0] adds + the rest)" + (f" / {rp['serving']:,} serving (2 x `macs_per_pair()` of the "
                                                "factorised path)" if "serving" in rp else "")
               + f", x K {fs['k']}" if rp else "")
            + "; floor " + ", ".join(f"{m_} {v['flops_per_user'] / 1e6:.1f} MFLOP -> {v['floor_s']:.1f} s "
                                     f"({v['floor_users_per_s']:,.0f} users/s)" for m_, v in fl["by_mode"].items())
            + (f"; the job is {main['vs_floor']['wall']:.1f}x the {mode} floor in wall time, "
               f"{main['vs_floor']['cpu']:.1f}x in CPU time (floor CPU = cores x floor wall)"
               if main.get("vs_floor") else "") + ".")
        reps = [(n_, r[k_]) for n_, k_ in (("ours", "ours"), ("retrieval only", "ours_no_ranker"), ("ALS", "als"))
                if r[k_] and len(r[k_].get("runs_wall_s", [])) > 1]
        if reps:
            note.append("Runs (interleaved; the table shows the median run), wall s: " + "; ".join(
                f"{n_} " + ", ".join(f"{w:.1f}" for w in x["runs_wall_s"]) for n_, x in reps) + ".")
        note.append(f"Load average before / after this size: {fmt(f'{x:.1f}' for x in r['load_before'])} / "
                    f"{fmt(f'{x:.1f}' for x in r['load_after'])}.")
        notes.append(" ".join(note))
    lines += ["", *[n + "\n" for n in notes],
              "Raw numbers: `bench/results/nightly.json`. The floor counts dense FLOPs only (user tower, flat "
              "search over the folded table, ranker x K pairs) at the measured GEMM rate; the co-visitation merge, "
              "seen exclusion, feature gathering, sorting and I/O are on top of it.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

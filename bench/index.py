"""Benchmark: the retrieval index (flat / ivf / hnsw) by catalogue size, one thread, as a Spark task sees it.

    .venv/bin/python bench/index.py [--sizes 20000,50000,200000,500000,1000000] [--queries 1024]
        [--recall-queries 1000] [--hnsw-max 200000] [--reps 3] [--control 50000] [--out bench/results/index.json]
        [--write-benchmarks] [--render bench/results/index.json]

Arguments:
    --sizes           catalogue sizes V (rows of the folded [V, D+1] table, pad/OOV rows 0 and 1
                      included, so the index holds V - 2 videos), comma-separated; 20k is there to
                      bracket flat's crossover.
    --queries         users per search batch (the scoring job's ``score.batch_size``, 1024).
    --recall-queries  users for recall@k of ivf/hnsw against flat (``measure_recall``); the first
                      ones of the batch.
    --hnsw-max        largest V at which hnsw is built: its single-threaded build with the default
                      ``ef_construction=200`` costs 0.3-0.4 CPU-ms per video and grows with V (200k:
                      ~80 CPU-s), so 1M videos would take 7+ CPU-minutes; 0 = every size.
    --reps            timed repeats of each search (the minimum CPU time is reported, and the median).
    --control         V of a unit-norm control (the same directions with norm 1 and bias 0, ivf and hnsw):
                      separates the effect of popularity-skewed norms on recall; 0 = none.
    --out             the JSON results (default bench/results/index.json).
    --write-benchmarks  also (re)write the section "## Retrieval index by catalogue size" of BENCHMARKS.md
                      (re-read right before the edit; only that section is replaced).
    --render JSON     no measuring: print the section from a saved results file (with
                      --write-benchmarks, write it).

What it does: each size runs in its own child process (so peak RSS is per size), with
FAISS, OpenMP, BLAS and torch at one thread (Spark runs one task per core, the job sets
``score.threads_per_task = 1``). A seeded table with the structure of trained
embeddings is drawn: 64-dim video vectors around 200-1000 Gaussian topics (topic sizes
Zipf-skewed), their norms falling with popularity rank, plus the folded bias column
(D+1 = 65); users are mixtures of 1-3 topics, queries ``[u, 1]``; each user excludes a
Poisson(20) number of videos from its main topic, popularity-skewed. For each kind the
project's own code is timed (``ytspark.score.index``, ``conf/default.toml [score]``
defaults): ``build_index`` (wall and CPU s), ``len(serialize(index))``, ``search`` of one
batch with k=200 and the exclusions (CPU ms per user; after a warm-up search), and for
ivf/hnsw ``measure_recall`` at k=200 against the flat index, at the default and at larger
nprobe / efSearch (search-time knobs, no rebuild).

The rule printed at the end: the nightly job's per-user CPU budget is
1000 / (3 x ALS users/s per core) ms, with ALS at 1,150 users/s on 2 cores
(bench/nightly.py on 2026-12-01, 100k users x 50k videos), i.e. about 0.58 ms; flat search
should use at most a third of it. The crossover V is interpolated between the two
measured sizes that bracket it (a least-squares line, ms per user = a + b V, through
all flat measurements is reported too, and used when no pair brackets it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)

D = 64
K = 200
ALS_USERS_PER_S_2_CORES = 1150.0  # BENCHMARKS.md "Scoring (2026-12-01)" (git show 7066e62:BENCHMARKS.md): ALS, 100k x 50k
GOAL_X_ALS = 3.0
FLAT_SHARE = 1.0 / 3.0
SECTION = "## Retrieval index by catalogue size"


def _one_thread_env() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _rss_mib(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def make_data(V: int, n_queries: int, seed: int = 5, unit_norm: bool = False):
    """(table [V, D+1] float32 with rows 0/1 zero, queries [n, D+1], exclusion CSR (indptr, indices), topics).

    ``unit_norm``: the control, the same directions with norm 1 and bias 0 (no popularity skew)."""
    import numpy as np
    rng = np.random.default_rng(seed + V)
    T = int(min(1000, max(200, V // 1000)))
    centers = rng.standard_normal((T, D)).astype(np.float32)
    p_topic = 1.0 / np.arange(1, T + 1) ** 0.7
    p_topic /= p_topic.sum()
    n = V - 2
    topic = rng.choice(T, n, p=p_topic)
    x = centers[topic]
    x += 0.6 * rng.standard_normal((n, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rank = np.arange(1, n + 1, dtype=np.float32)  # row order = popularity rank, as in the vocabulary
    x *= (rank ** -0.15 * np.exp(0.1 * rng.standard_normal(n, dtype=np.float32)))[:, None]
    bias = (-0.5 * np.log(rank) / np.log(n)).astype(np.float32)
    if unit_norm:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        bias[:] = 0
    table = np.zeros((V, D + 1), dtype=np.float32)
    table[2:, :D], table[2:, D] = x, bias
    del x

    # users: mixtures of 1-3 topics (by topic popularity), norm ~3
    n_topics = rng.integers(1, 4, n_queries)
    q = np.zeros((n_queries, D + 1), dtype=np.float32)
    main = np.zeros(n_queries, dtype=np.int64)
    for i in range(n_queries):
        ts = rng.choice(T, n_topics[i], p=p_topic)
        main[i] = ts[0]
        w = rng.dirichlet(np.ones(len(ts))).astype(np.float32)
        u = w @ centers[ts] + 0.4 * rng.standard_normal(D, dtype=np.float32)
        q[i, :D] = 3.0 * np.exp(0.2 * rng.standard_normal()) * u / np.linalg.norm(u)
    q[:, D] = 1.0

    # exclusions: Poisson(20) videos of the user's main topic, skewed to its popular (low-rank) members
    order = np.argsort(topic, kind="stable")  # members of each topic by rank
    starts = np.searchsorted(topic[order], np.arange(T + 1))
    counts = rng.poisson(20, n_queries)
    indptr = np.zeros(n_queries + 1, dtype=np.int64)
    chunks = []
    for i in range(n_queries):
        lo, hi = starts[main[i]], starts[main[i] + 1]
        c = min(int(counts[i]), hi - lo)
        draw = (lo + (hi - lo) * rng.random(8 * c + 8) ** 3).astype(np.int64)
        _, first = np.unique(draw, return_index=True)  # the first c distinct draws
        pos = draw[np.sort(first)[:c]]
        chunks.append(order[pos] + 2)  # +2: table rows 0/1 are pad/OOV
        indptr[i + 1] = indptr[i] + len(pos)
    indices = np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)
    return table, q, (indptr, indices), T


def _timed(fn):
    t, c = time.time(), time.process_time()
    out = fn()
    return out, time.time() - t, time.process_time() - c


IVF_NPROBE_SWEEP = (32, 64, 128)
HNSW_EF_SWEEP = (256, 512, 1024)


def _sweep(ix, faiss, index, exact, kind, qb, eb, qr, k, reps) -> list[dict]:
    """Search-time knob of an approximate index (ivf nprobe, hnsw efSearch): recall@k and CPU ms per user.

    The first entry is the default; the index is left at its default afterwards."""
    if kind == "ivf":
        obj, attr, values = faiss.extract_index_ivf(index), "nprobe", IVF_NPROBE_SWEEP
    else:
        obj, attr, values = faiss.downcast_index(index.index).hnsw, "efSearch", HNSW_EF_SWEEP
    default, out = getattr(obj, attr), []
    for v in values:
        setattr(obj, attr, int(v))
        cpu = min(_timed(lambda: ix.search(index, qb, k, eb))[2] for _ in range(max(1, reps)))
        out.append({attr: int(v), "recall_at_k": round(float(ix.measure_recall(index, exact, qr, k)), 4),
                    "search_cpu_ms_per_user": round(1000 * cpu / len(qb), 4)})
    setattr(obj, attr, default)
    return out


def measure_size(V: int, n_queries: int, n_recall: int, kinds: list[str], reps: int,
                 unit_norm: bool = False) -> dict:
    """All kinds at one size, in this process (call it in a child)."""
    _one_thread_env()
    import faiss
    import numpy as np
    import torch
    sys.path.insert(0, str(ROOT))
    from ytspark.config import load_config
    from ytspark.score import index as ix

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    sc = load_config(None, []).score
    params = dict(nlist=sc.ivf_nlist, nprobe=sc.ivf_nprobe, hnsw_m=sc.hnsw_m,
                  ef_construction=sc.ef_construction, ef_search=sc.ef_search, seed=sc.seed)
    (table, q, excl, T), gen_s, _ = _timed(lambda: make_data(V, max(n_queries, n_recall), unit_norm=unit_norm))
    qb = q[:n_queries]
    eb = (excl[0][:n_queries + 1], excl[1][:excl[0][n_queries]])
    res = {"V": V, "videos_indexed": V - 2, "dim": int(table.shape[1]), "topics": T, "queries": n_queries,
           "excluded_per_user": round(float(np.diff(eb[0]).mean()), 2), "k": sc.k if sc.k else K,
           "unit_norm": unit_norm, "generate_s": round(gen_s, 2), "table_mib": round(table.nbytes / 2**20, 1), "kinds": {}}
    k = res["k"]
    flat = None
    for kind in kinds:
        index, b_wall, b_cpu = _timed(lambda: ix.build_index(table, kind, **params))
        nbytes = len(ix.serialize(index))
        ix.search(index, qb[:32], k, (eb[0][:33], eb[1][:eb[0][32]]))  # warm-up (page-in, BLAS init)
        cpu, wall = [], []
        for _ in range(reps):
            (_, ids), w, c = _timed(lambda: ix.search(index, qb, k, eb))
            cpu.append(c)
            wall.append(w)
        r = {"build_s": round(b_wall, 2), "build_cpu_s": round(b_cpu, 2), "index_bytes": nbytes,
             "index_mib": round(nbytes / 2**20, 1),
             "search_cpu_ms_per_user": round(1000 * min(cpu) / n_queries, 4),
             "search_cpu_ms_per_user_median": round(1000 * statistics.median(cpu) / n_queries, 4),
             "search_wall_ms_per_user": round(1000 * min(wall) / n_queries, 4),
             "short_lists": int((ids[:, -1] < 0).sum())}
        if kind == "ivf":
            ivf = faiss.extract_index_ivf(index)
            r.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
        if kind == "hnsw":
            r.update(m=sc.hnsw_m, ef_construction=sc.ef_construction, ef_search=sc.ef_search)
        if kind == "flat":
            flat = index
        else:
            if flat is None:
                flat = ix.build_index(table, "flat")
            exact = flat
            rec, rw, rc = _timed(lambda: ix.measure_recall(index, exact, q[:n_recall], k))
            r.update(recall_at_k=round(float(rec), 4), recall_queries=n_recall, recall_s=round(rw, 2))
            r["sweep"] = _sweep(ix, faiss, index, exact, kind, qb, eb, q[:n_recall], k, reps)
            del index
        r["rss_after_mib"] = round(_rss_mib("VmRSS"), 0)
        res["kinds"][kind] = r
        print(f"  V={V:,} {kind}: {json.dumps(r)}", file=sys.stderr, flush=True)
    res["peak_rss_mib"] = round(_rss_mib("VmHWM"), 0)
    return res


def rule(sizes: list[dict]) -> dict:
    """The per-user budget, flat's line through (V, ms/user) and the V where flat passes its share."""
    import numpy as np
    budget = 1000.0 / (GOAL_X_ALS * ALS_USERS_PER_S_2_CORES / 2)
    share = FLAT_SHARE * budget
    pts = [(s["V"], s["kinds"]["flat"]["search_cpu_ms_per_user"]) for s in sizes if "flat" in s["kinds"]]
    out = {"als_users_per_s_2_cores": ALS_USERS_PER_S_2_CORES, "goal_x_als": GOAL_X_ALS,
           "budget_cpu_ms_per_user": round(budget, 4), "flat_share": round(FLAT_SHARE, 4),
           "flat_limit_cpu_ms_per_user": round(share, 4)}
    if len(pts) >= 2:
        v, ms = np.array(pts, dtype=float).T
        b, a = np.polyfit(v, ms, 1)
        out.update(flat_fit_ms={"intercept": round(float(a), 4), "per_100k_videos": round(float(b) * 1e5, 4)},
                   flat_crossover_V=int(round((share - a) / b)) if b > 0 else None)
    over = [V for V, m in pts if m > share]
    out["smallest_measured_V_over_limit"] = min(over) if over else None
    pts = sorted(pts)
    for (v0, m0), (v1, m1) in zip(pts, pts[1:]):  # crossover between the measured sizes that bracket it
        if m0 <= share < m1:
            out["flat_crossover_V_interpolated"] = int(round(v0 + (share - m0) / (m1 - m0) * (v1 - v0)))
            break
    return out


def _fmt_table(res: dict) -> list[str]:
    lines = ["| V (videos) | kind | build s (CPU) | index MiB | search CPU ms/user (min / median) | "
             "recall@200 vs flat | share of the 0.58 ms budget | peak RSS MiB (size) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    budget = res["rule"]["budget_cpu_ms_per_user"]
    for s in res["sizes"]:
        for kind, r in s["kinds"].items():
            extra = f" (nlist {r['nlist']}, nprobe {r['nprobe']})" if kind == "ivf" else ""
            rec = f"{r['recall_at_k']:.4f}" if "recall_at_k" in r else "1 (exact)"
            lines.append(f"| {s['V']:,} | {kind}{extra} | {r['build_s']:.1f} ({r['build_cpu_s']:.1f}) | "
                         f"{r['index_mib']:.0f} | {r['search_cpu_ms_per_user']:.3f} / "
                         f"{r['search_cpu_ms_per_user_median']:.3f} | {rec} | "
                         f"{100 * r['search_cpu_ms_per_user'] / budget:.0f}% | {s['peak_rss_mib']:.0f} |")
    return lines


def _sweep_lines(res: dict) -> list[str]:
    budget = res["rule"]["budget_cpu_ms_per_user"]
    lines = ["| V | kind | knob | recall@200 | search CPU ms/user | share of budget |", "|---:|---|---|---:|---:|---:|"]
    for s in res["sizes"] + res.get("unit_norm_control", []):
        tag = " (unit-norm control)" if s.get("unit_norm") else ""
        for kind, r in s["kinds"].items():
            for e in r.get("sweep", []):
                knob = "nprobe" if "nprobe" in e else "efSearch"
                lines.append(f"| {s['V']:,}{tag} | {kind} | {knob} {e[knob]} | {e['recall_at_k']:.4f} | "
                             f"{e['search_cpu_ms_per_user']:.3f} | {100 * e['search_cpu_ms_per_user'] / budget:.0f}% |")
    return lines


def verdict(res: dict) -> list[str]:
    """The recommendation, from the figures."""
    ru, budget = res["rule"], res["rule"]["budget_cpu_ms_per_user"]
    limit = ru["flat_limit_cpu_ms_per_user"]
    pct = lambda ms: f"{100 * ms / budget:.0f}%"  # noqa: E731
    out = []
    flat = [(s["V"], s["kinds"]["flat"]["search_cpu_ms_per_user"]) for s in res["sizes"] if "flat" in s["kinds"]]
    out.append("Flat search CPU per user by V: " + ", ".join(f"{V // 1000:,}k {ms:.3f} ms ({pct(ms)})" for V, ms in flat)
               + ".")
    ivf = [(s["V"], s["kinds"]["ivf"]) for s in res["sizes"] if "ivf" in s["kinds"]]
    parts = []
    for V, r in ivf:
        good = [e for e in r["sweep"] if e["recall_at_k"] >= 0.95]
        g = (f"; recall ≥ 0.95 first at nprobe {good[0]['nprobe']} ({good[0]['recall_at_k']:.3f}, "
             f"{good[0]['search_cpu_ms_per_user']:.3f} ms, {pct(good[0]['search_cpu_ms_per_user'])})") if good else \
            f"; no swept nprobe (≤ {r['sweep'][-1]['nprobe']}) reaches 0.95"
        parts.append(f"{V // 1000:,}k: recall {r['recall_at_k']:.3f} at {r['search_cpu_ms_per_user']:.3f} ms "
                     f"({pct(r['search_cpu_ms_per_user'])}){g}")
    out.append("ivf at the defaults (nlist ≤ 1024, nprobe 32): " + "; ".join(parts) + ".")
    if len({s["topics"] for s in res["sizes"]}) > 1:
        out.append("(The data has more topics at the larger sizes, see above, so ivf's recall there mixes "
                   "catalogue size and topic count.)")
    hn = [(s["V"], s["kinds"]["hnsw"]) for s in res["sizes"] if "hnsw" in s["kinds"]]
    if hn:
        out.append("hnsw at the defaults: " + "; ".join(
            f"{V // 1000:,}k: recall {r['recall_at_k']:.3f} at {r['search_cpu_ms_per_user']:.3f} ms "
            f"({pct(r['search_cpu_ms_per_user'])}), build {r['build_cpu_s']:.0f} CPU s; efSearch "
            f"{r['sweep'][-1]['efSearch']}: {r['sweep'][-1]['recall_at_k']:.3f} at "
            f"{r['sweep'][-1]['search_cpu_ms_per_user']:.3f} ms" for V, r in hn) + ".")
    for c in res.get("unit_norm_control", []):
        out.append(f"Unit-norm control at {c['V'] // 1000:,}k (same directions, norm 1, bias 0): " + "; ".join(
            f"{k} recall {r['recall_at_k']:.3f}" for k, r in c["kinds"].items()) + ".")

    # the recommendation: per measured size past the crossover, the cheapest swept ivf setting with recall >= 0.95
    cross = ru.get("flat_crossover_V_interpolated") or ru.get("flat_crossover_V") or 0
    rec = []
    for V, r in ivf:
        if V < cross:
            continue
        good = [e for e in r["sweep"] if e["recall_at_k"] >= 0.95]
        if good:
            e = good[0]
            rec.append(f"{V // 1000:,}k: nprobe {e['nprobe']} (recall {e['recall_at_k']:.3f}, "
                       f"{pct(e['search_cpu_ms_per_user'])} of the budget"
                       + (", more than a third" if e["search_cpu_ms_per_user"] > limit else "") + ")")
        else:
            best = r["sweep"][-1]
            rec.append(f"{V // 1000:,}k: no nprobe ≤ {best['nprobe']} reaches recall 0.95 (nprobe {best['nprobe']}: "
                       f"{best['recall_at_k']:.3f} at {pct(best['search_cpu_ms_per_user'])} of the budget); with "
                       f"nlist {r['nlist']} (~{V // r['nlist']:,} videos a cell) a larger `ivf_nlist` is needed "
                       "(not measured here)")
    out += ["", f"**Recommendation.** Keep `flat` below V ≈ {cross:,}; from there on switch to `ivf` and raise "
            "`ivf_nprobe` to the smallest value with recall ≥ 0.95: " + ("; ".join(rec) or "no measured size past it") + "."]
    if hn:
        lo, hi = min(r["recall_at_k"] for _, r in hn), max(r["recall_at_k"] for _, r in hn)
        ctl = [c["kinds"]["hnsw"]["recall_at_k"] for c in res.get("unit_norm_control", []) if "hnsw" in c["kinds"]]
        falling = len(hn) > 1 and all(a[1]["recall_at_k"] > b[1]["recall_at_k"] for a, b in zip(hn, hn[1:]))
        dearer = [V for V, r in hn if r["search_cpu_ms_per_user"] > dict(flat).get(V, float("inf"))]
        if hi < 0.9:
            out.append(f"`hnsw` as `build_index` builds it (inner-product HNSW over the folded table) is no option here: "
                       f"recall {lo:.2f}-{hi:.2f} at the defaults" + (", falling with V" if falling else "") +
                       (f", at more CPU than flat at {', '.join(f'{V // 1000:,}k' for V in dearer)}" if dearer else "")
                       + (f"; the unit-norm control reaches {ctl[0]:.3f}, so the popularity-skewed "
                                          "norms are the cause (inner product is not a metric; a MIPS-to-L2 "
                                          "transform of the table would be the fix, not in the code)" if ctl else "")
                       + ".")
    return out


def section_verdict(res: dict) -> str:
    """One line against the goal: flat search within a third of the nightly job's per-user budget, else ivf."""
    ru = res["rule"]
    cross = ru.get("flat_crossover_V_interpolated") or ru.get("flat_crossover_V")
    ok = [s["V"] for s in res["sizes"] if "ivf" in s["kinds"] and (cross is None or s["V"] >= cross)
          and any(e["recall_at_k"] >= 0.95 for e in s["kinds"]["ivf"].get("sweep", []))]
    hn = [s["kinds"]["hnsw"]["recall_at_k"] for s in res["sizes"] if "hnsw" in s["kinds"]]
    out = ("**Verdict:** the default exact `flat` index keeps within a third of the per-user budget "
           f"({ru['flat_limit_cpu_ms_per_user']:.3f} CPU-ms) " + (f"up to V ≈ {cross:,}" if cross else "at every size"))
    if ok:
        out += f"; above it `ivf` with a raised nprobe holds recall@200 ≥ 0.95 up to {max(ok):,} videos"
    if hn and max(hn) < 0.9:
        out += f"; `hnsw` as built recalls {min(hn):.2f}-{max(hn):.2f} and is no option"
    return out + "."


def render(doc: dict) -> str:
    """The "## Retrieval index by catalogue size" section of BENCHMARKS.md from a results document."""
    res = dict(doc)
    res["rule"] = rule(res["sizes"])
    return section_text(res)


def section_text(res: dict) -> str:
    ru = res["rule"]
    topics = ", ".join(f"{s['topics']} at {s['V'] // 1000:,}k" for s in res["sizes"])
    hn = [s for s in res["sizes"] if "hnsw" in s["kinds"]]
    hnsw_note = ""
    if hn and len(hn) < len(res["sizes"]):
        last = hn[-1]
        per = last["kinds"]["hnsw"]["build_cpu_s"] / last["videos_indexed"]  # CPU s per video, grows with V
        hnsw_note = (f"hnsw is built up to V = {last['V']:,} only: its one-thread build took {1000 * per:.2f} CPU-ms "
                     f"per video there and grows with V, so 500k would take ≥ {per * 5e5 / 60:.0f} and 1M ≥ "
                     f"{per * 1e6 / 60:.0f} CPU-minutes (more in wall time on the shared machine). ")
    lines = [f"{SECTION} ({res['date']})", "", section_verdict(res), "",
             f"Command: `{res['command']}`  ",
             f"Machine: 2 cores, 24 GiB RAM, no GPU, x86_64, Python {res['python']}, faiss {res['faiss']}"
             + (f", commit {res['commit']}" if res.get("commit") else "") + "; "
             f"one thread (FAISS, OpenMP, BLAS, torch), each size in its own process. Load average at the start "
             f"{res['load_start']}, at the end {res['load_end']} (shared with other sessions' jobs: wall times are "
             "inflated, CPU times are the measure; the minimum of the repeats is reported, the median beside it).",
             "", f"Data: seeded folded table [V, 65] float32: 64-dim vectors around Gaussian topics "
             f"({topics}; Zipf-sized), "
             "norms falling with popularity rank (rank^-0.15), a bias column; "
             f"{res['sizes'][0]['queries']:,} users per batch (mixtures of 1-3 topics, query [u, 1]), ~20 excluded "
             "videos each (popular ones of their main topic), k = 200. `ytspark.score.index` with the `[score]` "
             "defaults (ivf nlist 1024 capped at V/39, nprobe 32; hnsw M 32, efConstruction 200, efSearch 256); "
             f"recall@200 by `measure_recall` on {res['args']['recall_queries']:,} users. "
             + hnsw_note + "Search CPU times move by up to ~30% between runs on this shared machine (two runs on "
             "2026-12-02: ivf at 1M 0.45 and 0.31 CPU-ms per user, flat at 50k 0.22 and 0.25); recalls are deterministic (seeded data and k-means).", ""]
    lines += _fmt_table(res)
    lines += ["", "Peak RSS is the size's child process (VmHWM): about 310 MiB of it is the interpreter with numpy, "
              "torch and FAISS imported; the rest is the table, the flat index and the approximate one, and the "
              "serialised copy (`serialize`, what the job broadcasts)."]
    lines += ["", "Search-time knobs (the first row of each is the default):", ""] + _sweep_lines(res)
    lines += ["", f"**Rule.** Per-user CPU budget of the nightly job = 1000 / (3 x ALS users/s per core) = "
              f"1000 / (3 x {ALS_USERS_PER_S_2_CORES / 2:.0f}) = **{ru['budget_cpu_ms_per_user']:.2f} ms**; "
              f"flat search alone may use a third, {ru['flat_limit_cpu_ms_per_user']:.3f} ms."]
    if ru.get("flat_fit_ms"):
        f = ru["flat_fit_ms"]
        n = lambda v: f"{v:,}" if v is not None else "none"  # noqa: E731
        where = (f"**V ≈ {ru['flat_crossover_V_interpolated']:,}** (interpolated between the measured sizes "
                 f"that bracket it; the line gives {n(ru['flat_crossover_V'])})") \
            if ru.get("flat_crossover_V_interpolated") else f"V ≈ {n(ru['flat_crossover_V'])} (from the line)"
        lines.append(f"Flat search costs about {f['intercept']:.3f} ms + {f['per_100k_videos']:.3f} ms per 100k "
                     f"videos per user (least-squares line over the sizes) and passes that third at {where}; "
                     f"smallest measured size over it: {n(ru['smallest_measured_V_over_limit'])}.")
    lines += [""] + verdict(res)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,50000,200000,500000,1000000")
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--hnsw-max", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--control", type=int, default=50_000,
                    help="V of the unit-norm control (ivf and hnsw on the same directions, norm 1, bias 0); 0 = none")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "index.json"))
    ap.add_argument("--write-benchmarks", action="store_true")
    ap.add_argument("--render", default="", help="print (and with --write-benchmarks write) the section from this "
                    "results JSON, without measuring")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--kinds", default="flat,ivf,hnsw", help=argparse.SUPPRESS)
    ap.add_argument("--unit-norm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = measure_size(args.child, args.queries, args.recall_queries, args.kinds.split(","), args.reps,
                           unit_norm=args.unit_norm)
        print(json.dumps(res))
        return

    if args.render:  # re-write the text (and the section) from saved results, no measuring
        text = render(json.loads(Path(args.render).read_text()))
        print(text)
        if args.write_benchmarks:
            R.write_section(text)
        return

    import faiss
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_start = "/".join(f"{x:.1f}" for x in os.getloadavg())
    def child(V: int, kinds: list[str], extra: list[str]) -> dict:
        cmd = [sys.executable, __file__, "--child", str(V), "--queries", str(args.queries),
               "--recall-queries", str(args.recall_queries), "--reps", str(args.reps), "--kinds", ",".join(kinds),
               *extra]
        print(f"V={V:,}: {kinds} {extra}", file=sys.stderr, flush=True)
        t = time.time()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["child_wall_s"] = round(time.time() - t, 1)
        return r

    results = [child(V, ["flat", "ivf"] + (["hnsw"] if args.hnsw_max <= 0 or V <= args.hnsw_max else []), [])
               for V in sizes]
    controls = [child(args.control, ["ivf", "hnsw"], ["--unit-norm"])] if args.control else []
    cmd_line = ".venv/bin/python bench/index.py " + " ".join(sys.argv[1:])
    res = {"script": "index", "date": date.today().isoformat(), "commit": R.commit(), "command": cmd_line.strip(),
           "python": platform.python_version(),
           "faiss": faiss.__version__, "machine": "2 cores, 24 GiB, no GPU", "cpu_count": os.cpu_count(),
           "load_start": load_start, "load_end": "/".join(f"{x:.1f}" for x in os.getloadavg()),
           "args": {k: v for k, v in vars(args).items() if k not in ("child", "kinds", "unit_norm", "render")},
           "sizes": results, "unit_norm_control": controls}
    res["rule"] = rule(results)
    R.write_json("index", res, args.out)
    text = section_text(res)
    print(text)
    if args.write_benchmarks:
        R.write_section(text)


if __name__ == "__main__":
    main()

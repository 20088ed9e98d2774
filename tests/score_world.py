"""The scoring world shared by test_score*.py, test_evaluate_world.py and test_ranker_world.py.

Seeded hand-written logs (40 users, 60 videos, watches with timestamp ties,
searches, impressions, cold users) run through the real ``prepare``, and
seeded random models published with ``write_model_dir``. The fixtures that
build it once per test session (``world``, ``scored``, ``fused``) are in
conftest.py; the builders and the reference helpers are here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from helpers import DAY, T0, make_config, write_jsonl, write_random_candidate_model

from ytspark import schema as S
from ytspark.models.export import write_model_dir
from ytspark.prepare import read_inputs, run_prepare
from reference_rows import user_candidate_rows

from ytspark.features.params import CandidateParams
from ytspark.vocab import Vocab, tokenize

H = 8  # prepare.history_length
K, N = 10, 5
RUN_DATE = "2023-12-20"  # after every event of the world
N_VIDEOS = 60
WORDS = ("cats", "dogs", "news", "funny", "music", "live", "cooking", "cars")


# ------------------------------------------------------------------ the world: logs -> real prepare

def world_logs(seed: int = 11):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, N_VIDEOS + 1) ** 0.8
    pop /= pop.sum()
    events, users = [], []
    for u in range(40):
        uid = f"u{u:02d}"
        users.append({"user_id": uid, "gender": ["f", "m"][u % 2], "country": ["NL", "DE", "US"][u % 3],
                      "language": ["nl", "de", "en"][u % 3], "device": ["ios", "web"][u % 2],
                      **({"age": float(15 + u)} if u % 5 else {"birth_year": 1960 + u})})
        n = int(rng.integers(3, 26))
        days = np.sort(rng.uniform(0, 30, n))
        if n > 4:
            days[3] = days[2]  # a timestamp tie between two watches
        for d, v in zip(days, rng.choice(N_VIDEOS, n, p=pop)):
            events.append({"event_ts": T0 + float(d) * DAY, "user_id": uid, "event_type": "watch",
                           "video_id": f"v{v}", "watch_seconds": float(rng.uniform(10, 100)), "video_seconds": 100.0})
        for d in rng.uniform(0, 30, int(rng.integers(0, 5))):
            q = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
            events.append({"event_ts": T0 + float(d) * DAY + 0.5, "user_id": uid, "event_type": "search", "query": q})
        for d in rng.uniform(0, 30, 3):
            events.append({"event_ts": T0 + float(d) * DAY + 0.25, "user_id": uid, "event_type": "impression",
                           "video_id": f"v{int(rng.integers(0, N_VIDEOS))}", "clicked": int(rng.integers(0, 2)),
                           "watch_seconds": 30.0})
    # Cold users: no events. c1 is in u03, u06 and u09's (country, age bucket); c2 gives no country.
    users += [{"user_id": "c1", "gender": "f", "country": "NL", "language": "nl", "device": "ios", "age": 20.0},
              {"user_id": "c2", "gender": "m", "language": "en", "device": "web", "age": 40.0}]
    # s1 only searched (usable history through tokens); x1 has events but no users row.
    events.append({"event_ts": T0 + 5 * DAY, "user_id": "s1", "event_type": "search", "query": "funny cats"})
    users.append({"user_id": "s1", "country": "DE", "age": 50.0})
    events.append({"event_ts": T0 + 6 * DAY, "user_id": "x1", "event_type": "watch", "video_id": "v0"})
    videos = [{"video_id": f"v{i}", "upload_ts": T0 - (i % 9) * DAY, "duration_seconds": 100.0,
               "language": ["nl", "de", "en"][i % 3], "channel_id": f"ch{i % 7}", "category": f"cat{i % 5}",
               "title": "t"} for i in range(N_VIDEOS)]
    return events, users, videos


def score_cfg(raw: dict | None = None, *extra: str):
    sets = [f"prepare.history_length={H}", "prepare.max_examples_per_user=100", "prepare.token_min_count=1",
            "prepare.target_shards=1", f"score.k={K}", f"score.n={N}", "score.batch_size=4", "score.partitions=4",
            "score.demographic_list=4", "score.recall_sample_users=50", *extra]
    if raw:
        sets += [f'data.events="{raw["events"]}"', f'data.users="{raw["users"]}"', f'data.videos="{raw["videos"]}"']
    return make_config(*sets)


def candidate_dir(root: Path, prepared: str, seed: int) -> str:
    return write_random_candidate_model(root, prepared, seed)


def make_world(spark, tmp: Path) -> dict:
    """Write the logs, run the real prepare and publish a seeded random candidate model under ``tmp``."""
    events, users, videos = world_logs()
    raw = {"events": write_jsonl(tmp / "raw" / "events.jsonl", events),
           "users": write_jsonl(tmp / "raw" / "users.jsonl", users),
           "videos": write_jsonl(tmp / "raw" / "videos.jsonl", videos)}
    cfg = score_cfg(raw)
    prepared = str(tmp / "prepared")
    run_prepare(spark, cfg, read_inputs(spark, cfg), prepared)
    from ytspark.features.events import event_seq

    # with prepare's same-second tie-break, which the reference rows sort by too
    ev = spark.read.parquet(str(Path(prepared, "events")))
    assert S.LOG_SEQ in ev.columns  # prepare.tie_break = "log" (the default): ties in the order of the log
    ev = ev.withColumn(S.EVENT_SEQ, event_seq(ev.columns)).toPandas()
    vocab = {n: Vocab(n, json.loads(Path(prepared, "vocab", f"{n}.json").read_text())["values"])
             for n in ("video", "token")}
    return {"tmp": tmp, "prepared": prepared, "cfg": cfg, "events": ev, "vocab": vocab,
            "users": {u["user_id"] for u in users} | {e["user_id"] for e in events},
            "model": candidate_dir(tmp / "models", prepared, seed=1)}


def reference_rows(world, as_of: float, demo: pd.DataFrame) -> dict:
    """user -> the row user_candidate_rows builds for a pseudo label watched at ``as_of``."""
    ev = world["events"]
    ev = ev[ev[S.EVENT_TS] < as_of]
    vid, tok = world["vocab"]["video"], world["vocab"]["token"]
    out = {}
    for uid, g in ev.groupby(S.USER_ID):
        w = g[g[S.EVENT_TYPE] == "watch"].assign(v=lambda d: vid.lookup(d[S.VIDEO_ID]))
        w = w.sort_values([S.EVENT_TS, S.EVENT_SEQ])
        s = g[g[S.EVENT_TYPE] == "search"].sort_values(S.EVENT_TS)
        toks = [(t, tok.index(x)) for t, q in zip(s[S.EVENT_TS], s[S.QUERY]) for x in tokenize(q)]
        # the pseudo label: one completed watch at as_of, the only completed one -> it is the last row built
        w_ts = np.append(w[S.EVENT_TS].to_numpy(np.float64), as_of)
        w_vid = np.append(w["v"].to_numpy(np.int32), 2).astype(np.int32)
        completed = np.zeros(len(w_ts), bool)
        completed[-1] = True
        if uid not in demo.index:  # no training row to take prepare's demographics from
            continue
        d = demo.loc[uid].to_dict()
        rows = user_candidate_rows(uid, w_ts, w_vid, completed, np.array([t for t, _ in toks], np.float64),
                                   np.array([k for _, k in toks], np.int32), d,
                                   CandidateParams(H, 1, "recent", 7, as_of))
        last = rows.iloc[-1]
        assert last[S.CAND_LABEL_TS] == as_of
        out[uid] = last
    return out


def serving_rows(spark, world, as_of: float, **kw) -> dict:
    """user -> its serving columns (the scoring pass's code, :func:`serving_columns`), as a dict of values."""
    from ytspark.score.features import AFFINITY_GROUPS, Encoder, affinity_columns, collect_serving_columns, \
        load_vocabs, serving_events

    from ytspark.score.job import _video_meta

    vocabs = load_vocabs(spark, world["prepared"])
    ev = serving_events(spark, world["prepared"], as_of)
    meta = _video_meta(spark, world["prepared"], vocabs) if kw.get("affinity") else None
    cols = collect_serving_columns(ev, as_of, H, Encoder.of(vocabs, as_of, meta), kw.get("affinity", False))
    out = {}
    for i, uid in enumerate(cols[S.USER_ID]):
        off, vals = cols["seen"]
        r = {c: cols[c][i] for c in FEATURES}
        r["seen"] = vals[off[i]:off[i + 1]]
        for g in AFFINITY_GROUPS if kw.get("affinity") else ():
            a = cols[g]
            lo, hi = a.offsets[i], a.offsets[i + 1]
            for name, v in zip(affinity_columns(g), (a.ids, a.counts, a.since)):
                r[name] = v[lo:hi]
        out[uid] = r
    return out


FEATURES = (S.CAND_WATCH_HIST, S.CAND_WATCH_AGE, S.CAND_SEARCH_HIST, S.CAND_N_WATCHES, S.CAND_SINCE_LAST,
            S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS)


def assert_same_rows(serving, training, uid):
    for c in FEATURES:
        a, b = serving[c], training[c]
        if isinstance(a, (list, np.ndarray)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{uid}.{c}")
        else:
            assert a == b, f"{uid}.{c}: serving {a} != training {b}"

def read_lists(spark, path: str) -> pd.DataFrame:
    return spark.read.parquet(path).toPandas().sort_values([S.USER_ID, "rank"]).reset_index(drop=True)


def make_scored(spark, world: dict) -> dict:
    """The nightly job run once on the world: its output dir, table path, manifest and rows."""
    from ytspark.score import run_score

    out = str(world["tmp"] / "out")
    m = run_score(spark, world["cfg"], world["prepared"], world["model"], RUN_DATE, out)
    path = f"{out}/recommendations/run_date={RUN_DATE}"
    return {"out": out, "path": path, "manifest": m, "df": read_lists(spark, path)}


def make_fused(world: dict):
    """The world's random candidate model fused with the co-visitation table of its training rows (w = 5)."""
    from ytspark.models.covisit import build_covisitation
    from ytspark.rows import read_split

    tr = read_split(f"{world['prepared']}/candidates/train", [S.CAND_WATCH_HIST, S.CAND_LABEL])
    n_videos = len(world["vocab"]["video"].values) + 2
    cv = build_covisitation(tr[S.CAND_WATCH_HIST], tr[S.CAND_LABEL], n_videos, window=4, top_m=6,
                            recent_k=3, decay=0.7).with_weight(5.0)
    assert len(cv.indices) > 0
    return cv, write_random_candidate_model(world["tmp"] / "models_cv", world["prepared"], 1, covisit=cv)


def ranker_dir(root: Path, prepared: str, seed: int, blend: dict | None = None,
                calibration: dict | None = None) -> str:
    from ytspark.models.ranker import RankerConfig, RankerModel

    vocab = {n: json.loads(Path(prepared, "vocab", f"{n}.json").read_text()) for n in S.VOCAB_NAMES}
    size = {n: len(v["values"]) + 2 for n, v in vocab.items()}
    quant = json.loads(Path(prepared, "quantiles.json").read_text())["ranking"]
    cfg = RankerConfig.from_vocab_sizes(size, embed_dim=8, hidden=(16,))
    torch.manual_seed(seed)
    model = RankerModel(cfg, quant)
    meta = {"model_config": cfg.to_dict(), **({"blend": blend} if blend else {}),
            **({"calibration": calibration} if calibration else {})}
    out = write_model_dir(root, "ranker", state_dict=model.state_dict(), meta=meta,
                          json_files={**{f"vocab/{n}.json": v for n, v in vocab.items()}, "quantiles.json": quant},
                          version=f"rank-{seed}" + ("-blend" if blend else "") + ("-cal" if calibration else ""))
    return str(out)



def serving_block(r: dict, at: np.ndarray | None = None):
    """The ranker's :class:`~ytspark.score.rank.UserBlock` of one user from its serving row
    (``serving_rows(..., affinity=True)``), with request times ``at`` when given."""
    from ytspark.score.features import AFFINITY_GROUPS, affinity_columns
    from ytspark.score.rank import Csr, UserBlock

    aff = {}
    for g in AFFINITY_GROUPS:
        ids, cnt, since = affinity_columns(g)
        aff[g] = Csr(np.array([0, len(r[ids])]), np.asarray(r[ids]), np.asarray(r[cnt], np.float32),
                     np.asarray(r[since], np.float32))
    args = (np.asarray([r[S.CAND_WATCH_HIST]]), np.asarray([r["language_idx"]]),
            np.asarray([r[S.CAND_SINCE_LAST]], np.float32), aff)
    return UserBlock(*args) if at is None else UserBlock(*args, at)

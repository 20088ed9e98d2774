"""Small builders shared by tests: configs and hand-written raw logs."""
from __future__ import annotations

import json
from pathlib import Path

from ytspark.schema import DAY


def make_config(*overrides: str):
    """The ``local`` profile with ``--set``-style overrides; ``as_of`` fixed so 'future' is stable."""
    from ytspark.config import load_config

    return load_config("local", ['validate.as_of="2026-11-23"', *overrides])


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


T0 = 1_700_000_000.0  # 2023-11-14, a fixed origin for hand-built logs


def watch(user: str, day: float, video: str, watch_s: float = 100.0, video_s: float = 100.0) -> dict:
    return {"event_ts": T0 + day * DAY, "user_id": user, "event_type": "watch", "video_id": video,
            "watch_seconds": watch_s, "video_seconds": video_s}


def search(user: str, day: float, query: str) -> dict:
    return {"event_ts": T0 + day * DAY, "user_id": user, "event_type": "search", "query": query}


def impression(user: str, day: float, video: str, clicked: int, watch_s: float | None = None) -> dict:
    r = {"event_ts": T0 + day * DAY, "user_id": user, "event_type": "impression", "video_id": video,
         "clicked": clicked}
    if watch_s is not None:
        r["watch_seconds"] = watch_s
    return r


def write_known_answer_prepared(root: Path, *, n_videos: int = 40, n_train_users: int = 400, n_val_users: int = 100,
                                rows_per_user: int = 8, seed: int = 0, row_groups: int = 8,
                                sequences: bool = False) -> str:
    """A prepared directory (candidates only) whose next watch is a fixed function of the history.

    Real videos are vocab ids 2..n_videos+1; label = perm[last watch] for a
    fixed seeded permutation, and the label never occurs in the history (so
    excluding watched videos cannot hide it). Written with pyarrow in
    CANDIDATE_SCHEMA, balanced row groups, plus manifest, quantiles and
    vocabularies in the layout of ``ytspark prepare``. With ``sequences`` also
    ``sequences/train`` (SEQUENCE_SCHEMA): the training rows, every real slot j
    a position whose target is perm[its watch], all searches visible.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ytspark import schema as S

    rng = np.random.default_rng(seed)
    ids = np.arange(2, n_videos + 2)
    perm = dict(zip(ids, rng.permutation(ids)))
    H = 50

    def rows(users: range, split: str, per_user: int):
        out = []
        for u in users:
            for _ in range(per_user):
                last = int(rng.choice(ids))
                label = int(perm[last])
                while label == last:
                    last = int(rng.choice(ids))
                    label = int(perm[last])
                others = [v for v in rng.choice(ids, size=int(rng.integers(0, 6))) if v not in (label, last)]
                hist = [last, *[int(v) for v in others]]
                out.append({S.USER_ID: f"u{u:05d}", S.SPLIT: split, S.CAND_LABEL: label, S.CAND_LABEL_TS: 0.0,
                            S.CAND_WATCH_HIST: hist + [0] * (H - len(hist)),
                            S.CAND_WATCH_AGE: [float(i + 1) for i in range(len(hist))] + [0.0] * (H - len(hist)),
                            S.CAND_SEARCH_HIST: [0] * H, S.CAND_N_WATCHES: len(hist), S.CAND_SINCE_LAST: 1.0,
                            S.CAND_EXAMPLE_AGE: float(rng.integers(0, 30)) if split == "train" else 0.0,
                            S.USER_AGE: -1.0, **{c: 1 for c in S.DEMOGRAPHIC_COLUMNS}})
        return out

    schema = pa.schema([pa.field(f.name, pa.list_(pa.int32()) if f.name in (S.CAND_WATCH_HIST, S.CAND_SEARCH_HIST)
                                 else pa.list_(pa.float32()) if f.name == S.CAND_WATCH_AGE
                                 else {"string": pa.string(), "int": pa.int32(), "double": pa.float64(),
                                       "float": pa.float32()}[f.dataType.simpleString()])
                        for f in S.CANDIDATE_SCHEMA.fields])
    splits = {"train": rows(range(n_train_users), "train", rows_per_user),
              "val": rows(range(n_train_users, n_train_users + n_val_users), "val", 1),
              "test": rows(range(n_train_users + n_val_users, n_train_users + 2 * n_val_users), "test", 1)}
    root = Path(root)
    if sequences:
        seq_rows = [{**r, S.SEQ_NEXT: [int(perm[v]) if v else 0 for v in r[S.CAND_WATCH_HIST]],
                     S.SEQ_SEARCH_FROM: [0] * H} for r in splits["train"]]
        schema_seq = pa.schema(list(schema) + [pa.field(S.SEQ_NEXT, pa.list_(pa.int32())),
                                               pa.field(S.SEQ_SEARCH_FROM, pa.list_(pa.int32()))])
        d = root / "sequences" / "train"
        d.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(seq_rows, schema=schema_seq)
        per_group = -(-len(seq_rows) // row_groups)
        for g in range(row_groups):
            pq.write_table(table.slice(g * per_group, per_group), d / f"part-{g:05d}.parquet")
    for split, rs in splits.items():
        d = root / "candidates" / split
        d.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rs, schema=schema)
        per_group = -(-len(rs) // row_groups)
        for g in range(row_groups):
            part = table.slice(g * per_group, per_group)
            if part.num_rows:
                pq.write_table(part, d / f"part-{g:05d}.parquet")
    vocab_sizes = {"video": n_videos + 2, "token": 3, "gender": 3, "country": 3, "language": 3, "device": 3,
                   "channel": 3, "category": 3, "source": 6}
    (root / "vocab").mkdir(exist_ok=True)
    for name, n in vocab_sizes.items():
        values = [f"v{i}" for i in range(2, n_videos + 2)] if name == "video" else [f"{name}{i}" for i in range(n - 2)]
        (root / "vocab" / f"{name}.json").write_text(json.dumps(
            {"name": name, "pad": 0, "oov": 1, "values": values, "counts": [1] * len(values)}))
    q = [float(x) for x in range(0, 21)]
    (root / "quantiles.json").write_text(json.dumps({"candidates": {c: q for c in (
        S.CAND_EXAMPLE_AGE, S.CAND_SINCE_LAST, S.CAND_N_WATCHES, S.USER_AGE)}, "ranking": {}}))
    (root / "manifest.json").write_text(json.dumps({
        "vocab_sizes": vocab_sizes, "window_end": 0.0,
        "candidates": {k: len(v) for k, v in splits.items()}, "ranking": {"train": 0, "val": 0, "test": 0},
        **({"sequences": {"train": len(splits["train"])}} if sequences else {})}))
    (root / "_SUCCESS").write_text("")
    return str(root)


def write_random_candidate_model(root: Path, prepared: str, seed: int, covisit=None) -> str:
    """A seeded random CandidateModel published as a real model directory (with the prepared vocab);
    ``covisit``: a :class:`~ytspark.models.covisit.CoVisitation` (weight > 0) to fuse with it."""
    import torch

    from ytspark import schema as S
    from ytspark.models.candidate import CandidateConfig, CandidateModel
    from ytspark.models.export import write_model_dir

    vocab = {n: json.loads(Path(prepared, "vocab", f"{n}.json").read_text()) for n in S.VOCAB_NAMES}
    size = {n: len(v["values"]) + 2 for n, v in vocab.items()}
    quant = json.loads(Path(prepared, "quantiles.json").read_text())["candidates"]
    demo = tuple(len(S.AGE_BUCKETS) + 2 if c == "age_bucket_idx" else size[c.removesuffix("_idx")]
                 for c in S.DEMOGRAPHIC_COLUMNS)
    cfg = CandidateConfig(n_videos=size["video"], n_tokens=size["token"], demographic_vocab_sizes=demo,
                          embed_dim=8, hidden=(16,), recency="last_k", recent_k=3)
    torch.manual_seed(seed)
    model = CandidateModel(cfg, quant)
    with torch.no_grad():
        model.out_bias.normal_(0.0, 0.5)  # a real bias, so the folded column matters
    meta = {"model_config": cfg.to_dict(), "vocab_sizes": size}
    arrays = {"video_embeddings": model.video_embeddings().numpy(), "video_bias": model.video_biases().numpy()}
    if covisit is not None:
        meta["covisit"] = covisit.meta()
        arrays.update(covisit.arrays())
    out = write_model_dir(root, "candidate", state_dict=model.state_dict(), meta=meta, arrays=arrays,
                          json_files={**{f"vocab/{n}.json": v for n, v in vocab.items()}, "quantiles.json": quant},
                          version=f"cand-{seed}" + ("-covisit" if covisit is not None else ""))
    return str(out)

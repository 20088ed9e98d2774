"""The factorised serving path of the ranking network equals the unfactorised one (pure PyTorch, no Spark)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ytspark import schema as S
from ytspark.models.blend import ServingOrder
from ytspark.models.rank_features import rank_batch_from_numpy
from ytspark.models.ranker import RankerConfig, RankerModel
from ytspark.schema import DAY
from ytspark.score import rank as R
from ytspark.score.rank import Csr, TorchRanker, UserBlock, VideoMeta

torch.set_num_threads(1)

SIZES = dict(n_videos=100, n_languages=6, n_channels=10, n_categories=6, n_sources=6)
AS_OF = 1_700_000_000.0
SOURCE = 3
ATOL = RTOL = 1e-4  # on logits (float32: the split only reorders a sum of products)

CONFIGS = {
    "full": {},
    "no_hidden": dict(hidden=()),
    "no_affinity_no_language": dict(use_affinity=False, use_language=False),
    "no_video_id": dict(use_video=False, use_affinity=False),
    "user_side_only": dict(use_video=False, use_affinity=False, use_language=False, use_channel=False,
                           use_category=False, use_video_age=False, use_source=False),
    "video_only": dict(use_watches=False, use_affinity=False, use_language=False, use_channel=False,
                       use_category=False, use_recency=False, use_video_age=False, use_source=False),
    "no_source_age_channel": dict(use_source=False, use_video_age=False, use_channel=False),
    "no_recency_category_dropout": dict(use_recency=False, use_category=False, hidden=(12,), dropout=0.2),
}


def quantiles(rng: np.random.Generator) -> dict[str, list[float]]:
    ranges = {"since_last_watch_days": (-1, 30), "n_prev_impressions": (0, 4), "since_impression_days": (-1, 30),
              "prev_impression_clicked": (0, 1), "channel_watches": (0, 6),
              "since_channel_watch_days": (-1, 60), "category_watches": (0, 8),
              "since_category_watch_days": (-1, 60), "video_age_days": (0, 400), "retrieval_score": (-4, 4)}
    return {f: np.unique(np.round(rng.uniform(lo, hi, 15), 3)).tolist() for f, (lo, hi) in ranges.items()}


def make_model(seed: int, **kw) -> RankerModel:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = RankerConfig(**SIZES, **{"embed_dim": 8, "hidden": (24, 16), **kw})
    model = RankerModel(cfg, quantiles(rng))
    with torch.no_grad():  # first-layer bias and weights large enough that every input group moves the logit
        for p in model.tower.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def make_world(seed: int, B: int = 13, K: int = 9, H: int = 6):
    """Seeded users (some languages pad/OOV, empty histories, affinity rows), video metadata and candidates."""
    rng = np.random.default_rng(seed)
    V = SIZES["n_videos"]
    hist = np.zeros((B, H), np.int64)
    for b in range(B):
        n = int(rng.integers(0, H + 1))
        hist[b, :n] = rng.integers(1, V, n)  # 1 = OOV watch: counted in the mean as a zero vector
    aff = {}
    for g, n_ids in (("channel", SIZES["n_channels"]), ("category", SIZES["n_categories"])):
        rows = [np.sort(rng.choice(np.arange(2, n_ids), int(rng.integers(0, 4)), replace=False)) for _ in range(B)]
        lengths = np.array([len(r) for r in rows])
        ids = np.concatenate(rows).astype(np.int64)
        aff[g] = Csr(np.concatenate([[0], np.cumsum(lengths)]), ids,
                     rng.integers(1, 7, len(ids)).astype(np.float32), rng.uniform(0, 50, len(ids)).astype(np.float32))
    cand = rng.integers(2, V, (B, K)).astype(np.int64)
    # videos shown before the cut-off: some of each user's candidates (the lookups hit) and others
    shown = [np.unique(np.concatenate([rng.choice(cand[b], int(rng.integers(0, 4))), rng.integers(2, V, 2)]))
             for b in range(B)]
    lengths = np.array([len(r) for r in shown])
    n_shown = int(lengths.sum())
    imp = Csr(np.concatenate([[0], np.cumsum(lengths)]), np.concatenate(shown).astype(np.int64),
              rng.integers(1, 5, n_shown).astype(np.float32), rng.uniform(0, 20, n_shown).astype(np.float32),
              (rng.random(n_shown) < 0.4).astype(np.float32))
    users = UserBlock(hist, rng.integers(0, 6, B).astype(np.int64),
                      np.where(rng.random(B) < 0.2, -1.0, rng.uniform(0, 30, B)).astype(np.float32), aff,
                      impressions=imp)
    upload = AS_OF - rng.uniform(-20, 400, V) * DAY  # some uploads after the cut-off: age 0
    upload[rng.random(V) < 0.15] = np.nan
    meta = VideoMeta(rng.integers(1, 6, V).astype(np.int64), rng.integers(1, SIZES["n_channels"], V).astype(np.int64),
                     rng.integers(1, SIZES["n_categories"], V).astype(np.int64), upload)
    cand[rng.random((B, K)) < 0.1] = -1
    cand[0, -1], cand[1, -2] = 0, 1
    retrieval = rng.normal(0, 2, (B, K)).astype(np.float32)
    return users, meta, cand, retrieval


def assert_logits_close(fast: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(fast, ref, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- the model-level split

@pytest.mark.parametrize("name", list(CONFIGS))
def test_factorised_first_layer_equals_forward_on_training_rows(name):
    """Rows with per-row source, n_prev_impressions and video age: the generic split (nothing folded)."""
    model = make_model(1, **CONFIGS[name])
    users, meta, cand, retrieval = make_world(2)
    feats = TorchRanker(None, meta, AS_OF, SOURCE).features(users, cand, retrieval)
    rng = np.random.default_rng(5)
    feats[S.RANK_SOURCE] = rng.integers(0, SIZES["n_sources"], len(feats[S.RANK_VIDEO]))
    feats["n_prev_impressions"] = rng.integers(0, 5, len(feats[S.RANK_VIDEO])).astype(np.float32)
    batch = rank_batch_from_numpy(feats, serving=True)
    with torch.no_grad():
        ref = model(batch).numpy()
        fast = model.factorised()(batch).numpy()
    assert ref.std() > 0.1  # the logits do vary over the pairs
    assert_logits_close(fast, ref)


def test_factorised_layout_and_multiply_adds():
    model = make_model(1, hidden=(16, 4))
    names = [n for n, _ in model.input_layout()]
    assert names == ["video", "watches", "affinity", "user_language", "video_language", "same_language", "channel",
                     "category", "source", *S.RANK_CONTINUOUS]
    f = model.factorised(("video_age_days",), {"n_prev_impressions": 0.0}, SOURCE)
    assert f.segments["user"] == ["watches", "user_language", "since_last_watch_days"]
    assert f.segments["video"] == ["video", "video_language", "channel", "category", "video_age_days"]
    assert f.pair_names == ("affinity", "same_language", "since_impression_days", "prev_impression_clicked",
                            "channel_watches", "since_channel_watch_days", "category_watches",
                            "since_category_watch_days", "retrieval_score")
    assert f.pair_width == 23
    # input width: 8 + 8 + 1 + (6 + 6 + 1) language + 7 channel + 6 category + 6 source + 10 x 3
    assert model.input_width == 8 + 8 + 1 + 13 + 7 + 6 + 6 + 30 == 79
    rest = 16 * 4 + 4 * 1
    assert f.macs_per_pair() == {"factorised": 23 * 16 + 2 * 16 + 8 + rest, "full": 79 * 16 + rest, "rest": rest}
    serving = model.factorised(("video_age_days",), {}, SOURCE)  # as scoring builds it: impressions per pair
    assert serving.pair_names[2:5] == ("n_prev_impressions", "since_impression_days", "prev_impression_clicked")


# ---------------------------------------------------------------- TorchRanker.score: fast == reference

@pytest.mark.parametrize("name", list(CONFIGS))
def test_serving_score_fast_equals_reference_and_orders_alike(name):
    model = make_model(3, **CONFIGS[name])
    users, meta, cand, retrieval = make_world(4)
    ranker = TorchRanker(model, meta, AS_OF, SOURCE, order=ServingOrder("blend", 0.7))
    fast = ranker.score(users, cand, retrieval)
    ref = ranker.score_reference(users, cand, retrieval)
    assert fast.dtype == np.float32 and fast.shape == cand.shape
    none = cand < 2
    assert np.isneginf(fast[none]).all() and np.isneginf(ref[none]).all()
    assert np.isfinite(fast[~none]).all() and (fast[~none] > 0).all()
    lf, lr = np.log(fast[~none]), np.log(ref[~none])
    assert lr.std() > 0.1
    assert_logits_close(lf, lr)
    kf, kr = ranker.order_key(fast, retrieval), ranker.order_key(ref, retrieval)
    np.testing.assert_array_equal(np.argsort(-kf, axis=1, kind="stable"), np.argsort(-kr, axis=1, kind="stable"))


@pytest.mark.parametrize("dense", [True, False])
def test_csr_find_block_equals_find(monkeypatch, dense):
    """The per-block lookup (a dense position table, or the binary search past DENSE_FIND_CELLS) finds the same
    entries as Csr.find, misses included."""
    monkeypatch.setattr(R, "DENSE_FIND_CELLS", 1 << 20 if dense else 0)
    users, meta, cand, _ = make_world(21, B=17, K=11)
    for g in ("channel", "category"):
        csr = users.affinity[g]
        ids = getattr(meta, g)[np.where(cand >= 2, cand, 0)]
        pos, found = csr.find_block(ids)
        want_pos, want_found = csr.find(np.repeat(np.arange(len(ids), dtype=np.int64), ids.shape[1]), ids.reshape(-1))
        assert found.any() and not found.all()
        np.testing.assert_array_equal(found, want_found)
        np.testing.assert_array_equal(pos[found], want_pos[want_found])
        np.testing.assert_array_equal(csr.ids[pos[found]], ids.reshape(-1)[found])


def test_per_user_cut_off_moves_video_age_to_the_pair_side():
    model = make_model(6)
    users, meta, cand, retrieval = make_world(7)
    rng = np.random.default_rng(8)
    users.as_of = AS_OF - rng.uniform(0, 300, len(users.language_idx)) * DAY
    ranker = TorchRanker(model, meta, 0.0, SOURCE)  # evaluation: the run date is unused
    fast = ranker.score(users, cand, retrieval)
    ref = ranker.score_reference(users, cand, retrieval)
    ok = cand >= 2
    assert_logits_close(np.log(fast[ok]), np.log(ref[ok]))
    assert "video_age_days" in ranker._tables(False).fact.pair_names
    run_date = TorchRanker(model, meta, AS_OF, SOURCE).score(UserBlock(users.watch_hist, users.language_idx,
                                                                       users.since_last_watch_days, users.affinity),
                                                             cand, retrieval)
    assert np.abs(np.log(run_date[ok]) - np.log(fast[ok])).max() > 1e-2  # the per-user cut-offs are used


def test_fast_path_in_many_chunks_and_without_affinity_rows(monkeypatch):
    model = make_model(9)
    users, meta, cand, retrieval = make_world(10, B=11, K=7)
    ranker = TorchRanker(model, meta, AS_OF, SOURCE)
    whole = ranker.score(users, cand, retrieval)
    monkeypatch.setattr(R, "RANK_CHUNK_ROWS", 15)  # 2 users per chunk: 6 chunks, the last one short
    chunked = ranker.score(users, cand, retrieval)
    ok = cand >= 2
    assert_logits_close(np.log(chunked[ok]), np.log(whole[ok]))
    assert_logits_close(np.log(chunked[ok]), np.log(ranker.score_reference(users, cand, retrieval)[ok]))
    bare = UserBlock(users.watch_hist, users.language_idx, users.since_last_watch_days, {})
    f, r = ranker.score(bare, cand, retrieval), ranker.score_reference(bare, cand, retrieval)
    assert_logits_close(np.log(f[ok]), np.log(r[ok]))
    assert np.abs(np.log(f[ok]) - np.log(whole[ok])).max() > 1e-2  # the affinity rows did count


def test_video_tables_are_cached_and_rebuilt_when_the_weights_change():
    model = make_model(11)
    users, meta, cand, retrieval = make_world(12)
    first = TorchRanker(model, meta, AS_OF, SOURCE)
    before = first.score(users, cand, retrieval)
    tables = first._tables(True)
    again = TorchRanker(model, meta, AS_OF, SOURCE)  # a new task's ranker on the same worker's model
    assert again._tables(True) is tables
    with torch.no_grad():
        model.video_emb.weight.mul_(1.5)
        model.tower[0].weight.add_(0.05)
    assert again._tables(True) is not tables
    after = again.score(users, cand, retrieval)
    ok = cand >= 2
    assert np.abs(np.log(after[ok]) - np.log(before[ok])).max() > 1e-2
    assert_logits_close(np.log(after[ok]), np.log(again.score_reference(users, cand, retrieval)[ok]))


def test_user_block_take_keeps_each_users_affinity_rows():
    users, *_ = make_world(13, B=6)
    rows = np.array([4, 0, 4, 2])
    sub = users.take(rows)
    for g, c in users.affinity.items():
        s = sub.affinity[g]
        for i, r in enumerate(rows):
            lo, hi = c.offsets[r], c.offsets[r + 1]
            np.testing.assert_array_equal(s.ids[s.offsets[i]:s.offsets[i + 1]], c.ids[lo:hi])
            np.testing.assert_array_equal(s.counts[s.offsets[i]:s.offsets[i + 1]], c.counts[lo:hi])
            np.testing.assert_array_equal(s.since[s.offsets[i]:s.offsets[i + 1]], c.since[lo:hi])
        t = c.slice_rows(2, 5)
        np.testing.assert_array_equal(t.ids, c.ids[c.offsets[2]:c.offsets[5]])
        assert t.offsets[0] == 0 and len(t.offsets) == 4
    np.testing.assert_array_equal(sub.watch_hist, users.watch_hist[rows])


def test_impression_features_are_the_users_own_shown_videos():
    """Each (user, candidate) pair reads that user's entry for that video, "never shown" (0, -1, 0) without one."""
    users, meta, cand, retrieval = make_world(3)
    feats = TorchRanker(None, meta, AS_OF, SOURCE).features(users, cand, retrieval)
    imp = users.impressions
    B, K = cand.shape
    hits = 0
    for b in range(B):
        own = {int(v): i for i, v in enumerate(imp.ids[imp.offsets[b]:imp.offsets[b + 1]], int(imp.offsets[b]))}
        for k in range(K):
            i, v = b * K + k, int(cand[b, k])
            want = (imp.counts[own[v]], imp.since[own[v]], imp.flag[own[v]]) if v in own else (0.0, -1.0, 0.0)
            got = (feats["n_prev_impressions"][i], feats["since_impression_days"][i],
                   feats["prev_impression_clicked"][i])
            assert got == pytest.approx(want), (b, k)
            hits += v in own
    assert hits >= 5  # some pairs were shown before
    # taking users in another order keeps each user's own impressions
    rows = np.arange(B)[::-1]
    again = TorchRanker(None, meta, AS_OF, SOURCE).features(users.take(rows), cand[rows], retrieval[rows])
    np.testing.assert_array_equal(again["n_prev_impressions"].reshape(B, K), feats["n_prev_impressions"].reshape(B, K)[rows])

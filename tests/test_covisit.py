"""The co-visitation source (ytspark.models.covisit): the table, the user scores, the exact fused top K, the weight."""
from __future__ import annotations

import numpy as np
import pytest

from ytspark.models.covisit import CoVisitation, build_covisitation, check_params, choose_weight, dense_topk, merge_topk
from ytspark.score import index as ix


def _brute_table(hist, labels, V, window):
    C = np.zeros((V, V))
    for h, y in zip(hist, labels):
        for p in range(min(window, len(h))):
            if h[p] >= 2 and h[p] != y:
                C[h[p], y] += 1.0 / (p + 1)
    return C


def _dense_table(cv: CoVisitation) -> np.ndarray:
    C = np.zeros((cv.n_videos, cv.n_videos))
    for i in range(cv.n_videos):
        sl = slice(cv.indptr[i], cv.indptr[i + 1])
        C[i, cv.indices[sl]] = cv.values[sl]
    return C


def _brute_scores(C, hist, recent_k, decay, weight):
    out = np.zeros((len(hist), C.shape[0]))
    for b, h in enumerate(hist):
        for p in range(recent_k):
            if h[p] >= 2:
                out[b] += decay ** p * C[h[p]]
    return weight * np.log1p(out)


def test_hand_built_log_gives_the_known_table():
    # videos 2..5; rows: history most recent first (0 = pad), label
    hist = np.array([[2, 3, 0], [2, 4, 3], [3, 2, 0], [5, 5, 5]])
    labels = np.array([4, 5, 4, 5])
    cv = build_covisitation(hist, labels, 6, window=2, top_m=10)
    C = _dense_table(cv)
    want = np.zeros((6, 6))
    want[2, 4] = 1.0 + 0.5  # row 0 (p=0) and row 2 (p=1)
    want[3, 4] = 0.5 + 1.0  # row 0 (p=1) and row 2 (p=0)
    want[2, 5] = 1.0        # row 1 p=0
    want[4, 5] = 0.5        # row 1 p=1; p=2 (video 3) is outside the window
    # row 3: 5 -> 5 is a self pair, left out
    np.testing.assert_allclose(C, want)
    assert cv.weight == 0.0 and cv.dense(hist).sum() == 0.0  # weight 0: no effect until one is chosen


def test_table_keeps_the_top_m_neighbours_of_each_video():
    rng = np.random.default_rng(0)
    V = 30
    hist, labels = rng.integers(0, V, (500, 8)), rng.integers(2, V, 500)
    full = _brute_table(hist, labels, V, 4)
    cv = build_covisitation(hist, labels, V, window=4, top_m=5)
    for i in range(V):
        row = full[i]
        best = sorted(np.flatnonzero(row), key=lambda j: (-row[j], j))[:5]
        got = cv.indices[cv.indptr[i]:cv.indptr[i + 1]]
        assert list(got) == best, i  # largest first, ties by id
        np.testing.assert_allclose(cv.values[cv.indptr[i]:cv.indptr[i + 1]], row[best], rtol=1e-6)


def test_user_scores_dense_sparse_and_pairs_agree_with_brute_force():
    rng = np.random.default_rng(1)
    V = 40
    cv = build_covisitation(rng.integers(0, V, (800, 10)), rng.integers(2, V, 800), V, window=6, top_m=8,
                            recent_k=4, decay=0.6).with_weight(1.7)
    q = rng.integers(0, V, (9, 10))
    q[3] = 0  # a user with no history scores 0 everywhere
    ref = _brute_scores(_dense_table(cv), q, 4, 0.6, 1.7)
    np.testing.assert_allclose(cv.dense(q), ref, rtol=1e-5, atol=1e-6)
    vid = rng.integers(2, V, 9)
    np.testing.assert_allclose(cv.pairs(q, vid), ref[np.arange(9), vid], rtol=1e-5, atol=1e-6)
    # pairs of shared history rows (row[i]): every video of every row, what dense() sums (to float rounding)
    row = np.repeat(np.arange(9), V)
    every = np.tile(np.arange(V), 9)
    np.testing.assert_allclose(cv.pairs(q, every, row), cv.dense(q)[row, every], rtol=1e-6, atol=0)
    assert (cv.dense(q) > 0).sum() > 50
    r, v, s = cv.sparse(q)
    assert (np.diff(r * V + v) > 0).all() and 3 not in r
    np.testing.assert_allclose(1.7 * s, ref[r, v], rtol=1e-5)


def _retrieval_world(seed: int, weight: float, repeat_recent: bool = False):
    """A seeded catalogue (300 videos, 9 dims, ids 0/1 zero), 40 users with 12 recent watches, a co-visitation
    table of 5000 random rows with ``weight``, and each user's seen videos (history + 20 more): CSR and lists."""
    rng = np.random.default_rng(seed)
    V, D, B = 300, 9, 40
    table = rng.normal(size=(V, D)).astype(np.float32)
    table[:2] = 0
    user = rng.normal(size=(B, D)).astype(np.float32)
    hist = rng.integers(2, V, (B, 12))
    if repeat_recent:
        hist[:, 1] = hist[:, 0]  # repeated recent watches: their contributions add up
    cv = build_covisitation(rng.integers(2, V, (5000, 12)), rng.integers(2, V, 5000), V, window=5, top_m=30,
                            recent_k=5, decay=0.7).with_weight(weight)
    seen_lists = [np.unique(np.r_[h, rng.integers(2, V, 20)]) for h in hist]
    off = np.r_[0, np.cumsum([len(x) for x in seen_lists])].astype(np.int64)
    seen = (off, np.concatenate(seen_lists).astype(np.int64))
    return table, user, hist, cv, seen_lists, seen


def _brute_fused(user, table, hist, cv, seen_lists) -> np.ndarray:
    """Exact fused scores u·v + co-visitation term [B, V], -inf for ids 0/1 and each user's seen videos."""
    full = user.astype(np.float64) @ table.T.astype(np.float64) + cv.dense(hist)
    full[:, :2] = -np.inf
    for b, seen_b in enumerate(seen_lists):
        full[b, seen_b] = -np.inf
    return full


@pytest.mark.parametrize("depth", [None, 4])  # the whole K, or the top N of a list without a ranker
@pytest.mark.parametrize("gather_cells", [0, 10 ** 9])  # neighbour logits by gathered pairs / by dense blocks
def test_fused_retrieval_is_the_exact_top_k_over_the_catalogue(monkeypatch, gather_cells, depth):
    import ytspark.models.covisit as covisit

    monkeypatch.setattr(covisit, "GATHER_CELLS", gather_cells)
    monkeypatch.setattr(covisit, "DENSE_BLOCK", 300 * 7)  # several row blocks of the dense path
    monkeypatch.setattr(covisit, "GATHER_CHUNK", 1000)  # several chunks of the gathered path
    B, K = 40, 15
    table, user, hist, cv, seen_lists, seen = _retrieval_world(2, 3.0)
    index = ix.build_index(table, "flat")
    ret, cand = ix.search(index, user, K, seen)
    fs, fi = merge_topk(ret, cand, user, table, hist, seen, cv, depth)
    D_ = depth or K
    assert fs.shape == fi.shape == (B, D_)
    full = _brute_fused(user, table, hist, cv, seen_lists)
    changed = 0
    for b in range(B):
        want = np.argsort(-full[b], kind="stable")[:D_]
        np.testing.assert_allclose(fs[b], full[b, fi[b]], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.sort(fs[b])[::-1], full[b, want], rtol=1e-4, atol=1e-4)
        assert not set(fi[b]) & set(seen_lists[b])
        changed += set(fi[b]) != set(cand[b, :D_])
    assert changed > B // 2  # the co-visitation term moves most lists: the check is not vacuous
    # weight 0: the network's lists unchanged
    s0, i0 = merge_topk(ret, cand, user, table, hist, seen, cv.with_weight(0.0))
    np.testing.assert_array_equal(i0, cand)


def test_fused_retrieval_pads_when_too_few_videos_remain():
    V, K = 6, 5
    table = np.eye(V, 3, dtype=np.float32)
    table[:2] = 0
    cv = build_covisitation(np.array([[2, 0], [3, 0]]), np.array([4, 5]), V, window=1).with_weight(1.0)
    seen = (np.array([0, 2]), np.array([2, 3]))
    ret, cand = ix.search(ix.build_index(table, "flat"), np.ones((1, 3), np.float32), K, seen)
    s, i = merge_topk(ret, cand, np.ones((1, 3), np.float32), table, np.array([[2, 3]]), seen, cv)
    assert sorted(i[0][i[0] >= 0]) == [4, 5] and (i[0][2:] == -1).all() and np.isneginf(s[0][2:]).all()


@pytest.mark.parametrize("gemm", ["torch", "numpy"])
@pytest.mark.parametrize("weight", [0.0, 3.0])
def test_dense_retrieval_is_the_exact_fused_top_k_and_equals_the_merge(monkeypatch, weight, gemm):
    """The flat kind's dense pass: brute-force fused top K (seen and ids 0/1 excluded), over several row blocks
    (a video reached from two recent watches counts twice), and the same lists as FAISS + merge_topk."""
    import ytspark.models.covisit as covisit

    monkeypatch.setattr(covisit, "DENSE_TOPK_CELLS", 300 * 7)  # 7 users per block: several blocks
    B, K = 40, 15
    table, user, hist, cv, seen_lists, seen = _retrieval_world(4, weight, repeat_recent=True)
    s, i = dense_topk(user, table, K, seen, hist, cv, gemm=gemm)
    full = _brute_fused(user, table, hist, cv, seen_lists)
    for b in range(B):
        want = np.argsort(-full[b], kind="stable")[:K]
        np.testing.assert_allclose(s[b], full[b, want], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(s[b], full[b, i[b]], rtol=1e-4, atol=1e-4)
        assert len(set(i[b])) == K and not set(i[b]) & set(seen_lists[b]) and i[b].min() >= 2
    ret, cand = ix.search(ix.build_index(table, "flat"), user, K, seen)
    ms, mi = merge_topk(ret, cand, user, table, hist, seen, cv)
    np.testing.assert_allclose(s, ms, rtol=1e-5, atol=1e-5)
    assert (np.sort(i, axis=1) == np.sort(mi, axis=1)).mean() > 0.99  # the same lists (ties aside)
    if weight:
        assert (np.sort(i, axis=1) != np.sort(cand, axis=1)).any(axis=1).sum() > B // 2  # the term moved lists


def test_dense_gemm_library_follows_the_cpu_and_the_override(monkeypatch):
    import ytspark.models.covisit as covisit

    monkeypatch.delenv("YTSPARK_DENSE_GEMM", raising=False)
    monkeypatch.setattr(covisit, "_cpu_vendor", lambda: "GenuineIntel")
    assert covisit.dense_gemm_library() == "torch"
    monkeypatch.setattr(covisit, "_cpu_vendor", lambda: "AuthenticAMD")
    assert covisit.dense_gemm_library() == "numpy"
    monkeypatch.setenv("YTSPARK_DENSE_GEMM", "torch")
    assert covisit.dense_gemm_library() == "torch"
    with pytest.raises(ValueError, match="gemm 'blas'"):
        dense_topk(np.ones((1, 3), np.float32), np.ones((5, 3), np.float32), 2, (np.array([0, 0]), np.zeros(0)),
                   gemm="blas")


def test_dense_retrieval_pads_when_too_few_videos_remain():
    V, K = 6, 5
    table = np.eye(V, 3, dtype=np.float32)
    table[:2] = 0
    cv = build_covisitation(np.array([[2, 0], [3, 0]]), np.array([4, 5]), V, window=1).with_weight(1.0)
    seen = (np.array([0, 2, 2]), np.array([2, 3]))
    s, i = dense_topk(np.ones((2, 3), np.float32), table, K, seen, np.array([[2, 3], [0, 0]]), cv)
    assert sorted(i[0][i[0] >= 0]) == [4, 5] and (i[0][2:] == -1).all() and np.isneginf(s[0][2:]).all()
    assert sorted(i[1][i[1] >= 0]) == [2, 3, 4, 5] and i[1][4] == -1  # nothing seen: all four videos


def test_weight_is_chosen_on_held_out_rows_and_zero_when_the_table_does_not_help():
    rng = np.random.default_rng(3)
    V, n = 60, 400
    nxt = rng.permutation(np.arange(2, V))  # the next watch is a fixed function of the last one

    def rows(m):
        h = rng.integers(2, V, (m, 6))
        return h, nxt[h[:, 0] - 2]

    th, ty = rows(3000)
    vh, vy = rows(n)
    noise = rng.normal(size=(n, V)).astype(np.float32)
    good = build_covisitation(th, ty, V, window=1, top_m=5)
    w, table = choose_weight(good, lambda a, b: noise[a:b], vh, vy, [0.5, 2.0], k=5, chunk=128)
    assert w == 2.0 and table[w] > 0.85 and table[0.0] < 0.3, table  # misses: the label also in the history
    # a table of shuffled labels cannot beat a network that already knows the answer
    perfect = noise.copy()
    perfect[np.arange(n), vy] += 5.0
    bad = build_covisitation(th, rng.permutation(ty), V, window=1, top_m=5)
    w, table = choose_weight(bad, lambda a, b: perfect[a:b], vh, vy, [0.5, 8.0], k=5)
    assert w == 0.0 and table[0.0] >= table[0.5] and table[0.0] > table[8.0] + 0.2, table


@pytest.mark.parametrize("kw, key", [({"window": 0}, "covisit_window"), ({"top_m": 0}, "covisit_top_m"),
                                     ({"recent_k": 0}, "covisit_recent_k"), ({"decay": 0.0}, "covisit_decay"),
                                     ({"decay": 1.5}, "covisit_decay"), ({"weights": [1.0, -2.0]}, "covisit_weights"),
                                     ({"weights": [float("nan")]}, "covisit_weights")])
def test_bad_settings_name_the_config_key(kw, key):
    args = {"window": 10, "top_m": 200, "recent_k": 5, "decay": 0.7, "weights": [1.0], **kw}
    with pytest.raises(ValueError, match=f"candidate.{key}"):
        check_params(**args)


@pytest.mark.parametrize("case", ["skewed", "ties", "few_finite", "spiky", "tight"])
def test_row_topk_equals_torch_topk(monkeypatch, case):
    """The filtered top k equals the plain one (values exactly; indices up to ties) on score blocks shaped
    like retrieval's, including rows whose cut fails (too few finite scores, a cut that lets too many pass)
    and so take the plain path."""
    import torch

    import ytspark.models.covisit as covisit

    rng = np.random.default_rng({"skewed": 0, "ties": 1, "few_finite": 2, "spiky": 3, "tight": 4}[case])
    n, V, k = 37, 20_000, 200
    S = rng.normal(size=(n, V)).astype(np.float32) - np.log1p(np.arange(V, dtype=np.float32)) * 0.3
    if case == "ties":
        S = np.round(S, 1)  # many equal values around the k-th
    if case == "few_finite":
        S[::3, 150:] = -np.inf  # every third row: fewer than k finite scores past the sample
        S[1, :] = -np.inf
    if case == "spiky":
        S[:, rng.integers(0, V, 500)] += 6.0  # co-visitation-like spikes the strided sample mostly misses
        monkeypatch.setattr(covisit, "TOPK_CAP", 1.2)  # and a cap that some rows overflow
    if case == "tight":
        S[::2, ::covisit.TOPK_STRIDE] += 5.0  # the sampled columns of every other row stand out: fewer than k
    S[:, :2] = -np.inf
    t = torch.from_numpy(S)
    want_v, want_i = torch.topk(t, k, dim=1)
    got_v, got_i = covisit.row_topk(t, k)
    np.testing.assert_array_equal(got_v.numpy(), want_v.numpy())
    # the indices hold those values (so they are a valid top k even where ties pick others)
    np.testing.assert_array_equal(np.take_along_axis(S, got_i.numpy(), axis=1), want_v.numpy())
    fin = np.isfinite(want_v.numpy())
    for r in range(n):
        assert len(set(got_i[r].numpy()[fin[r]])) == fin[r].sum()  # no index twice
    if case == "skewed":
        np.testing.assert_array_equal(got_i.numpy(), want_i.numpy())

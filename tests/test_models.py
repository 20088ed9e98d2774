"""Candidate model, losses, metrics and feature tensors (pure PyTorch, no Spark)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ytspark import schema as S
from ytspark.models.candidate import CandidateConfig, CandidateModel, masked_mean
from ytspark.models.features import QuantileNormalizer, batch_from_numpy
from ytspark.models.losses import UnigramSampler, full_softmax_loss, sampled_softmax_loss
from ytspark.models.metrics import hit_rate_ndcg
from ytspark.prepare.quantiles import cdf

torch.set_num_threads(1)

DEMO_SIZES = (4, 10, 6, 5, 9)
QUANTILES = {
    S.USER_AGE: [-1.0, 18.0, 25.0, 35.0, 50.0, 80.0],
    S.CAND_EXAMPLE_AGE: [0.0, 1.0, 5.0, 20.0, 60.0],
    S.CAND_SINCE_LAST: [-1.0, 0.01, 0.5, 2.0, 10.0],
    S.CAND_N_WATCHES: [0.0, 3.0, 10.0, 50.0],
}


def make_rows(rng: np.random.Generator, B: int, H: int, n_videos: int, n_tokens: int = 50,
              fill: int | None = None) -> dict[str, np.ndarray]:
    """B candidate rows; each history has ``fill`` (default random) real ids first, then pads."""
    watch = np.zeros((B, H), np.int32)
    ages = np.zeros((B, H), np.float32)
    search = np.zeros((B, H), np.int32)
    for b in range(B):
        n = fill if fill is not None else int(rng.integers(1, H + 1))
        watch[b, :n] = rng.integers(2, n_videos, n)
        ages[b, :n] = np.sort(rng.exponential(3.0, n)).astype(np.float32)
        m = int(rng.integers(0, H + 1))
        search[b, :m] = rng.integers(2, n_tokens, m)
    d = {
        S.CAND_WATCH_HIST: watch, S.CAND_WATCH_AGE: ages, S.CAND_SEARCH_HIST: search,
        S.CAND_LABEL: rng.integers(2, n_videos, B).astype(np.int32),
        S.CAND_N_WATCHES: rng.integers(0, 40, B).astype(np.int32),
        S.CAND_SINCE_LAST: rng.exponential(1.0, B).astype(np.float32),
        S.CAND_EXAMPLE_AGE: rng.uniform(0, 60, B).astype(np.float32),
        S.USER_AGE: rng.uniform(15, 70, B).astype(np.float32),
    }
    for c, v in zip(S.DEMOGRAPHIC_COLUMNS, DEMO_SIZES):
        d[c] = rng.integers(1, v, B).astype(np.int32)
    return d


def small_config(**kw) -> CandidateConfig:
    base = dict(n_videos=30, n_tokens=50, demographic_vocab_sizes=DEMO_SIZES, embed_dim=8, hidden=(16,))
    return CandidateConfig(**{**base, **kw})


# ---------------------------------------------------------------- features


def test_batch_from_numpy_accepts_2d_and_object_arrays():
    d = make_rows(np.random.default_rng(0), 6, 5, 30)
    a = batch_from_numpy(d)
    obj = dict(d)
    for c in (S.CAND_WATCH_HIST, S.CAND_WATCH_AGE, S.CAND_SEARCH_HIST):
        o = np.empty(len(d[c]), dtype=object)
        o[:] = list(d[c])
        obj[c] = o
    b = batch_from_numpy(obj)
    for name in ("watch_hist", "watch_hist_age", "search_hist", "demographics", "user_age", "label"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.watch_hist.dtype == torch.int64 and a.watch_hist.shape == (6, 5)
    assert a.watch_hist_age.dtype == torch.float32 and a.label.dtype == torch.int64
    assert a.demographics.shape == (6, 5)
    assert torch.equal(a.demographics[:, 4], torch.as_tensor(d["age_bucket_idx"], dtype=torch.int64))
    served = batch_from_numpy({k: v for k, v in d.items() if k not in (S.CAND_LABEL, S.CAND_EXAMPLE_AGE)},
                              serving=True)
    assert served.label is None and torch.all(served.example_age_days == 0)
    with pytest.raises(KeyError, match=S.CAND_EXAMPLE_AGE):
        batch_from_numpy({k: v for k, v in d.items() if k != S.CAND_EXAMPLE_AGE})


def test_quantile_normalizer_matches_numpy_interp():
    rng = np.random.default_rng(1)
    b = np.sort(rng.choice(np.linspace(-5, 100, 2000), 17, replace=False))
    x = np.concatenate([rng.uniform(-20, 120, 500), b, [b[0] - 1e-3, b[-1] + 1e-3]])
    norm = QuantileNormalizer({"f": b.tolist(), "one": [3.0], "none": []})
    got = norm("f", torch.tensor(x, dtype=torch.float64)).numpy()
    want = np.interp(x, b, np.linspace(0, 1, len(b)))
    assert got == pytest.approx(want, abs=1e-6)
    assert got.min() >= 0 and got.max() <= 1
    y = np.array([1.0, 3.0, 9.0])
    assert norm("one", torch.tensor(y)).numpy() == pytest.approx(cdf(y, [3.0]))
    assert norm("none", torch.tensor(y)).numpy() == pytest.approx(cdf(y, []))
    p = norm.powers("f", torch.tensor(x[:10], dtype=torch.float32))
    q = torch.as_tensor(want[:10], dtype=torch.float32)
    assert p.shape == (10, 3)
    assert torch.allclose(p, torch.stack([q, q * q, q.sqrt()], 1), atol=1e-6)
    with pytest.raises(KeyError, match="quantiles.json"):
        norm("missing", torch.zeros(2))


# ---------------------------------------------------------------- model: padding


@pytest.mark.parametrize("recency", ["none", "last_k", "weighted", "attention"])
def test_padding_does_not_change_user_vectors(recency):
    torch.manual_seed(0)
    model = CandidateModel(small_config(recency=recency), QUANTILES).eval()
    d4 = make_rows(np.random.default_rng(2), 5, 4, 30, fill=2)
    d8 = dict(d4)
    for c in (S.CAND_WATCH_HIST, S.CAND_WATCH_AGE, S.CAND_SEARCH_HIST):
        d8[c] = np.concatenate([d4[c], np.zeros_like(d4[c])], axis=1)  # [a, b, 0, 0] -> [a, b, 0, 0, 0, 0, 0, 0]
    with torch.no_grad():
        u4 = model.user_vector(batch_from_numpy(d4))
        u8 = model.user_vector(batch_from_numpy(d8))
        model.video_in.weight[0].normal_()  # the pad rows take part in nothing
        model.token_in.weight[0].normal_()
        u8_pad_changed = model.user_vector(batch_from_numpy(d8))
    assert torch.allclose(u4, u8, atol=1e-6)
    assert torch.allclose(u8, u8_pad_changed, atol=1e-6)
    # the check can fail: a real id in a former pad slot does change u
    d8[S.CAND_WATCH_HIST][:, 3] = 7
    d8[S.CAND_WATCH_AGE][:, 3] = 1.0
    with torch.no_grad():
        assert not torch.allclose(u8, model.user_vector(batch_from_numpy(d8)), atol=1e-4)


def test_linear_skip_starts_from_the_linear_model_and_keeps_padding_out():
    torch.manual_seed(0)
    model = CandidateModel(small_config(recency="last_k", linear_skip=True, hidden=(16, 8)), QUANTILES).eval()
    b = batch_from_numpy(make_rows(np.random.default_rng(3), 6, 4, 30))
    with torch.no_grad():
        x = model.tower_inputs(b)
        assert torch.allclose(model.user_vector(b), x @ model.skip.weight.T, atol=1e-6)  # tower's last layer is 0
        model.tower[-1].weight.normal_()
        assert not torch.allclose(model.user_vector(b), x @ model.skip.weight.T, atol=1e-3)
    assert CandidateModel(small_config(linear_skip=True, hidden=()), QUANTILES).skip is None  # already linear
    assert CandidateConfig.from_dict(small_config(linear_skip=True).to_dict()).linear_skip


def test_attention_history_is_order_aware_and_empty_history_is_finite():
    torch.manual_seed(0)
    model = CandidateModel(small_config(recency="attention"), QUANTILES).eval()
    d = make_rows(np.random.default_rng(4), 6, 5, 30, fill=5)
    swapped = dict(d)
    swapped[S.CAND_WATCH_HIST] = d[S.CAND_WATCH_HIST][:, [1, 0, 2, 3, 4]]  # the same bag, another order
    empty = dict(d)
    empty[S.CAND_WATCH_HIST] = np.zeros_like(d[S.CAND_WATCH_HIST])
    with torch.no_grad():
        u = model.user_vector(batch_from_numpy(d))
        u_swapped = model.user_vector(batch_from_numpy(swapped))
        u_empty = model.user_vector(batch_from_numpy(empty))
        enc = model._attention(torch.as_tensor(empty[S.CAND_WATCH_HIST], dtype=torch.int64))
    assert not torch.allclose(u, u_swapped, atol=1e-4)  # a bag-of-watches mean could not tell these apart
    assert torch.isfinite(u_empty).all() and torch.equal(enc, torch.zeros_like(enc))
    with pytest.raises(ValueError, match="attn_heads"):
        small_config(recency="attention", attn_heads=3)  # 8 is not divisible by 3


def test_all_positions_states_are_causal_and_target_the_next_watch():
    torch.manual_seed(0)
    model = CandidateModel(small_config(recency="attention", seq_head=True), QUANTILES).eval()
    hist = torch.tensor([[5, 9, 7, 3, 0, 0],  # most recent first: 3 -> 7 -> 9 -> 5
                         [4, 0, 0, 0, 0, 0],  # one watch: no transition inside the history
                         [1, 8, 6, 0, 0, 0]])  # 6 -> 8 -> OOV: OOV is never a target
    with torch.no_grad():
        u_seq, nxt = model.sequence_states(hist)
        # newer watches (and a changed newest one) never reach an older slot's state
        changed = hist.clone()
        changed[0, 0], changed[0, 1] = 11, 12
        u_changed, _ = model.sequence_states(changed)
        older_changed = hist.clone()
        older_changed[0, 3] = 13  # the oldest watch feeds every later state
        u_older, _ = model.sequence_states(older_changed)
    assert nxt.tolist() == [5, 9, 7, 8]  # row 0: slots 1, 2, 3 -> slots 0, 1, 2; row 2: slot 2 -> slot 1
    assert u_seq.shape == (4, 8) and torch.isfinite(u_seq).all()
    # states 1 and 2 (slots 2, 3: predicting 9 and 7) see only 7 and 3; state 0 (slot 1) sees 9, now 12
    assert torch.allclose(u_seq[1:3], u_changed[1:3], atol=1e-6)
    assert not torch.allclose(u_seq[0], u_changed[0], atol=1e-4)
    assert not torch.allclose(u_seq[0], u_older[0], atol=1e-4)
    with pytest.raises(ValueError, match="seq_head"):
        small_config(recency="last_k", seq_head=True)


def test_all_positions_loss_adds_the_history_transitions():
    from ytspark.train.candidate_task import SampledSoftmax

    torch.manual_seed(0)
    model = CandidateModel(small_config(recency="attention", seq_head=True), QUANTILES)
    batch = batch_from_numpy(make_rows(np.random.default_rng(5), 16, 6, 30))
    counts = np.ones(30)
    plain = SampledSoftmax(model, UnigramSampler(counts, alpha=1.0, seed=0), num_sampled=1000)(batch)
    both = SampledSoftmax(model, UnigramSampler(counts, alpha=1.0, seed=0), num_sampled=1000, seq_weight=0.5)(batch)
    u_seq, nxt = model.sequence_states(batch.watch_hist)
    aux = full_softmax_loss(u_seq, model.out_emb, model.out_bias, nxt)  # exhaustive sampling = full softmax
    assert len(nxt) > 16
    assert torch.allclose(both, plain + 0.5 * aux, atol=1e-5)


def test_masked_mean_counts_only_real_ids():
    table = torch.nn.Embedding(6, 3)
    ids = torch.tensor([[2, 3, 0, 0], [0, 0, 0, 0], [5, 0, 5, 0]])
    got = masked_mean(table, ids)
    w = table.weight.detach()
    assert torch.allclose(got[0], (w[2] + w[3]) / 2)
    assert torch.equal(got[1], torch.zeros(3))  # all-pad history -> zero vector
    assert torch.allclose(got[2], w[5])


def test_logits_full_and_export_fold_bias():
    torch.manual_seed(0)
    model = CandidateModel(small_config(), QUANTILES)
    with torch.no_grad():
        model.out_bias.normal_()
        u = model.user_vector(batch_from_numpy(make_rows(np.random.default_rng(3), 4, 5, 30)))
        logits = model.logits_full(u)
        folded = model.fold_user(u) @ model.video_embeddings(fold_bias=True).T
    assert logits.shape == (4, 30)
    assert torch.all(torch.isneginf(logits[:, :2]))
    assert torch.allclose(folded[:, 2:], logits[:, 2:], atol=1e-5)
    assert model.video_embeddings().shape == (30, 8) and model.video_embeddings().dtype == torch.float32
    assert torch.allclose(u @ model.video_embeddings().T + model.video_biases(), folded, atol=1e-5)


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="recency"):
        small_config(recency="latest")
    with pytest.raises(ValueError, match="demographic_vocab_sizes"):
        small_config(demographic_vocab_sizes=(3, 3))
    with pytest.raises(ValueError, match="query_gap"):
        small_config(query_gap="tomorrow")
    with pytest.raises(KeyError, match=S.CAND_SINCE_LAST):
        CandidateModel(small_config(recency="last_k"), {k: v for k, v in QUANTILES.items() if k != S.CAND_SINCE_LAST})
    c = small_config(hidden=(), use_searches=False)
    assert CandidateConfig.from_dict(c.to_dict()) == c
    assert isinstance(CandidateModel(c, QUANTILES).tower[0], torch.nn.Linear)  # depth 0: a projection


@pytest.mark.parametrize("encoder", ["bag", "sequence"])
def test_query_vector_asks_for_the_session_continuation_or_the_query_time(encoder):
    """query_gap="session": a query is the user vector at 0 days since the last watch (users without a watch
    keep -1); "as_of": the row's own gap. Both are a function of the gap, so the two differ."""
    extra = dict(attn_layers=1, attn_heads=2, max_history=6) if encoder == "sequence" else {}
    rows = make_rows(np.random.default_rng(5), 6, 6, 30)
    rows[S.CAND_SINCE_LAST] = np.array([3.0, 0.7, 12.0, 0.0, -1.0, 5.0], np.float32)
    rows[S.CAND_WATCH_HIST][4] = S.PAD
    at_zero = dict(rows, **{S.CAND_SINCE_LAST: np.array([0, 0, 0, 0, -1, 0], np.float32)})
    torch.manual_seed(0)
    session = CandidateModel(small_config(recency="last_k", encoder=encoder, **extra), QUANTILES).eval()
    as_of = CandidateModel(small_config(recency="last_k", encoder=encoder, query_gap="as_of", **extra), QUANTILES)
    as_of.load_state_dict(session.state_dict())
    as_of.eval()
    with torch.no_grad():
        q_session = session.query_vector(batch_from_numpy(rows, serving=True))
        q_as_of = as_of.query_vector(batch_from_numpy(rows, serving=True))
        torch.testing.assert_close(q_session, session.user_vector(batch_from_numpy(at_zero, serving=True)))
        torch.testing.assert_close(q_as_of, session.user_vector(batch_from_numpy(rows, serving=True)))
    differs = (q_session - q_as_of).abs().amax(dim=1) > 1e-5
    assert differs[[0, 1, 2, 5]].all() and not differs[[3, 4]].any()


# ---------------------------------------------------------------- losses


class EveryClassOnce:
    """Uniform proposal over classes >= 2 that 'samples' each class exactly once."""

    def __init__(self, n_videos: int):
        self.n = n_videos

    def sample(self, num_sampled: int) -> torch.Tensor:
        return torch.arange(2, self.n)

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.full(ids.shape, -math.log(self.n - 2))


class FixedSampler:
    """Returns the given ids; log Q from a fixed skewed table."""

    def __init__(self, ids, log_q_table: torch.Tensor):
        self.ids = torch.as_tensor(ids, dtype=torch.int64)
        self.table = log_q_table

    def sample(self, num_sampled: int) -> torch.Tensor:
        return self.ids

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


def random_problem(seed: int, B: int = 8, V: int = 40, D: int = 6):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, D, generator=g)
    emb = torch.randn(V, D, generator=g)
    bias = torch.randn(V, generator=g)
    labels = torch.randint(2, V, (B,), generator=g)
    return u, emb, bias, labels


def test_sampled_softmax_equals_full_when_every_class_is_sampled():
    u, emb, bias, labels = random_problem(0)
    V = emb.shape[0]
    full = full_softmax_loss(u, emb, bias, labels)
    # by hand: cross-entropy over classes 2..V-1
    logits = u @ emb.T + bias
    by_hand = (torch.logsumexp(logits[:, 2:], 1) - logits[torch.arange(len(labels)), labels]).mean()
    assert float(full) == pytest.approx(float(by_hand), rel=1e-6)
    # exhaustive num_sampled -> the exact full softmax path
    uniform = UnigramSampler(np.ones(V), alpha=0.75, seed=0)
    assert float(sampled_softmax_loss(u, emb, bias, labels, uniform, V)) == pytest.approx(float(full), rel=1e-6)
    # the sampled path itself, every class drawn once under uniform Q: the log-Q shift cancels
    once = EveryClassOnce(V)
    got = sampled_softmax_loss(u, emb, bias, labels, once, V - 2, exact_when_exhaustive=False)
    assert float(got) == pytest.approx(float(full), rel=1e-5)
    # and it can fail: without removing the label from the negatives, it counts twice
    double = sampled_softmax_loss(u, emb, bias, labels, once, V - 2, exact_when_exhaustive=False,
                                  remove_accidental_hits=False)
    assert float(double) > float(full) + 1e-3


def test_accidental_hits_are_removed():
    u, emb, bias, labels = random_problem(1, B=1)
    V = emb.shape[0]
    log_q = torch.log_softmax(torch.linspace(3.0, -3.0, V), 0)
    y = int(labels[0])
    others = [i for i in (2, 5, 9, 17, 30) if i != y]
    with_hit = sampled_softmax_loss(u, emb, bias, labels, FixedSampler(others + [y], log_q), len(others) + 1)
    without = sampled_softmax_loss(u, emb, bias, labels, FixedSampler(others, log_q), len(others))
    kept = sampled_softmax_loss(u, emb, bias, labels, FixedSampler(others + [y], log_q), len(others) + 1,
                                remove_accidental_hits=False)
    assert float(with_hit) == pytest.approx(float(without), rel=1e-6)
    assert float(kept) > float(without) + 1e-3


def test_unigram_sampler_follows_count_power_and_never_draws_pad_or_oov():
    counts = np.array([1e9, 1e9, 1, 16, 81, 256], dtype=float)
    s = UnigramSampler(counts, alpha=0.75, seed=3)
    ids = s.sample(200_000).numpy()
    assert ids.min() >= 2
    freq = np.bincount(ids, minlength=6)[2:] / len(ids)
    want = np.array([1, 8, 27, 64]) / 100.0  # count ** 0.75
    assert freq == pytest.approx(want, abs=0.005)
    assert s.log_q(torch.tensor([3])).exp().item() == pytest.approx(0.08, rel=1e-5)
    assert torch.isneginf(s.log_q(torch.tensor([0, 1]))).all()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_logq_correction_brings_sampled_gradient_closer_to_full():
    """Averaged over draws from a Zipf proposal, the corrected gradient points where the full one does;
    uncorrected, popular videos are pushed down too hard (clearest in the output bias gradient)."""
    V, D, B, n_sampled, draws = 1000, 16, 64, 64, 30
    g = torch.Generator().manual_seed(4)
    u = torch.randn(B, D, generator=g)
    emb = (torch.randn(V, D, generator=g) * 0.5).requires_grad_()
    bias = torch.zeros(V, requires_grad=True)
    labels = torch.randint(2, V, (B,), generator=g)
    counts = 1e6 / np.arange(1, V + 1) ** 1.2  # Zipf: the proposal is far from the model's softmax
    grads = {}
    for name, corrected in (("full", None), ("logq", True), ("plain", False)):
        sampler = UnigramSampler(counts, alpha=1.0, seed=11)
        g_emb, g_bias = torch.zeros(V, D), torch.zeros(V)
        for _ in range(1 if corrected is None else draws):
            emb.grad = bias.grad = None
            if corrected is None:
                loss = full_softmax_loss(u, emb, bias, labels)
            else:
                loss = sampled_softmax_loss(u, emb, bias, labels, sampler, n_sampled, logq_correction=corrected)
            loss.backward()
            g_emb += emb.grad
            g_bias += bias.grad
        grads[name] = (g_emb, g_bias)
    cos = {k: [_cos(grads[k][i], grads["full"][i]) for i in (0, 1)] for k in ("logq", "plain")}
    assert cos["logq"][1] > 0.85, cos
    assert cos["logq"][1] > cos["plain"][1] + 0.1, cos
    assert cos["logq"][0] > cos["plain"][0], cos


# ---------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    V = 8
    scores = torch.tensor([
        [9.0, 9.0, 0.1, 0.9, 0.5, 0.3, 0.2, 0.0],  # label 4: only 3 scores higher -> rank 1
        [0.0, 0.0, 0.9, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 7: 2 ahead but 2 is excluded -> rank 0
        [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # label 2: see below
        [0.0, 0.0, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1],  # label 3 excluded -> miss
    ])
    labels = torch.tensor([4, 7, 2, 3])
    exclude = [np.array([], np.int64), np.array([2]), np.array([6, 7]), np.array([3])]
    # row 2: 6 and 7 excluded -> items ahead of 2 are 5, 4, 3 -> rank 3
    m = hit_rate_ndcg(scores, labels, k_list=(1, 3, 5), exclude=exclude)
    ranks = [1, 0, 3, math.inf]
    for k in (1, 3, 5):
        assert m[f"hr@{k}"] == pytest.approx(sum(r < k for r in ranks) / 4)
        assert m[f"ndcg@{k}"] == pytest.approx(sum(1 / math.log2(r + 2) for r in ranks if r < k) / 4)
    assert m["hr@1"] == pytest.approx(0.25) and m["hr@3"] == pytest.approx(0.5) and m["hr@5"] == pytest.approx(0.75)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1) / 4)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 4 + 0) / 4)
    # same answers from top-K index lists (pad/OOV and excluded ids in the lists are skipped)
    topk = torch.argsort(scores, dim=1, descending=True)[:, :V]
    assert hit_rate_ndcg(topk, labels, k_list=(1, 3, 5), exclude=exclude) == pytest.approx(m)
    # ties count against the label; without exclusion row 1's label drops to rank 1
    assert hit_rate_ndcg(torch.ones(2, V), torch.tensor([3, 5]), k_list=(1,))["hr@1"] == 0.0
    assert hit_rate_ndcg(scores[1:2], labels[1:2], k_list=(1,))["hr@1"] == 0.0


# ---------------------------------------------------------------- known-answer task


def successor_rows(rng: np.random.Generator, perm: np.ndarray, B: int, H: int, n_videos: int):
    """Rows whose label is perm[last watched id]; the rest of the history is noise."""
    d = make_rows(rng, B, H, n_videos)
    d[S.CAND_LABEL] = perm[d[S.CAND_WATCH_HIST][:, 0]].astype(np.int32)
    return d


def train_successor_task(recency: str, steps: int = 300) -> dict[str, float]:
    """Train a small model on label = perm[last watched id] (~200 videos) and score held-out rows."""
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    V, H = 202, 8
    perm = np.arange(V)
    perm[2:] = 2 + rng.permutation(V - 2)
    cfg = CandidateConfig(n_videos=V, n_tokens=50, demographic_vocab_sizes=DEMO_SIZES, embed_dim=32,
                          hidden=(64,), recency=recency)
    model = CandidateModel(cfg, QUANTILES)
    sampler = UnigramSampler(np.ones(V), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        b = batch_from_numpy(successor_rows(rng, perm, 128, H, V))
        loss = sampled_softmax_loss(model.user_vector(b), model.out_emb, model.out_bias, b.label, sampler, 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = batch_from_numpy(successor_rows(np.random.default_rng(99), perm, 500, H, V))
    with torch.no_grad():
        return hit_rate_ndcg(model.logits_full(model.user_vector(test)), test.label, k_list=(1, 10))


def test_model_learns_next_watch_as_a_function_of_the_last_watch():
    """Needs recency="last_k": the paper's plain mean of up to 8 watches blurs which one was last."""
    m = train_successor_task("last_k")
    assert m["hr@10"] >= 0.9, m


def test_plain_mean_cannot_tell_the_last_watch():
    """Why the known-answer task uses last_k: the order-free mean falls well short on it."""
    m = train_successor_task("none")
    assert m["hr@10"] < 0.8, m

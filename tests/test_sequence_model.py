"""The sequence encoder (models/sequence.py, train/sequence_task.py): causality, padding, the all-positions loss.

Every position's output equals the serving output of a candidate row cut
at that position (its history, ages and searches only): so no position sees
its own target or anything later, and serving (the last position) is the
training function. A known-answer task (the next item a fixed function of the
previous two) is learnt by the sequence encoder and not by the bag.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ytspark import schema as S
from ytspark.models.candidate import CandidateConfig, CandidateModel
from ytspark.models.features import batch_from_numpy
from ytspark.models.losses import UnigramSampler, full_softmax_loss, sampled_softmax_loss
from ytspark.models.sequence import future_targets, gap_buckets
from ytspark.train.candidate_task import SampledSoftmax
from ytspark.train.sequence_task import AllPositionsSoftmax, sequence_batch

V, TOK = 30, 12
DEMO = (4, 4, 4, 4, 9)
QUANT = {S.USER_AGE: [10.0, 30.0, 60.0], S.CAND_EXAMPLE_AGE: [0.0, 5.0, 50.0],
         S.CAND_SINCE_LAST: [0.0, 0.5, 3.0, 30.0]}


def seq_model(seed: int = 0, **kw) -> CandidateModel:
    torch.manual_seed(seed)
    cfg = dict(n_videos=V, n_tokens=TOK, demographic_vocab_sizes=DEMO, embed_dim=16, hidden=(), attn_layers=2,
               attn_heads=2, max_history=12, encoder="sequence")
    cfg.update(kw)
    return CandidateModel(CandidateConfig(**cfg), QUANT).eval()


def random_rows(seed: int, B: int = 5, H: int = 8) -> dict:
    """Sequence rows with varied lengths, same-time ties, searches cut per position, some positions without target."""
    rng = np.random.default_rng(seed)
    hist = np.zeros((B, H), np.int32)
    ages = np.zeros((B, H), np.float32)
    search = np.zeros((B, H), np.int32)
    nxt = np.zeros((B, H), np.int32)
    frm = np.full((B, H), H, np.int32)
    label = rng.integers(2, V, B).astype(np.int32)
    lengths = [H, 5, 1, H, 3][:B]
    for b, n in enumerate(lengths):
        hist[b, :n] = rng.integers(1, V, n)  # OOV 1 allowed as an input
        steps = rng.choice([0, 1, 7, 64, 700], n) / 64.0  # exact in float32; 0 = a same-time tie
        ages[b, :n] = np.cumsum(steps) + rng.integers(1, 20) / 64.0
        ns = int(rng.integers(0, H + 1))
        search[b, :ns] = rng.integers(1, TOK, ns)
        frm[b, :n] = np.sort(rng.integers(0, ns + 1, n))
        frm[b, 0] = 0
        for j in range(n):
            nxt[b, j] = label[b] if j == 0 else hist[b, j - 1]
        nxt[b, :n][rng.random(n) < 0.2] = 0
    return {S.CAND_LABEL: label, S.CAND_WATCH_HIST: hist, S.CAND_WATCH_AGE: ages, S.CAND_SEARCH_HIST: search,
            S.USER_AGE: rng.choice([-1.0, 25.0, 44.0], B).astype(np.float32),
            S.CAND_SINCE_LAST: np.where(hist[:, 0] > 0, ages[:, 0], -1.0).astype(np.float32),
            S.CAND_N_WATCHES: (hist > 0).sum(1).astype(np.int32),
            S.CAND_EXAMPLE_AGE: rng.integers(0, 400, B).astype(np.float32) / 8,
            **{c: rng.integers(1, 4, B).astype(np.int32) for c in S.DEMOGRAPHIC_COLUMNS},
            S.SEQ_NEXT: nxt, S.SEQ_SEARCH_FROM: frm}


def cut_at(rows: dict, b: int, j: int) -> dict:
    """Row ``b`` as a serving candidate row at position ``j``: slots >= j, searches from its cut-off, ages shifted."""
    H = rows[S.CAND_WATCH_HIST].shape[1]
    age = rows[S.CAND_WATCH_AGE][b]
    t = 0.0 if j == 0 else float(age[j - 1])  # the target's age before the row's label

    def pad(a, dtype):
        out = np.zeros(H, dtype)
        out[:len(a)] = a
        return out[None]

    n = int((rows[S.CAND_WATCH_HIST][b] != 0).sum())
    frm = rows[S.SEQ_SEARCH_FROM][b, j]
    return {S.CAND_LABEL: rows[S.SEQ_NEXT][b, j:j + 1],
            S.CAND_WATCH_HIST: pad(rows[S.CAND_WATCH_HIST][b, j:], np.int32),
            S.CAND_WATCH_AGE: pad(np.where(np.arange(j, H) < n, age[j:] - t, 0.0), np.float32),
            S.CAND_SEARCH_HIST: pad(rows[S.CAND_SEARCH_HIST][b, frm:], np.int32),
            S.USER_AGE: rows[S.USER_AGE][b:b + 1],
            S.CAND_SINCE_LAST: np.array([rows[S.CAND_SINCE_LAST][b] if j == 0 else age[j] - t], np.float32),
            S.CAND_N_WATCHES: np.array([n - j], np.int32),
            S.CAND_EXAMPLE_AGE: np.array([rows[S.CAND_EXAMPLE_AGE][b] + t], np.float32),
            **{c: rows[c][b:b + 1] for c in S.DEMOGRAPHIC_COLUMNS}}


def positions(model, rows):
    sb = sequence_batch(rows)
    u, y = model.seq.positions(model, sb.rows, sb.seq_next, sb.search_from)
    return u, y[:, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_position_equals_the_row_cut_at_it(seed):
    """Position j's output depends only on slots >= j and the searches before its target: the cut row gives it."""
    model, rows = seq_model(seed), random_rows(seed)
    with torch.no_grad():
        u, y = positions(model, rows)
        want, labels = [], []
        for b, j in zip(*np.nonzero(rows[S.SEQ_NEXT] >= 2)):
            cut = batch_from_numpy(cut_at(rows, b, j))
            want.append(model.user_vector(cut)[0])
            labels.append(int(rows[S.SEQ_NEXT][b, j]))
    assert len(labels) >= 8
    assert y.tolist() == labels
    torch.testing.assert_close(u, torch.stack(want), atol=1e-5, rtol=1e-4)


def test_later_events_do_not_change_earlier_positions():
    """Changing the newest watch, its age and the newest searches leaves every older position as it was."""
    model, rows = seq_model(3), random_rows(3, B=1)
    rows[S.SEQ_NEXT][0, :] = np.where(rows[S.CAND_WATCH_HIST][0] > 0, 5, 0)
    rows[S.SEQ_SEARCH_FROM][0, 1:] = np.maximum(rows[S.SEQ_SEARCH_FROM][0, 1:], 1)  # the newest search is after them
    other = {k: v.copy() for k, v in rows.items()}
    other[S.CAND_WATCH_HIST][0, 0] = 7 if rows[S.CAND_WATCH_HIST][0, 0] != 7 else 8
    other[S.CAND_SEARCH_HIST][0, 0] = 3
    with torch.no_grad():
        a, _ = positions(model, rows)
        b, _ = positions(model, other)
    torch.testing.assert_close(a[1:], b[1:])
    assert not torch.allclose(a[0], b[0])


def test_padding_changes_nothing():
    model, rows = seq_model(4), random_rows(4)
    wide = {}
    for k, v in rows.items():
        if v.ndim == 2:
            fill = 8 if k == S.SEQ_SEARCH_FROM else 0  # pad positions see nothing
            wide[k] = np.concatenate([v, np.full((v.shape[0], 4), fill, v.dtype)], axis=1)
        else:
            wide[k] = v
    with torch.no_grad():
        torch.testing.assert_close(positions(model, rows)[0], positions(model, wide)[0])
        torch.testing.assert_close(model.user_vector(batch_from_numpy(rows)),
                                   model.user_vector(batch_from_numpy(wide)))
        # a batch is cut to its longest history: each row alone (cut to its own length) as in the batch
        lengths = (rows[S.CAND_WATCH_HIST] != S.PAD).sum(axis=1)
        assert lengths.min() < lengths.max()
        together = model.user_vector(batch_from_numpy(rows))
        for i in range(len(lengths)):
            alone = model.user_vector(batch_from_numpy({k: v[i:i + 1] for k, v in rows.items()}))
            torch.testing.assert_close(alone[0], together[i])


def test_gap_buckets_are_log_seconds_and_zero_without_a_previous_watch():
    hist = torch.tensor([[5, 4, 3, 2, 0]])
    age = torch.tensor([[1.0, 1.0, 1.0 + 3 / 86400, 2.0, 0.0]])
    assert gap_buckets(hist, age).tolist() == [[1, 2 + 1, 2 + 16, 0, 0]]  # tie; 3 s; 86397 s ~ 2^16.4; oldest


def test_a_gap_of_whole_seconds_keeps_its_bucket_whatever_the_row_time():
    """2^k seconds between two watches, seen from rows up to two months later (float32 ages in days): the
    bucket is 2 + k every time (read from the raw float difference, 2^k s rounded down half the time)."""
    hist = torch.tensor([[5, 4]])
    for later in (0.0, 0.3, 7.7, 20.1, 31.4, 55.3, 58.9):
        for k in (0, 1, 2, 6, 10, 16):
            age = torch.tensor([[later, later + 2 ** k / 86400]], dtype=torch.float32)
            assert gap_buckets(hist, age)[0, 0].item() == 2 + k, (later, k)
    age = torch.tensor([[3.0, 3.0 + 0.4 / 86400]], dtype=torch.float32)
    assert gap_buckets(hist, age)[0, 0].item() == 1  # under half a second: the same moment


@pytest.mark.parametrize("num_sampled", [10, 1000])
def test_all_positions_loss_is_the_mean_of_the_per_position_losses(num_sampled):
    """One pass over the rows = the positions one by one (same negatives: a sampler with the same seed)."""
    model, rows = seq_model(5), random_rows(5)
    counts = np.arange(V, dtype=np.float64)
    loss = AllPositionsSoftmax(model, UnigramSampler(counts, seed=3), num_sampled)(sequence_batch(rows))
    per = []
    for b, j in zip(*np.nonzero(rows[S.SEQ_NEXT] >= 2)):
        cut = batch_from_numpy(cut_at(rows, b, j))
        per.append(sampled_softmax_loss(model.user_vector(cut), model.out_emb, model.out_bias, cut.label,
                                        UnigramSampler(counts, seed=3), num_sampled))
    torch.testing.assert_close(loss * len(per), torch.stack(per).sum(), atol=1e-4, rtol=1e-5)
    if num_sampled >= V:  # the exact softmax
        u, y = positions(model, rows)
        torch.testing.assert_close(loss, full_softmax_loss(u, model.out_emb, model.out_bias, y))


def test_horizon_targets_are_the_later_watches_of_the_window_never_an_input():
    """Target d of position j is the (d+1)-th watch after slot j: the label or a newer slot, never slot >= j."""
    rows = random_rows(4)
    nxt, hist, label = rows[S.SEQ_NEXT], rows[S.CAND_WATCH_HIST], rows[S.CAND_LABEL]
    ft = future_targets(torch.from_numpy(nxt), 4).numpy()
    assert ft.shape == (*nxt.shape, 4)
    np.testing.assert_array_equal(ft[..., 0], nxt)
    checked = 0
    for b, j, d in np.ndindex(*ft.shape):
        newer = j - d - 1  # the slot of the (d+1)-th watch after slot j; -1 = the row's label
        if newer < -1:
            assert ft[b, j, d] == 0  # past the window's label: no target
        elif ft[b, j, d]:
            assert ft[b, j, d] == (label[b] if newer == -1 else hist[b, newer])
            checked += d > 0
    assert checked > 10


def test_horizon_loss_is_the_weighted_mean_of_each_offsets_loss():
    """horizon 3, decay 0.5: (L_1 + 0.5 L_2 + 0.25 L_3) / 1.75, L_d the mean over positions with a next target
    and a d-th one, each computed on the row cut at the position (exact softmax)."""
    model, rows = seq_model(6), random_rows(6)
    counts = np.arange(V, dtype=np.float64)
    loss = AllPositionsSoftmax(model, UnigramSampler(counts, seed=3), 1000, horizon=3, decay=0.5)(
        sequence_batch(rows))
    nxt = rows[S.SEQ_NEXT]
    per_offset = []
    for d in range(3):
        per = []
        for b, j in zip(*np.nonzero(nxt >= 2)):
            if j - d >= 0 and nxt[b, j - d] >= 2:
                cut = batch_from_numpy(cut_at(rows, b, j))
                per.append(full_softmax_loss(model.user_vector(cut), model.out_emb, model.out_bias,
                                             torch.tensor([int(nxt[b, j - d])])))
        assert per
        per_offset.append(torch.stack(per).mean())
    expected = (per_offset[0] + 0.5 * per_offset[1] + 0.25 * per_offset[2]) / 1.75
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-5)
    plain = AllPositionsSoftmax(model, UnigramSampler(counts, seed=3), 1000)(sequence_batch(rows))
    torch.testing.assert_close(plain, per_offset[0], atol=1e-4, rtol=1e-5)


# ---- known answer: the next item is a fixed function of the previous two

N_IN, N_OUT = 10, 100  # inputs 2..11, targets 12..111: f(a, b) = 12 + 10 (a - 2) + (b - 2)


def order_rows(n: int, H: int, seed: int) -> dict:
    """Histories of random inputs; the target of every position is f(the watch before it, its own watch)."""
    rng = np.random.default_rng(seed)
    hist = rng.integers(2, 2 + N_IN, (n, H)).astype(np.int32)
    f = lambda older, newer: 2 + N_IN + 10 * (older - 2) + (newer - 2)  # noqa: E731
    nxt = np.zeros((n, H), np.int32)
    nxt[:, :-1] = f(hist[:, 1:], hist[:, :-1])
    ages = (np.arange(H, dtype=np.float32)[None] + 1) * np.ones((n, 1), np.float32)
    return {S.CAND_LABEL: nxt[:, 0].copy(), S.CAND_WATCH_HIST: hist, S.CAND_WATCH_AGE: ages,
            S.CAND_SEARCH_HIST: np.zeros((n, H), np.int32), S.USER_AGE: np.full(n, 30.0, np.float32),
            S.CAND_SINCE_LAST: np.ones(n, np.float32), S.CAND_N_WATCHES: np.full(n, H, np.int32),
            S.CAND_EXAMPLE_AGE: np.zeros(n, np.float32), **{c: np.full(n, 2, np.int32) for c in S.DEMOGRAPHIC_COLUMNS},
            S.SEQ_NEXT: nxt, S.SEQ_SEARCH_FROM: np.zeros((n, H), np.int32)}


def hr_at_10(model, rows) -> float:
    with torch.no_grad():
        batch = batch_from_numpy(rows)
        top = model.logits_full(model.user_vector(batch)).topk(10, dim=1).indices
    return float((top == batch.label.unsqueeze(1)).any(dim=1).float().mean())


@pytest.mark.slow
def test_order_task_is_learnt_by_the_sequence_encoder_and_not_by_the_bag():
    torch.set_num_threads(1)
    Vk, H = 2 + N_IN + N_OUT, 12
    train, test = order_rows(2048, H, 0), order_rows(500, H, 1)
    common = dict(n_videos=Vk, n_tokens=2, demographic_vocab_sizes=DEMO, embed_dim=32, hidden=(),
                  use_searches=False, use_demographics=False, use_example_age=False, max_history=H)
    torch.manual_seed(0)
    seq = CandidateModel(CandidateConfig(**common, encoder="sequence", attn_layers=1, attn_heads=2), QUANT)
    torch.manual_seed(0)
    bag = CandidateModel(CandidateConfig(**common, recency="none"), QUANT)
    sampler = UnigramSampler(np.ones(Vk), seed=0)
    for model, loss_fn, to_batch in ((seq, AllPositionsSoftmax(seq, sampler, 10_000), sequence_batch),
                                     (bag, SampledSoftmax(bag, sampler, 10_000), batch_from_numpy)):
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        rng = np.random.default_rng(0)
        model.train()
        for _ in range(300):
            idx = rng.integers(0, 2048, 128)
            loss = loss_fn(to_batch({k: v[idx] for k, v in train.items()}))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    hr_seq, hr_bag = hr_at_10(seq, test), hr_at_10(bag, test)
    assert hr_seq > 0.95, hr_seq
    assert hr_bag < 0.4, hr_bag

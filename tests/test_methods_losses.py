"""Losses and momentum pieces of SimCLR, MoCo v2, BYOL and SwAV against formulas by hand.

Every reference below is written with plain Python loops and ``math`` on fixed small
tensors, independently of the vectorised code under test.
"""

import math

import pytest
import torch
from torch import nn

from simsiam.methods.contrastive import byol_loss, info_nce, nt_xent, sinkhorn, swav_loss
from simsiam.methods.momentum import Queue, byol_tau, ema_update


def rows(t):
    return [[float(v) for v in r] for r in t]


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def fixed(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- NT-Xent ------------------------------------------------------------------------------

def nt_xent_by_hand(z1, z2, t):
    views = [unit(r) for r in rows(z1) + rows(z2)]
    n = len(views) // 2
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        den = sum(math.exp(dot(views[a], views[b]) / t) for b in range(2 * n) if b != a)
        total += -math.log(math.exp(dot(views[a], views[pos]) / t) / den)
    return total / (2 * n)


def test_nt_xent_known_logits():
    # Views e1, e2 | e1, e2 at T = 1: each anchor sees its partner at cosine 1 and two
    # others at cosine 0, so every term is log(2 + e) - 1.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert nt_xent(z, 3 * z, 1.0).item() == pytest.approx(math.log(2 + math.e) - 1, abs=1e-6)


@pytest.mark.parametrize("t", [0.5, 0.1])
def test_nt_xent_matches_loop_formula(t):
    z1, z2 = fixed((5, 4), 0), fixed((5, 4), 1)
    loss = nt_xent(z1, z2, t)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(nt_xent_by_hand(z1, z2, t), rel=1e-5)


def test_nt_xent_gathered_shards_average_to_the_full_batch():
    z1, z2 = fixed((6, 4), 2), fixed((6, 4), 3)
    full = nt_xent(z1, z2, 0.5)
    assert torch.allclose(nt_xent(z1, z2, 0.5, gathered=(z1, z2), offset=0), full)
    shards = [nt_xent(z1[o:o + 3], z2[o:o + 3], 0.5, gathered=(z1, z2), offset=o)
              for o in (0, 3)]
    assert torch.allclose((shards[0] + shards[1]) / 2, full, atol=1e-6)
    with pytest.raises(ValueError, match="offset 4"):
        nt_xent(z1[:3], z2[:3], 0.5, gathered=(z1, z2), offset=4)


def test_nt_xent_is_float32_under_bf16_autocast():
    z1, z2 = fixed((4, 8), 4), fixed((4, 8), 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z1, z2, 0.5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(nt_xent_by_hand(z1, z2, 0.5), rel=1e-5)


# --- InfoNCE ------------------------------------------------------------------------------

def test_info_nce_known_queue():
    # q = e1, k = 2 e1 (normalised to e1), queue = (e2, -e1), T = 0.5: logits (2, 0, -2).
    q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert info_nce(q, k, queue, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_matches_loop_formula():
    q, k = fixed((4, 3), 6), fixed((4, 3), 7)
    queue = torch.nn.functional.normalize(fixed((10, 3), 8), dim=1)
    t, total = 0.2, 0.0
    for qi, ki in zip(rows(q), rows(k), strict=True):
        qi, ki = unit(qi), unit(ki)
        logits = [dot(qi, ki) / t] + [dot(qi, n) / t for n in rows(queue)]
        total += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    assert info_nce(q, k, queue, t).item() == pytest.approx(total / 4, rel=1e-5)


# --- BYOL ---------------------------------------------------------------------------------

def test_byol_loss_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]])
    assert byol_loss(p, z).item() == pytest.approx((2 + 0 + 4) / 3, abs=1e-6)
    p, z = fixed((5, 6), 9), fixed((5, 6), 10)
    expected = sum(2 - 2 * dot(unit(a), unit(b)) for a, b in zip(rows(p), rows(z), strict=True))
    assert byol_loss(p, z).item() == pytest.approx(expected / 5, rel=1e-5)


# --- Sinkhorn and SwAV --------------------------------------------------------------------

def sinkhorn_by_hand(scores, eps, iters):
    q = [[math.exp(s / eps) for s in r] for r in rows(scores)]
    b, k = len(q), len(q[0])
    total = sum(map(sum, q))
    q = [[v / total for v in r] for r in q]
    for _ in range(iters):
        cols = [sum(q[i][j] for i in range(b)) for j in range(k)]
        q = [[q[i][j] / cols[j] / k for j in range(k)] for i in range(b)]
        q = [[v / sum(r) / b for v in r] for r in q]
    return [[v * b for v in r] for r in q]


def test_sinkhorn_matches_the_algorithm_and_its_marginals():
    scores = torch.nn.functional.normalize(fixed((8, 4), 11), dim=1) * 0.8
    q = sinkhorn(scores, 0.05, 3)
    assert q.dtype == torch.float32 and q.grad_fn is None and (q >= 0).all()
    assert torch.allclose(q, torch.tensor(sinkhorn_by_hand(scores, 0.05, 3)), atol=1e-5)
    # The last rescaling is over rows: each sample's code sums to 1 after 3 iterations.
    assert torch.allclose(q.sum(1), torch.ones(8), atol=1e-5)
    # Converged: prototypes each hold B / K = 2 as well.
    q = sinkhorn(scores, 0.05, 2000)
    assert torch.allclose(q.sum(1), torch.ones(8), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((4,), 2.0), atol=1e-4)


def test_sinkhorn_survives_large_scores():
    q = sinkhorn(torch.full((4, 3), 1.0) + torch.eye(4, 3) * 40, 0.05, 3)
    assert torch.isfinite(q).all()


def test_swav_loss_matches_swapped_cross_entropy_by_hand():
    b, k, t = 6, 3, 0.1
    scores = [torch.nn.functional.normalize(fixed((b, k), 20 + v), dim=1) * 0.3 for v in range(4)]
    codes = [sinkhorn(s, 0.05, 2000) for s in scores[:2]]
    for c in codes:
        assert torch.allclose(c.sum(1), torch.ones(b), atol=1e-4)
        assert torch.allclose(c.sum(0), torch.full((k,), b / k), atol=1e-4)
    total = 0.0
    for i, q in enumerate(codes):
        sub = 0.0
        for j, s in enumerate(scores):
            if j == i:
                continue
            ce = 0.0
            for qr, sr in zip(rows(q), rows(s), strict=True):
                log_z = math.log(sum(math.exp(x / t) for x in sr))
                ce += -sum(qv * (x / t - log_z) for qv, x in zip(qr, sr, strict=True))
            sub += ce / b
        total += sub / (len(scores) - 1)
    loss = swav_loss(scores, codes, t)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(total / len(codes), rel=1e-5)


def test_swav_loss_rejects_mismatched_inputs():
    s = [torch.zeros(4, 3)] * 2
    with pytest.raises(ValueError, match="coded views"):
        swav_loss(s, [torch.zeros(4, 3)] * 3)
    with pytest.raises(ValueError, match="one shape"):
        swav_loss([torch.zeros(4, 3), torch.zeros(4, 5)], [torch.zeros(4, 3)])


# --- EMA and the BYOL schedule ------------------------------------------------------------

def test_ema_update_is_exactly_the_rule():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5))
    target = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5))
    online(torch.randn(6, 4))  # moves online's running statistics
    m = 0.99
    expected = {k: t.detach().clone() * m + o.detach() * (1 - m)
                for (k, t), (_, o) in zip(target.named_parameters(),
                                          online.named_parameters(), strict=True)}
    ema_update(target, online, m)
    for k, p in target.named_parameters():
        assert torch.equal(p, expected[k]), k
    for (k, b), (_, ob) in zip(target.named_buffers(), online.named_buffers(), strict=True):
        assert torch.equal(b, ob), k
    with pytest.raises(ValueError, match="momentum"):
        ema_update(target, online, 1.5)
    with pytest.raises(ValueError, match="deepcopy"):
        ema_update(nn.Linear(4, 3), nn.Linear(4, 5), 0.9)


def test_byol_tau_schedule():
    assert byol_tau(0, 1000, 0.996) == 0.996
    assert byol_tau(1000, 1000, 0.996) == 1.0
    assert byol_tau(500, 1000, 0.996) == pytest.approx(0.998)
    taus = [byol_tau(s, 100, 0.99) for s in range(101)]
    assert all(a <= b for a, b in zip(taus, taus[1:], strict=False))
    with pytest.raises(ValueError):
        byol_tau(0, 0)


# --- Queue --------------------------------------------------------------------------------

def test_queue_overwrites_oldest_in_order_and_wraps():
    queue = Queue(8, 2)
    batches = [torch.full((4, 2), float(i)) + torch.arange(4.0)[:, None] / 10 for i in range(3)]
    for batch in batches:
        queue.enqueue(batch)
    # 12 keys into 8 rows: batch 2 overwrote rows 0-3 (batch 0), batch 1 is in rows 4-7.
    assert torch.equal(queue.keys[:4], batches[2])
    assert torch.equal(queue.keys[4:], batches[1])
    assert int(queue.ptr) == 4
    assert set(queue.state_dict()) == {"keys", "ptr"}


def test_queue_length_not_a_multiple_of_the_batch_is_a_clear_error():
    queue = Queue(10, 2)
    with pytest.raises(ValueError, match=r"queue length 10 is not a multiple of the batch size 4"):
        queue.enqueue(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="width 2"):
        queue.enqueue(torch.zeros(5, 3))

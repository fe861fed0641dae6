"""SimCLR, MoCo v2, BYOL and SwAV models: the method protocol, momentum rules, learning.

A CIFAR-stem ResNet-18 on 16x16 random images (8x8 and 4x4 where only the momentum rules
are checked) with small heads keeps each test short.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import simsiam.methods.swav as swav_module
from simsiam.methods.byol import BYOL
from simsiam.methods.mocov2 import MoCoV2
from simsiam.methods.momentum import byol_tau
from simsiam.methods.simclr import SimCLR
from simsiam.methods.swav import SwAV
from simsiam.models.backbones import build_backbone

B = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these small convolutions gain nothing from two, and on a
    machine whose cores are busy two threads spin against each other (4x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name, **kw):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "cifar")
    if name == "simclr":
        return SimCLR(backbone, 512, dim=32, hidden_dim=64, **kw)
    if name == "mocov2":
        return MoCoV2(backbone, 512, dim=32, hidden_dim=64, queue_size=64, momentum=0.99, **kw)
    if name == "byol":
        return BYOL(backbone, 512, dim=32, hidden_dim=64, **kw)
    return SwAV(backbone, 512, dim=32, hidden_dim=64, num_prototypes=16, **kw)


def views(n=2, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, size, size, generator=g) for _ in range(n)]


def sgd_step(model, opt, xs, step, total=100):
    loss, metrics = model(xs)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    model.on_step_end(step, total)
    return loss.detach(), metrics


@pytest.mark.parametrize("name", ["simclr", "mocov2", "byol", "swav"])
def test_forward_returns_float32_loss_and_metrics(name):
    model = make(name)
    loss, metrics = model(views())
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.grad_fn is not None
    assert metrics["collapse_std"].dim() == 0 and torch.isfinite(metrics["collapse_std"])
    assert metrics["features"].shape == (B, 512) and metrics["features"].grad_fn is None
    groups = model.param_groups()
    assert all(g["name"] and g["params"] for g in groups)
    assert all(p.requires_grad for g in groups for p in g["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable


@pytest.mark.parametrize("name", ["simclr", "byol", "swav"])
def test_a_few_sgd_steps_lower_the_loss(name):
    model = make(name)
    opt = torch.optim.SGD(model.param_groups(), lr=0.05, momentum=0.9)
    xs = views()
    losses = [sgd_step(model, opt, xs, s)[0].item() for s in range(4)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_mocov2_steps_lower_the_loss_against_a_fixed_queue():
    # On a fixed batch the queue fills with keys of the very same images (hard
    # negatives), so the loss is compared against the initial queue.
    model = make("mocov2")
    start = copy.deepcopy(model.queue.state_dict())
    opt = torch.optim.SGD(model.param_groups(), lr=0.05, momentum=0.9)
    xs = views()
    first = sgd_step(model, opt, xs, 0)[0]
    for s in range(1, 4):
        sgd_step(model, opt, xs, s)
    model.queue.load_state_dict(start)
    with torch.no_grad():
        after = model(xs)[0]
    assert after < 0.8 * first, (first.item(), after.item())


def test_mocov2_key_encoder_is_an_ema_and_keys_are_enqueued_after_the_step():
    model = make("mocov2")
    for q, k in zip(model.backbone.parameters(), model.key_backbone.parameters(), strict=True):
        assert torch.equal(q, k) and not k.requires_grad
    keys_before = model.queue.keys.clone()
    target_before = [p.clone() for p in model.key_head.parameters()]
    opt = torch.optim.SGD(model.param_groups(), lr=0.05, momentum=0.9)
    xs = views(size=8)
    loss, _ = model(xs)
    assert torch.equal(model.queue.keys, keys_before)  # nothing enqueued by the forward
    opt.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in model.key_backbone.parameters())
    assert all(p.grad is None for p in model.key_head.parameters())
    opt.step()
    with torch.no_grad():
        expected_keys = model.keys(xs[1])  # key encoder not moved yet: these are the keys
    model.on_step_end(0, 100)
    for p, old, new in zip(model.key_head.parameters(), target_before, model.head.parameters(),
                           strict=True):
        assert torch.equal(p, old * 0.99 + new.detach() * (1 - 0.99))
    assert torch.allclose(model.queue.keys[:B], expected_keys, atol=1e-6)
    assert torch.equal(model.queue.keys[B:], keys_before[B:])
    assert int(model.queue.ptr) == B


def test_mocov2_queue_not_a_multiple_of_the_batch_fails_before_the_step():
    model = MoCoV2(build_backbone("resnet18", "cifar"), 512, dim=8, hidden_dim=16,
                   queue_size=60)
    with pytest.raises(ValueError, match="queue length 60 is not a multiple of the batch size 8"):
        model(views(size=8))


def test_byol_target_gets_no_gradient_and_moves_only_by_the_ema_rule():
    model = make("byol")
    opt = torch.optim.SGD(model.param_groups(), lr=0.05, momentum=0.9)
    target_before = [p.clone() for p in model.target_projector.parameters()]
    loss, _ = model(views(size=8))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    targets = list(model.target_backbone.parameters()) + list(model.target_projector.parameters())
    assert all(p.grad is None and not p.requires_grad for p in targets)
    assert all(torch.equal(p, old) for p, old in zip(model.target_projector.parameters(),
                                                     target_before, strict=True))
    model.on_step_end(0, 100)
    assert model.tau == 0.996
    for p, old, new in zip(model.target_projector.parameters(), target_before,
                           model.projector.parameters(), strict=True):
        assert torch.equal(p, old * 0.996 + new.detach() * (1 - 0.996))
    model.on_step_end(99, 100)  # the last of 100 steps: the schedule's end
    assert model.tau == byol_tau(99, 99, 0.996) == 1.0


def test_byol_loss_is_symmetric_sum():
    model = make("byol")
    x1, x2 = views(size=8)
    a = model([x1, x2])[0]
    b = model([x2, x1])[0]
    assert torch.allclose(a, b, atol=1e-5)
    assert 0 <= a.item() <= 8


def test_swav_takes_two_large_and_four_small_views():
    model = make("swav")
    xs = views(2, 16, seed=1) + views(4, 8, seed=2)
    loss, metrics = model(xs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert model.prototypes.weight.grad.abs().sum() > 0
    norms = model.prototypes.weight.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 views"):
        model(xs[:1])


def test_swav_prototypes_frozen_for_the_first_steps():
    model = make("swav", freeze_prototypes_steps=2)
    opt = torch.optim.SGD(model.param_groups(), lr=0.05, momentum=0.9)
    xs = views(2, 8) + views(2, 4, seed=3)
    for step in range(2):
        loss, _ = model(xs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert torch.count_nonzero(model.prototypes.weight.grad) == 0, step
        assert model.backbone.conv1.weight.grad.abs().sum() > 0
        opt.step()
        model.on_step_end(step, 100)
    loss, _ = model(xs)
    loss.backward()
    assert model.prototypes.weight.grad.abs().sum() > 0
    assert model.state_dict()["prototype_grad_scale"] == 1.0


def test_swav_queue_fills_from_its_start_step_and_then_joins_sinkhorn(monkeypatch):
    """Queue of 16 rows, batch 8, filling from step 1: steps 1 and 2 fill it (no effect on
    the codes), from step 3 its rows take part in Sinkhorn and the batch keeps its codes."""
    from simsiam.methods.contrastive import sinkhorn

    model = make("swav", queue_length=16, queue_start_steps=1)
    assert model.queue.shape == (2, 16, 32) and int(model.queue_rows) == 0
    opt = torch.optim.SGD(model.param_groups(), lr=0.05, momentum=0.9)
    batches = [views(2, 8, seed=s) for s in range(5)]
    pushed = []
    for step in range(3):
        if step >= 1:  # the projections that this step will push (before its update)
            with torch.no_grad():
                zs, _ = model.encode(batches[step])
            pushed.append([F.normalize(z.float(), dim=1) for z in zs])
        model.train()
        sgd_step(model, opt, batches[step], step)
        assert int(model.queue_rows) == [0, B, 2 * B][step]
    for i in range(2):  # newest first: step 2's rows, then step 1's
        want = torch.cat([pushed[1][i], pushed[0][i]])
        assert torch.allclose(model.queue[i], want, atol=1e-5)

    # Step 3 uses the full queue: the codes are Sinkhorn over [queue; batch], batch rows.
    captured, queue_before = [], model.queue[0].clone()
    real = swav_module.sinkhorn
    monkeypatch.setattr(swav_module, "sinkhorn",
                        lambda s, *a, **k: captured.append(s) or real(s, *a, **k))
    model(batches[3])
    assert [c.shape[0] for c in captured] == [3 * B, 3 * B]  # 16 queue rows, 8 batch rows
    w = F.normalize(model.prototypes.weight.detach().float(), dim=1)
    assert torch.allclose(captured[0][:2 * B], queue_before @ w.T, atol=1e-5)
    with_queue = sinkhorn(captured[0])[-B:]
    alone = sinkhorn(captured[0][-B:])
    assert not torch.allclose(with_queue, alone, atol=1e-3)  # the queue changes the codes

    # Resume: a fresh model loading the state uses the queue at once.
    resumed = make("swav", queue_length=16, queue_start_steps=1)
    resumed.load_state_dict(model.state_dict())
    assert resumed._queue_state() == (True, 2 * B)


def test_swav_without_a_queue_keeps_its_state_dict_and_rejects_bad_lengths():
    assert not any(k.startswith("queue") for k in make("swav").state_dict())
    with pytest.raises(ValueError, match="queue length"):
        make("swav", queue_length=-1)

"""The SimSiam model: stop-gradient, separate forward passes, loss formula, autocast."""

import copy

import pytest
import torch
import torch.nn.functional as F

from simsiam.methods import SimSiam, negative_cosine, symmetric_negative_cosine
from simsiam.models import build_backbone


def tiny_model(stop_gradient=True, seed=0):
    torch.manual_seed(seed)
    return SimSiam(build_backbone("resnet18", "imagenet"), 512, dim=64, proj_hidden_dim=128,
                   pred_hidden_dim=16, proj_layers=2, stop_gradient=stop_gradient)


def views(seed=1, b=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 32, 32, generator=g), torch.randn(b, 3, 32, 32, generator=g)


def encoder_grads(model):
    return torch.cat([p.grad.flatten() for m in (model.backbone, model.projector)
                      for p in m.parameters() if p.grad is not None])


def hand_detached_loss(ref, x1, x2):
    """The SimSiam loss written by hand with explicit .detach() on the targets."""
    z1, z2 = ref.encode(x1), ref.encode(x2)
    p1, p2 = ref.predictor(z1), ref.predictor(z2)
    return -(F.cosine_similarity(p1, z2.detach()).mean()
             + F.cosine_similarity(p2, z1.detach()).mean()) / 2


def test_targets_carry_no_graph():
    model = tiny_model()
    out = model.forward_views(*views())
    assert out.z1.grad_fn is None and out.z2.grad_fn is None
    assert not out.z1.requires_grad
    assert out.p1.grad_fn is not None


def test_encoder_gradient_equals_hand_detached_reference():
    x1, x2 = views()
    model = tiny_model()
    ref = copy.deepcopy(model)
    loss, _ = model([x1, x2])
    loss.backward()
    ref_loss = hand_detached_loss(ref, x1, x2)  # the same computation written by hand
    ref_loss.backward()
    assert torch.allclose(loss, ref_loss, atol=1e-6)
    assert torch.allclose(encoder_grads(model), encoder_grads(ref), atol=1e-6, rtol=1e-4)
    # Without the stop-gradient the encoder receives a different gradient.
    nosg = tiny_model(stop_gradient=False)
    nosg.load_state_dict(ref.state_dict())
    loss2, _ = nosg([x1, x2])
    loss2.backward()
    assert torch.allclose(loss2, ref_loss, atol=1e-6)  # same value ...
    diff = (encoder_grads(nosg) - encoder_grads(ref)).abs().max()
    assert diff > 1e-4  # ... different gradient


def test_views_pass_through_the_encoder_separately():
    x1, x2 = views()
    model = tiny_model()
    alone = copy.deepcopy(model)
    out = model.forward_views(x1, x2)
    with torch.no_grad():
        z1_alone = alone.encode(x1)  # train mode: BN statistics of view 1 only
        z_joint = alone.encode(torch.cat([x1, x2]))[: len(x1)]
    assert torch.allclose(out.z1, z1_alone, atol=1e-5)
    assert not torch.allclose(out.z1, z_joint, atol=1e-3)  # a joint pass would differ


def test_loss_equals_formula_on_fixed_tensors():
    p1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p2 = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    z1 = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    z2 = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    # cos(p1, z2) = [0, 1]; cos(p2, z1) = [1/sqrt2, -3/5]
    expected = -((0.0 + 1.0) / 2 + (2 ** -0.5 - 0.6) / 2) / 2
    assert symmetric_negative_cosine(p1, p2, z1, z2).item() == pytest.approx(expected, abs=1e-7)
    ref = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
    assert symmetric_negative_cosine(p1, p2, z1, z2).item() == pytest.approx(ref.item(), abs=1e-7)
    assert negative_cosine(p1, p1).item() == pytest.approx(-1.0, abs=1e-7)


def test_loss_in_float32_under_bf16_autocast_with_zero_row():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(16, 32, generator=g).bfloat16() for _ in range(4))
    p1[3] = 0.0  # an all-zero row: cosine 0, not NaN
    z2[5] = 0.0
    # Reference: float32 arithmetic on the same bf16-rounded values.
    ref = symmetric_negative_cosine(p1.float(), p2.float(), z1.float(), z2.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = symmetric_negative_cosine(p1, p2, z1, z2)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    # Computed in float32: bf16 arithmetic on these inputs is off by about 2e-5.
    assert abs(loss.item() - ref.item()) < 1e-6
    assert negative_cosine(torch.zeros(2, 4), torch.ones(2, 4)).item() == 0.0


def test_model_under_bf16_autocast_is_within_1e3_of_float32():
    x1, x2 = views()
    model = tiny_model()
    ref = copy.deepcopy(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model([x1, x2])
    ref_loss, _ = ref([x1, x2])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # The bf16 forward pass moves the loss by about 1e-3 (8.8e-4 for this seed).
    assert abs(loss.item() - ref_loss.item()) < 5e-3


def test_stop_gradient_holds_under_torch_compile():
    """The graph torch.compile captures (dynamo + AOTAutograd) keeps the detach: the
    compiled step's encoder gradient equals the hand-detached reference, not the
    gradient without stop-gradient. (aot_eager: the same capture as inductor, without
    generating C++ kernels, so it runs in seconds on a CPU.)"""
    x1, x2 = views()
    model = tiny_model()
    ref = copy.deepcopy(model)
    nosg = tiny_model(stop_gradient=False)
    nosg.load_state_dict(ref.state_dict())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss, _ = compiled([x1, x2])
    loss.backward()
    ref_loss = hand_detached_loss(ref, x1, x2)
    ref_loss.backward()
    loss2, _ = torch.compile(nosg, backend="aot_eager")([x1, x2])
    loss2.backward()
    assert torch.allclose(loss, ref_loss, atol=1e-6)
    assert torch.allclose(encoder_grads(model), encoder_grads(ref), atol=1e-6, rtol=1e-4)
    assert (encoder_grads(nosg) - encoder_grads(ref)).abs().max() > 1e-4

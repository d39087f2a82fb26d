"""Gaussian activation noise, weight noise, annealed gradient noise and the max-norm constraint."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from ablate.layers.noise import (
    GaussianNoise,
    add_gradient_noise_,
    add_weight_noise_,
    apply_max_norm_,
    gradient_noise_std,
    weight_noise,
)


def assert_normal(sample: torch.Tensor, sigma: float) -> None:
    """Mean within 5 standard errors of 0, std within 3% of sigma (samples of >= 10k)."""
    n = sample.numel()
    assert n >= 10_000
    assert abs(sample.mean().item()) < 5 * sigma / math.sqrt(n)
    assert abs(sample.std().item() / sigma - 1) < 0.03


def test_gaussian_noise_in_training_only():
    torch.manual_seed(0)
    layer = GaussianNoise(sigma=0.3).train()
    x = torch.randn(200, 100)
    noise = layer(x) - x
    assert_normal(noise, 0.3)
    assert not torch.equal(layer(x), layer(x))  # fresh noise each call
    layer.eval()
    assert layer(x) is x
    assert GaussianNoise(0.0).train()(x) is x
    with pytest.raises(ValueError, match=">= 0"):
        GaussianNoise(-0.1)


def test_add_weight_noise_adds_exactly_the_returned_noise():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(100, 80), nn.Linear(80, 60))
    before = [p.detach().clone() for p in model.parameters()]
    noises = add_weight_noise_(model, 0.05, torch.Generator().manual_seed(7))
    for p, b, n in zip(model.parameters(), before, noises, strict=True):
        assert torch.equal(p.detach(), b + n)
    assert_normal(torch.cat([n.flatten() for n in noises]), 0.05)
    again = add_weight_noise_([torch.zeros(80, 100)], 0.05, torch.Generator().manual_seed(7))
    assert torch.equal(again[0], noises[0])  # reproducible from the generator


def test_weight_noise_context_perturbs_forward_and_backward_then_restores_exactly():
    torch.manual_seed(2)
    layer = nn.Linear(6, 4)
    x = torch.randn(16, 6)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    with weight_noise(layer, 0.5) as (w_noise, b_noise):
        out = layer(x)
        (out**2).sum().backward()
    # The gradient is the one at the perturbed weights w + eps ...
    w_noisy, b_noisy = w0 + w_noise, b0 + b_noise
    torch.testing.assert_close(out, x @ w_noisy.T + b_noisy)
    expected_grad = 2 * (x @ w_noisy.T + b_noisy).T @ x
    torch.testing.assert_close(layer.weight.grad, expected_grad)
    assert not torch.allclose(layer.weight.grad, 2 * (x @ w0.T + b0).T @ x)
    # ... while the weights the optimizer will update are the clean ones, bit for bit.
    assert torch.equal(layer.weight, w0) and torch.equal(layer.bias, b0)


def test_weight_noise_context_restores_after_an_exception():
    layer = nn.Linear(3, 3)
    w0 = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), weight_noise(layer.parameters(), 1.0):
        assert not torch.equal(layer.weight, w0)
        raise RuntimeError("boom")
    assert torch.equal(layer.weight, w0)


def test_gradient_noise_changes_only_the_gradients():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 10))
    model[0](torch.randn(5, 100)).sum().backward()  # model[1] gets no gradient
    params = [p.detach().clone() for p in model.parameters()]
    grads = [model[0].weight.grad.clone(), model[0].bias.grad.clone()]
    add_gradient_noise_(model, 0.2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    noise = model[0].weight.grad - grads[0]
    assert_normal(noise, 0.2)
    assert not torch.equal(model[0].bias.grad, grads[1])
    assert model[1].weight.grad is None and model[1].bias.grad is None


def test_annealed_gradient_noise_schedule():
    # Neelakantan et al. 2015 anneal the variance: sigma_t^2 = eta / (1 + t)^gamma.
    assert gradient_noise_std(0, eta=0.3) == pytest.approx(math.sqrt(0.3))
    assert gradient_noise_std(99, eta=0.3, gamma=0.55) ** 2 == pytest.approx(0.3 / 100**0.55)
    stds = [gradient_noise_std(t) for t in range(0, 1000, 100)]
    assert all(a > b for a, b in itertools.pairwise(stds))
    with pytest.raises(ValueError):
        gradient_noise_std(-1)


def unit_norms(w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.stack([w.select(dim, j).norm() for j in range(w.shape[dim])])


@pytest.mark.parametrize("make", [lambda: nn.Linear(30, 12), lambda: nn.Conv2d(3, 12, 3)])
def test_max_norm_projects_long_unit_vectors_only(make):
    torch.manual_seed(4)
    layer = make()
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.2, 5, 12).view(-1, *[1] * (layer.weight.dim() - 1)))
        layer.bias.mul_(100)
    c = float(unit_norms(layer.weight.detach()).median())
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    long = unit_norms(w0) > c
    assert apply_max_norm_(nn.Sequential(layer, nn.BatchNorm1d(4)), c) == int(long.sum()) == 6
    norms = unit_norms(layer.weight)
    assert torch.all(norms <= c * (1 + 1e-6))
    torch.testing.assert_close(norms[long], torch.full((6,), c))  # long rows land on the ball's surface
    assert torch.equal(layer.weight[~long], w0[~long])  # short rows untouched, bit for bit
    scale = (layer.weight[long] / w0[long]).flatten(1)  # a single positive factor per unit: same direction
    torch.testing.assert_close(scale, scale[:, :1].expand_as(scale))
    assert torch.all(scale > 0) and torch.all(scale < 1)
    assert torch.equal(layer.bias, b0)  # biases are not constrained


def test_max_norm_on_tensors_with_a_chosen_unit_dim():
    torch.manual_seed(5)
    w = torch.randn(8, 5) * 3
    bias = torch.randn(8) * 10
    b0 = bias.clone()
    apply_max_norm_([w, bias], 1.0, dim=1)  # columns are the units here
    assert torch.all(unit_norms(w, dim=1) <= 1 + 1e-6)
    torch.testing.assert_close(unit_norms(w, dim=1), torch.ones(5))
    assert unit_norms(w, dim=0).max() > 1  # rows were not what was constrained
    assert torch.equal(bias, b0)  # 1-D tensors are skipped
    with pytest.raises(ValueError, match="max_norm"):
        apply_max_norm_([w], 0.0)


@pytest.mark.parametrize("model_name", ["mlp", "convnet", "resnet", "fmpnet"])
def test_max_norm_constrains_hidden_units_and_leaves_the_output_layer_free(model_name):
    """Srivastava et al. 2014 bound each hidden unit's incoming weights; the output layer is free unless
    reg.max_norm_output=true (main at 151a8ea constrained it too)."""
    from ablate.config.schema import RegConfig
    from ablate.models import MLP, ConvNet, FMPNet, ResNet
    from ablate.training.regularization import StepRegularizers

    factory = {"mlp": MLP, "convnet": ConvNet, "resnet": ResNet, "fmpnet": FMPNet}[model_name]
    for include_output in (False, True):
        torch.manual_seed(0)
        model = factory(input_shape=(1, 8, 8), num_classes=7)
        layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        output = layers[-1]
        assert isinstance(output, nn.Linear) and output.out_features == 7  # the last weight layer is the output
        with torch.no_grad():
            for layer in layers:
                layer.weight.mul_(50)  # every unit far above the cap
        before = output.weight.detach().clone()
        hooks = StepRegularizers(RegConfig(max_norm=0.5, max_norm_output=include_output), model)
        hooks.after_optimizer_step()
        for layer in layers[:-1]:
            assert unit_norms(layer.weight).max() <= 0.5 + 1e-5
        if include_output:
            assert unit_norms(output.weight).max() <= 0.5 + 1e-5
        else:
            assert torch.equal(output.weight, before)

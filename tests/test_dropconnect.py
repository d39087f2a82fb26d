"""DropConnect masks weights, not activations; its sampled inference matches the training distribution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.layers.dropconnect import DropConnectConv2d, DropConnectLinear
from ablate.layers.dropconnect_convert import convert_to_dropconnect

P = 0.5


def probe_batch(n_in: int, x: torch.Tensor) -> torch.Tensor:
    """Zero input (reads the bias), one-hot inputs (read the effective weight columns), then ``x``."""
    return torch.cat([torch.zeros(1, n_in), torch.eye(n_in), x])


def split_probe(layer: DropConnectLinear, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bias, effective weight, outputs for x) from one forward pass over ``probe_batch``."""
    n = layer.in_features
    bias = out[0]
    return bias, (out[1 : n + 1] - bias).T, out[n + 1 :]


def test_per_batch_mask_drops_weight_entries_not_units():
    torch.manual_seed(0)
    layer = DropConnectLinear(64, 32, p=P).train()
    x = torch.randn(16, 64)
    x[8:] = x[0]  # identical inputs must give identical rows: one weight mask for the whole mini-batch
    with torch.no_grad():
        bias, w_eff, out = split_probe(layer, layer(probe_batch(64, x)))
    torch.testing.assert_close(bias, layer.bias.detach())  # biases are not dropped
    dropped = w_eff.abs() < 1e-6
    assert abs(dropped.float().mean().item() - P) < 0.05  # ~p of the 2048 weight entries are zero
    kept = ~dropped
    torch.testing.assert_close(w_eff[kept], layer.weight.detach()[kept] / (1 - P))  # inverted scaling
    torch.testing.assert_close(out, x @ w_eff.T + bias)  # every row sees the same masked matrix
    assert torch.equal(out[8:], out[0].expand(8, -1))
    # Dropout would zero whole output units; with half the weights gone no output is exactly zero.
    assert (out == 0).sum() == 0
    assert dropped.any(dim=1).all() and not dropped.all(dim=1).any()  # every unit loses some inputs, not all


def test_gradient_of_dropped_weights_is_exactly_zero():
    torch.manual_seed(1)
    layer = DropConnectLinear(32, 16, p=P).train()
    out = layer(probe_batch(32, torch.randn(8, 32)))
    _, w_eff, _ = split_probe(layer, out.detach())
    (out * torch.randn_like(out)).sum().backward()
    dropped = w_eff.abs() < 1e-6
    assert dropped.sum() > 100
    assert torch.all(layer.weight.grad[dropped] == 0)
    assert torch.all(layer.weight.grad[~dropped] != 0)


def test_mask_is_fresh_on_every_forward():
    torch.manual_seed(2)
    layer = DropConnectLinear(16, 8, p=0.3).train()
    with torch.no_grad():
        masks = [split_probe(layer, layer(probe_batch(16, torch.zeros(0, 16))))[1].abs() < 1e-6 for _ in range(100)]
    masks = torch.stack(masks).float()
    assert not torch.equal(masks[0], masks[1])
    assert abs(masks.mean().item() - 0.3) < 0.02  # 12,800 Bernoulli draws
    per_entry = masks.mean(0)  # every entry is dropped on ~30% of the passes, none always or never
    assert per_entry.min() > 0.1 and per_entry.max() < 0.5


def test_eval_mean_mode_is_the_plain_layer_and_deterministic():
    torch.manual_seed(3)
    layer = DropConnectLinear(20, 10, p=P, activation=nn.ReLU()).eval()
    x = torch.randn(5, 20)
    expected = F.relu(F.linear(x, layer.weight, layer.bias))
    assert torch.equal(layer(x), expected)
    assert torch.equal(layer(x), expected)
    assert not torch.equal(layer.train()(x), expected)


def test_per_sample_masks_differ_and_match_a_per_sample_reference():
    torch.manual_seed(4)
    layer = DropConnectLinear(12, 6, p=P, per_sample=True).train()
    x = torch.randn(1, 3, 12).expand(8, 3, 12).contiguous()  # identical samples, 3 positions each
    torch.manual_seed(40)
    masks = layer.sample_mask(8)
    torch.manual_seed(40)
    out = layer(x)
    with torch.no_grad():
        ref = torch.stack([F.linear(x[b], layer.weight * masks[b] / (1 - P), layer.bias) for b in range(8)])
    torch.testing.assert_close(out, ref)
    rows = out[:, 0]
    assert all(not torch.allclose(rows[i], rows[j]) for i in range(8) for j in range(i + 1, 8))


def training_moments(layer: nn.Module, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo mean/var of the training output over ``n`` independent masks (per-sample mode)."""
    layer.train()
    with torch.no_grad():
        out = layer(x.expand(n, *x.shape[1:]).contiguous())
    return out.mean(0), out.var(0)


def test_sampled_inference_gaussian_has_the_training_moments():
    """Paper Sec. 3: u ~ N(E[u], Var[u]) with E = W v + b, Var = p/(1-p) (W*W)(v*v) under inverted scaling."""
    torch.manual_seed(5)
    layer = DropConnectLinear(32, 8, p=P, per_sample=True, inference="sample", num_samples=1)
    v = torch.randn(1, 32)
    with torch.no_grad():
        mean = F.linear(v, layer.weight, layer.bias)[0]
        var = (F.linear(v * v, layer.weight**2) * P / (1 - P))[0]
    mc_mean, mc_var = training_moments(layer, v, 8000)
    layer.eval()
    with torch.no_grad():
        samples = layer(v.expand(8000, 32))
    sd = var.sqrt()
    for m, s2 in ((mc_mean, mc_var), (samples.mean(0), samples.var(0))):
        assert torch.all((m - mean).abs() < 0.05 * sd)  # 4.5 standard errors
        assert torch.all((s2 / var - 1).abs() < 0.08)
    assert samples.var(0).min() > 0.5 * var.min()  # eval in "sample" mode really is stochastic


def test_sampled_inference_averages_after_the_activation():
    torch.manual_seed(6)
    layer = DropConnectLinear(64, 16, p=P, per_sample=True, inference="sample", activation=nn.ReLU())
    v = torch.randn(1, 64)
    with torch.no_grad():
        mu = F.linear(v, layer.weight, layer.bias)[0]
        sd = (F.linear(v * v, layer.weight**2) * P / (1 - P))[0].sqrt()
    normal = torch.distributions.Normal(0.0, 1.0)
    closed_form = mu * normal.cdf(mu / sd) + sd * normal.log_prob(mu / sd).exp()  # E[relu(N(mu, sd^2))]
    layer.num_samples = 20000
    layer.eval()
    with torch.no_grad():
        sampled = layer(v)[0]
        layer.inference = "mean"
        mean_field = layer(v)[0]
    assert torch.all((sampled - closed_form).abs() < 0.04 * sd)
    assert torch.all(sampled >= mean_field - 0.04 * sd)  # Jensen: E[relu(u)] >= relu(E[u])
    assert (sampled - mean_field).max() > 0.3 * sd.mean()
    # ... and it is the sampled rule that tracks what the network computes in training (64 inputs: CLT).
    train_mean, _ = training_moments(layer, v, 20000)
    assert (sampled - train_mean).abs().mean() < 0.3 * (mean_field - train_mean).abs().mean()


def conv_probe(c: int, k: int) -> torch.Tensor:
    """One-hot k x k images: with no padding each reads one tap (channel, i, j) of every filter."""
    return torch.eye(c * k * k).view(c * k * k, c, k, k)


def test_conv_mask_drops_filter_taps_shared_over_positions():
    torch.manual_seed(7)
    layer = DropConnectConv2d(3, 4, 3, p=P).train()
    x = torch.randn(2, 3, 9, 9)
    n = 27
    with torch.no_grad():
        bias = layer(torch.zeros(1, 3, 3, 3)).view(4)  # separate call, only to read the (unmasked) bias
        torch.testing.assert_close(bias, layer.bias)
        w_eff = layer(conv_probe(3, 3)).view(n, 4) - bias  # row (c, i, j) holds tap (c, i, j) of each filter
        w_eff = w_eff.T.reshape(4, 3, 3, 3)
    dropped = w_eff.abs() < 1e-6
    assert 0.3 < dropped.float().mean() < 0.7
    torch.testing.assert_close(w_eff[~dropped], layer.weight.detach()[~dropped] / (1 - P))
    # One mask per forward for the batch: rebuild the probe and x in a single call and compare.
    with torch.no_grad():
        probe = F.pad(conv_probe(3, 3), (0, 6, 0, 6))  # same taps, now 9 x 9 so it batches with x
        out = layer(torch.cat([probe, x]))
        w_eff = (out[:n, :, 0, 0] - layer.bias).T.reshape(4, 3, 3, 3)
    torch.testing.assert_close(out[n:], F.conv2d(x, w_eff, layer.bias))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"stride": 2, "padding": 1, "groups": 2},
        {"padding": 1, "padding_mode": "reflect", "dilation": 2},
    ],
)
def test_per_sample_conv_matches_a_per_sample_reference(kwargs):
    torch.manual_seed(8)
    layer = DropConnectConv2d(4, 6, 3, p=0.4, per_sample=True, **kwargs).train()
    x = torch.randn(5, 4, 8, 8)
    torch.manual_seed(80)
    masks = layer.sample_mask(5)
    torch.manual_seed(80)
    out = layer(x)
    with torch.no_grad():
        ref = torch.cat(
            [layer._conv_forward(x[b : b + 1], layer.weight * masks[b] / 0.6, layer.bias) for b in range(5)]
        )
    torch.testing.assert_close(out, ref)
    same = layer(x[:1].expand(4, -1, -1, -1).contiguous())
    assert not torch.allclose(same[0], same[1])


def test_conv_eval_modes():
    torch.manual_seed(9)
    layer = DropConnectConv2d(2, 3, 3, padding=1, p=0.3, per_sample=True, inference="sample", num_samples=1)
    v = torch.randn(1, 2, 5, 5)
    mc_mean, mc_var = training_moments(layer, v, 6000)
    layer.eval()
    with torch.no_grad():
        samples = layer(v.expand(6000, -1, -1, -1))
        var = layer._conv_forward(v * v, layer.weight**2, None)[0] * 0.3 / 0.7
    sd = var.sqrt()
    mean = F.conv2d(v, layer.weight, layer.bias, padding=1)[0]
    for m, s2 in ((mc_mean, mc_var), (samples.mean(0), samples.var(0))):
        assert torch.all((m - mean).abs() < 0.06 * sd)
        assert torch.all((s2 / var - 1).abs() < 0.1)
    layer.inference = "mean"
    assert torch.equal(layer(v), F.conv2d(v, layer.weight, layer.bias, padding=1))


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def test_converter_replaces_all_but_the_output_layer_and_keeps_weights():
    torch.manual_seed(10)
    model = mlp()
    originals = [m.weight for m in model if isinstance(m, nn.Linear)]
    x = torch.randn(4, 8)
    before = model(x)
    assert convert_to_dropconnect(model, p=0.5) == 2
    assert [type(m) for m in model][::2] == [DropConnectLinear, DropConnectLinear, nn.Linear]
    assert [m.weight for m in model if isinstance(m, nn.Linear)] == originals  # same Parameter objects
    assert model[0].p == 0.5
    torch.testing.assert_close(model.eval()(x), before)  # mean-field eval == the original network
    assert not torch.allclose(model.train()(x), before)

    assert convert_to_dropconnect(mlp(), p=0.2, exclude_last=False) == 3


def test_converter_conv_option_and_sampled_inference_folds_activation():
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(),
        nn.Linear(8, 2),
    )  # fmt: skip
    assert convert_to_dropconnect(cnn, p=0.1) == 1
    with pytest.warns(UserWarning, match=r"no following activation.*'2'"):
        assert convert_to_dropconnect(cnn, p=0.1, layers="linear+conv", inference="sample") == 2
    assert isinstance(cnn[0], DropConnectConv2d) and isinstance(cnn[1], nn.Identity)
    assert isinstance(cnn[0].activation, nn.ReLU) and cnn[0].inference == "sample"
    assert isinstance(cnn[4], DropConnectLinear) and type(cnn[6]) is nn.Linear  # already converted: kept


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_p_is_rejected(p):
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        convert_to_dropconnect(mlp(), p=p)
    with pytest.raises(ValueError, match="p must be"):
        DropConnectLinear(3, 3, p=p)


def test_p_zero_is_the_plain_layer_in_training():
    torch.manual_seed(11)
    layer = DropConnectLinear(5, 4, p=0.0, per_sample=True).train()
    x = torch.randn(3, 5)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert math.isclose(layer.p, 0.0)


def test_per_example_masks_are_independent_bernoulli_draws_at_rate_p():
    torch.manual_seed(12)
    layer = DropConnectLinear(40, 30, p=0.3, per_sample=True)
    masks = layer.sample_mask(64)  # (B, out, in), True = kept
    assert masks.shape == (64, 30, 40) and masks.dtype == torch.bool
    assert abs(1 - masks.float().mean().item() - 0.3) < 0.01  # 76,800 draws: ~6 standard errors
    agree = (masks[0] == masks[1:]).float().mean().item()  # independent masks agree on p^2 + (1-p)^2 of the entries
    assert abs(agree - (0.3**2 + 0.7**2)) < 0.02


def test_per_example_masks_give_identical_inputs_different_outputs_per_batch_masks_do_not():
    torch.manual_seed(13)
    x = torch.randn(1, 24).expand(16, 24)
    for per_sample in (True, False):
        layer = DropConnectLinear(24, 10, p=P, per_sample=per_sample).train()
        with torch.no_grad():
            out = layer(x)
        distinct = len({tuple(row.tolist()) for row in out})
        assert distinct == (16 if per_sample else 1)


def test_per_example_expected_output_is_the_dense_layer():
    """Inverted scaling: averaged over masks, the training output is W x + b (the eval-mode "mean" output)."""
    torch.manual_seed(14)
    layer = DropConnectLinear(32, 8, p=P, per_sample=True).train()
    x = torch.randn(1, 32)
    with torch.no_grad():
        out = layer(x.expand(20000, 32))
        dense = layer.eval()(x)[0]
    sd = out.std(0)
    assert torch.all((out.mean(0) - dense).abs() < 4 * sd / math.sqrt(20000))


@pytest.mark.parametrize("chunk_entries", [1, 2 * 6 * 7, 1 << 24])  # one example per chunk, uneven chunks, one chunk
def test_per_example_gradients_match_autograd_through_explicit_masks(monkeypatch, chunk_entries):
    """The chunked autograd function (bool masks saved, masked weights rebuilt in backward) is exact."""
    import ablate.layers.per_example_mask as per_example

    monkeypatch.setattr(per_example, "_CHUNK_ENTRIES", chunk_entries)
    torch.manual_seed(15)
    layer = DropConnectLinear(7, 6, p=0.4, per_sample=True).double().train()
    x = torch.randn(5, 3, 7, dtype=torch.double, requires_grad=True)  # 3 positions per example share its mask
    torch.manual_seed(150)
    masks = layer.sample_mask(5)
    torch.manual_seed(150)
    out = layer(x)
    ref = torch.stack([F.linear(x[b], layer.weight * masks[b] / 0.6, layer.bias) for b in range(5)])
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, layer.weight, layer.bias), g)
    want = torch.autograd.grad(ref, (x, layer.weight, layer.bias), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_mask_knob_value_is_a_one_line_error(make_cfg):
    from hydra.errors import ConfigCompositionException

    from ablate.runtime.cli import hydra_error_line

    with pytest.raises(ConfigCompositionException) as info:
        make_cfg("reg=dropconnect", "reg.dropconnect_per_sample=maybe")
    line = hydra_error_line(info.value)
    assert "\n" not in line
    assert "reg.dropconnect_per_sample=maybe" in line and "not a valid bool" in line


def test_mask_benchmark_builds_each_variant_and_times_a_step():
    from tests.conftest import REPO, load_script

    bench = load_script(REPO / "experiments/dropconnect/bench_masks.py", "dropconnect_bench_masks")
    kinds = {
        masks: [m.per_sample for m in bench.net(masks).modules() if isinstance(m, DropConnectLinear)]
        for masks in ("none", "batch", "example")
    }
    assert kinds == {"none": [], "batch": [False, False], "example": [True, True]}
    times = bench.ms_per_step("batch", 1)
    assert len(times) == 1 and times[0] > 0

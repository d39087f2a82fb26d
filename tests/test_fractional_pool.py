"""Fractional max-pooling: Graham's boundary sequences, region layouts, exact pooling, test-time averaging."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ablate.layers.fractional_pool import (
    FractionalMaxPool2d,
    fmp_boundaries,
    fmp_output_size,
    fmp_pool2d,
    fmp_regions,
    fmp_span,
    fmp_test_time_average,
)

SIZES = [(32, 22), (25, 18), (10, 7), (7, 4), (5, 3), (9, 8), (12, 12), (30, 16)]
MODES = ["random", "pseudorandom"]


@pytest.mark.parametrize(
    ("hw", "kwargs", "expected"),
    [
        ((32, 32), {}, (23, 23)),  # round(32 / sqrt 2) = round(22.6) = 23 (Graham's rounding, not floor)
        ((25, 18), {}, (18, 13)),  # 17.7 -> 18, 12.7 -> 13
        ((10, 7), {"ratio": 1.5}, (7, 5)),  # 6.67 -> 7, 4.67 -> 5
        ((12, 9), {"ratio": (2.0, 1.25)}, (6, 7)),
        ((33, 9), {"ratio": (1.1, 9 / 7)}, (30, 7)),  # 29.99..., 6.99... in floats
        ((1, 2), {}, (1, 1)),  # never below 1
        ((2, 3), {"ratio": 1.1}, (1, 2)),  # overlapping: at most n_in - 1 (each region steps at least one row)
        ((16, 9), {"output_size": (11, 5)}, (11, 5)),
        ((16, 9), {"output_size": 7}, (7, 7)),
    ],
)
def test_output_size(hw, kwargs, expected):
    out = FractionalMaxPool2d(**kwargs)(torch.randn(2, 3, *hw))
    assert out.shape == (2, 3, *expected)


def test_output_size_rule_and_validation():
    assert [fmp_output_size(n, math.sqrt(2)) for n in (2, 3, 8, 23, 35, 100)] == [1, 2, 6, 16, 25, 71]
    assert fmp_output_size(3, 1.1) == 3 and fmp_output_size(3, 1.1, overlapping=True) == 2
    with pytest.raises(ValueError, match="ratio must be >= 1"):
        FractionalMaxPool2d(ratio=0.9)
    with pytest.raises(ValueError, match="either ratio or output_size"):
        FractionalMaxPool2d(ratio=1.5, output_size=4)
    with pytest.raises(ValueError, match="n_out <= n_in"):
        fmp_boundaries(5, 6)
    with pytest.raises(ValueError, match="mode"):
        fmp_boundaries(5, 4, mode="uniform")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n_in", "n_out"), SIZES)
def test_boundary_sequence_properties(mode, n_in, n_out):
    gen = torch.Generator().manual_seed(n_in * 100 + n_out)
    for _ in range(20):
        a = fmp_boundaries(n_in, n_out, mode, gen)
        assert a.dtype == torch.long and a.shape == (n_out + 1,)
        assert a[0] == 0 and a[-1] == n_in
        inc = a.diff()
        k = n_in // n_out
        assert set(inc.tolist()) <= {k, k + 1}
        assert int((inc == k + 1).sum()) == n_in - k * n_out  # for 1 < alpha < 2: exactly n_in - n_out twos
        if 1 < n_in / n_out < 2:
            assert set(inc.tolist()) == {1, 2}


def test_random_mode_places_long_steps_uniformly():
    gen = torch.Generator().manual_seed(0)
    incs = torch.stack([fmp_boundaries(25, 18, "random", gen).diff() for _ in range(2000)])
    freq = (incs == 2).float().mean(0)  # every position is a 2 with probability 7/18
    assert torch.all((freq - 7 / 18).abs() < 0.05)


def window_imbalance(a: torch.Tensor, alpha: float) -> float:
    """max over windows of |sum of m consecutive increments - m * alpha|."""
    n = len(a) - 1
    return max(abs(int(a[j] - a[i]) - (j - i) * alpha) for i in range(n) for j in range(i + 1, n + 1))


@pytest.mark.parametrize("u", [0.0, 0.13, 0.5, 0.77, 0.999])
@pytest.mark.parametrize(("n_in", "n_out"), SIZES)
def test_pseudorandom_follows_grahams_formula(u, n_in, n_out):
    alpha = n_in / n_out
    expected = [math.ceil(alpha * (i + u)) - math.ceil(alpha * u) for i in range(n_out + 1)]
    a = fmp_boundaries(n_in, n_out, "pseudorandom", u=u)
    assert a.tolist() == expected
    assert window_imbalance(a, alpha) < 1  # ceil-sequences spread the 2s evenly: every window is balanced


def test_pseudorandom_offset_is_drawn_per_call_and_reproducible():
    draws = [fmp_boundaries(32, 22, "pseudorandom", torch.Generator().manual_seed(s)) for s in range(20)]
    assert len({tuple(a.tolist()) for a in draws}) > 5  # u ~ U(0, 1) shifts where the 2s fall
    again = fmp_boundaries(32, 22, "pseudorandom", torch.Generator().manual_seed(0))
    assert torch.equal(again, draws[0])


def test_random_sequences_are_not_balanced_like_pseudorandom_ones():
    gen = torch.Generator().manual_seed(1)
    imbalances = [window_imbalance(fmp_boundaries(32, 22, "random", gen), 32 / 22) for _ in range(10)]
    assert max(imbalances) > 1.5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n_in", "n_out"), SIZES)
def test_region_layouts(mode, n_in, n_out):
    a = fmp_boundaries(n_in, n_out, mode, torch.Generator().manual_seed(2))
    starts, ends = fmp_regions(a, overlapping=False)
    covered = torch.cat([torch.arange(s, e + 1) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])
    assert covered.tolist() == list(range(n_in))  # disjoint: a partition of the rows, in order

    # Overlapping: the sequence ends at n_in - 1 (the paper's 1..N_in, 0-based), so regions [a_{i-1}, a_i] tile the
    # input with one shared row between neighbours and the last one ends on the last row, full size.
    if n_out == n_in:
        return  # overlapping regions step at least one row each: n_out <= n_in - 1
    a = fmp_boundaries(fmp_span(n_in, True), n_out, mode, torch.Generator().manual_seed(2))
    starts, ends = fmp_regions(a, overlapping=True)
    assert torch.equal(starts, a[:-1])
    assert torch.equal(ends[:-1], starts[1:])  # each region shares exactly its last row with the next
    assert ends[-1] == n_in - 1
    assert torch.equal(ends - starts + 1, a.diff() + 1)  # every region, the last included, is unclipped


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n_in", [35, 24, 16, 10, 6, 3, 2])  # the inputs of the paper's MNIST net's FMP layers
def test_overlapping_layer_never_clips_its_last_region(mode, n_in):
    """Every overlapping region of the layer is a full [a_{i-1}, a_i] of 2 or 3 rows, the last one included, and the
    regions cover every row (the clipped last region of main at 151a8ea had 1 or 2)."""
    torch.manual_seed(n_in)
    pool = FractionalMaxPool2d(mode=mode, overlapping=True)
    for _ in range(10):
        out = pool(torch.randn(1, 1, n_in, n_in))
        for boundaries in pool.last_boundaries:
            starts, ends = fmp_regions(boundaries, overlapping=True)
            sizes = (ends - starts + 1).tolist()
            assert set(sizes) <= {2, 3}, sizes
            assert int(starts[0]) == 0 and int(ends[-1]) == n_in - 1
        assert out.shape[-1] == fmp_output_size(n_in, math.sqrt(2), overlapping=True)


def brute_force_pool(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, overlapping: bool) -> torch.Tensor:
    rs, re = fmp_regions(rows, overlapping)
    cs, ce = fmp_regions(cols, overlapping)
    out = [
        [x[..., r0 : r1 + 1, c0 : c1 + 1].amax(dim=(-2, -1)) for c0, c1 in zip(cs.tolist(), ce.tolist(), strict=True)]
        for r0, r1 in zip(rs.tolist(), re.tolist(), strict=True)
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in out], dim=-2)


@pytest.mark.parametrize("overlapping", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("hw", "ratio"), [((13, 10), math.sqrt(2)), ((9, 17), 1.6), ((8, 8), 2.5)])
def test_pooling_equals_brute_force_max_over_regions(overlapping, mode, hw, ratio):
    torch.manual_seed(3)
    pool = FractionalMaxPool2d(ratio=ratio, mode=mode, overlapping=overlapping)
    x = torch.randn(2, 3, *hw, requires_grad=True)
    out = pool(x)
    rows, cols = pool.last_boundaries
    x_ref = x.detach().clone().requires_grad_(True)
    ref = brute_force_pool(x_ref, rows, cols, overlapping)
    assert torch.equal(out, ref)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)  # gradient routed to the same maxima
    torch.testing.assert_close(fmp_pool2d(x, rows, cols, overlapping), out)
    assert pool(x[0]).shape == out.shape[1:]  # unbatched (C, H, W) input


def test_each_forward_draws_new_regions_shared_by_the_batch():
    torch.manual_seed(4)
    pool = FractionalMaxPool2d(mode="random").train()
    image = torch.randn(1, 2, 32, 32)
    x = image.expand(4, -1, -1, -1)
    first = pool(x)
    b1 = pool.last_boundaries
    second = pool(x)
    b2 = pool.last_boundaries
    assert not (torch.equal(b1[0], b2[0]) and torch.equal(b1[1], b2[1]))
    assert not torch.equal(first, second)
    assert torch.equal(first, first[:1].expand_as(first))  # one region sample for the whole batch

    pool.eval()  # still stochastic at test time by default
    assert not torch.equal(pool(image), pool(image))


@pytest.mark.parametrize("mode", MODES)
def test_rows_and_columns_get_independent_sequences(mode):
    torch.manual_seed(9)
    pool = FractionalMaxPool2d(mode=mode)
    differ = 0
    for _ in range(10):
        pool(torch.randn(1, 1, 32, 32))
        rows, cols = pool.last_boundaries
        differ += not torch.equal(rows, cols)
    assert differ >= 5


def test_eval_fixed_seed_makes_evaluation_deterministic():
    torch.manual_seed(5)
    pool = FractionalMaxPool2d(eval_fixed_seed=123).eval()
    x = torch.randn(2, 3, 20, 20)
    y = pool(x)
    assert torch.equal(pool(x), y)
    assert torch.equal(FractionalMaxPool2d(eval_fixed_seed=123).eval()(x), y)
    assert not torch.equal(FractionalMaxPool2d(eval_fixed_seed=124).eval()(x), y)
    pool.train()
    assert not torch.equal(pool(x), pool(x))


def small_model() -> nn.Module:
    torch.manual_seed(6)
    return nn.Sequential(
        FractionalMaxPool2d(mode="random", overlapping=True), nn.Flatten(), nn.Linear(2 * 11 * 11, 5)
    ).train()


def test_test_time_average_is_the_mean_of_repeated_predictions():
    model = small_model()
    x = torch.randn(3, 2, 16, 16)
    torch.manual_seed(7)
    avg = fmp_test_time_average(model, x, repeats=6)
    assert model.training  # mode restored
    torch.manual_seed(7)
    model.eval()
    with torch.no_grad():
        preds = [model(x).softmax(-1) for _ in range(6)]
    torch.testing.assert_close(avg, torch.stack(preds).mean(0))
    torch.testing.assert_close(avg.sum(-1), torch.ones(3))  # averaged class probabilities
    assert not torch.allclose(preds[0], preds[1])  # the passes really differ
    torch.manual_seed(7)
    logits = fmp_test_time_average(model, x, repeats=6, softmax=False)
    torch.manual_seed(7)
    torch.testing.assert_close(logits, torch.stack([model(x) for _ in range(6)]).mean(0).detach())


def test_test_time_average_reduces_variance():
    model = small_model()
    x = torch.randn(1, 2, 16, 16)
    torch.manual_seed(8)
    single = torch.stack([fmp_test_time_average(model, x, repeats=1) for _ in range(30)])
    averaged = torch.stack([fmp_test_time_average(model, x, repeats=16) for _ in range(30)])
    ratio = averaged.var(0).sum() / single.var(0).sum()
    assert ratio < 1 / 4  # ~1/16 for independent passes
    with pytest.raises(ValueError, match="repeats"):
        fmp_test_time_average(model, x, repeats=0)


def test_repeated_test_passes_also_report_the_first_pass_alone():
    """With R > 1 test passes, test/acc averages the R predictions and test/acc_single_pass scores the first one."""
    from ablate.training.module import ClassifierModule
    from ablate.training.module_config import Evaluation, Network
    from ablate.training.step_metrics import ClassificationStats

    class Cycling(torch.nn.Module):  # pass k predicts class k % 3 for every sample
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return torch.nn.functional.one_hot(torch.full((len(x),), (self.calls - 1) % 3), 3).float() * 10

    module = ClassifierModule(Network(Cycling(), torch.zeros(1), torch.ones(1)), evaluation=Evaluation(repeats=4))
    x, targets = torch.zeros(5, 1, 2, 2), torch.zeros(5, dtype=torch.long)
    logits, first = module._eval_step((x, targets), ClassificationStats())
    assert module.model.calls == 4
    assert first.argmax(1).tolist() == [0] * 5  # the first pass alone
    assert logits.exp()[0].tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-3)  # passes 0, 1, 2, 0 averaged

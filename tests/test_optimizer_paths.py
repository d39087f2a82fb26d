"""experiments/optimizer_paths/draw.py: optimizers from configs/optimizer/*.yaml, a declared learning-rate sweep per
surface (Beale included), each method judged at its best rate, divergence counted as inf."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import REPO, load_script


@pytest.fixture(scope="module")
def draw():
    return load_script(REPO / "experiments/optimizer_paths/draw.py", "optimizer_paths_draw")


def test_the_grid_is_declared_up_front(draw):
    grid = np.array(draw.LR_GRID)
    assert len(grid) == 16 and grid[0] == pytest.approx(1e-4) and grid[-1] == pytest.approx(10.0)
    assert np.allclose(np.diff(np.log10(grid)), 1 / 3)  # 3 per decade, log-spaced
    assert set(draw.FUNCTIONS) == {"ravine", "ravine45", "saddle", "rosenbrock", "beale"}


def test_best_rate_of_a_sweep_decreases_every_surface(draw):
    """A short sweep: each method's best rate lowers f by 10x on the ravine and on Beale (from (1, 1.5), f = 41.25)."""
    grid = (0.003, 0.03, 0.3, 0.9)
    results = draw.sweep(functions=["ravine", "beale"], lrs=grid, steps=30)
    for fname, by_method in results.items():
        fn = draw.FUNCTIONS[fname]
        start = fn.f(*torch.tensor(fn.start, dtype=torch.float64)).item() - fn.f_min
        assert set(by_method) == set(draw.OPTIMIZERS) and [r.lr for r in by_method["adam"]] == list(grid)
        for method, runs in by_method.items():
            b = draw.best(runs)
            assert b.gap.shape == (31,) and b.gap[0] == pytest.approx(start)
            assert b.final < 0.1 * start, f"{fname}/{method}: {start:.3g} -> {b.final:.3g}"
            assert b.final == min(r.final for r in runs)


def test_diverged_runs_count_as_inf_and_are_never_best(draw):
    fn = draw.FUNCTIONS["rosenbrock"]
    runs = [draw.run(fn, "sgd", lr, steps=50) for lr in (1e-3, 1.0)]
    assert math.isinf(runs[1].final) and math.isinf(runs[1].steps_to_threshold)  # walls of curvature ~1000
    assert len(runs[1].path) < 51 and math.isfinite(runs[0].final)
    assert draw.best(runs).lr == 1e-3


def test_the_comparison_with_sgd_ranks_by_gap_then_steps(draw):
    def fake(final: float, hit: int) -> object:
        gap = np.full(11, 1.0)
        gap[hit:] = final
        return draw.Run("x", 0.1, np.zeros((11, 2)), gap)

    sgd = fake(1e-5, 8)
    assert draw.versus_sgd(fake(1e-6, 9), sgd) == "yes"  # lower gap wins
    assert draw.versus_sgd(fake(1e-4, 2), sgd) == "no"
    # both at float64 resolution: the gap ties, the steps to THRESHOLD decide
    assert draw.versus_sgd(fake(1e-14, 3), fake(0.0, 5)) == "yes"
    assert draw.versus_sgd(fake(0.0, 5), fake(1e-15, 5)) == "tie"
    assert draw.claim_verdict({"adagrad": "yes", "rmsprop": "no", "adam": "yes"}) == "partly (adagrad, adam)"
    assert draw.claim_verdict({"adagrad": "no", "rmsprop": "tie", "adam": "no"}) == "no"


def test_paths_come_from_the_configs(draw):
    fn = draw.FUNCTIONS["ravine"]
    node = draw.optimizer_config("nesterov", ["optimizer.lr=0.1"])
    # The config's own values, not defaults of this script: Nesterov momentum 0.9 from configs/optimizer/nesterov.yaml.
    assert node._target_ == "torch.optim.SGD" and node.nesterov is True and node.momentum == 0.9 and node.lr == 0.1
    assert draw.with_lr("nesterov", 0.1) == node  # the sweep's path: composed once, only lr set
    slow = draw.trajectory(fn, node, steps=5)
    fast = draw.trajectory(fn, draw.with_lr("nesterov", 0.3), steps=5)
    assert not torch.allclose(slow, fast)
    # momentum 0 in the config turns Nesterov's path into plain SGD's (torch refuses nesterov without momentum, so
    # compare against sgd.yaml at the same lr).
    heavy_ball_off = draw.optimizer_config("momentum", ["optimizer.lr=0.1", "optimizer.momentum=0"])
    no_momentum = draw.trajectory(fn, heavy_ball_off, 5)
    sgd = draw.trajectory(fn, draw.optimizer_config("sgd", ["optimizer.lr=0.1"]), 5)
    assert torch.allclose(no_momentum, sgd) and not torch.allclose(no_momentum, slow)


def test_turned_ravine_is_the_same_problem_for_sgd(draw):
    """SGD is rotation invariant: the same gaps on the turned ravine; AdaGrad's per-coordinate scaling is not."""
    sgd = [draw.run(draw.FUNCTIONS[f], "sgd", 0.3, steps=20).gap for f in ("ravine", "ravine45")]
    ada = [draw.run(draw.FUNCTIONS[f], "adagrad", 0.3, steps=20).gap for f in ("ravine", "ravine45")]
    assert np.allclose(*sgd, rtol=1e-9) and not np.allclose(*ada, rtol=1e-3)


def test_adaptive_methods_leave_the_saddle_first_at_equal_rate(draw):
    fn = draw.FUNCTIONS["saddle"]
    runs = {m: draw.run(fn, m, 0.05, steps=40) for m in ("sgd", "rmsprop", "adam")}
    # The start is 1e-3 off the ridge y = 0: SGD's escape grows like (1 + lr)^t, the adaptive steps are ~lr from step 1.
    assert math.isinf(draw.escape_step(runs["sgd"])) and runs["sgd"].path[-1, 1] < 0.1
    assert draw.escape_step(runs["rmsprop"]) < 40 and draw.escape_step(runs["adam"]) < 40


def test_report_and_figure(draw, tmp_path):
    results = draw.sweep(functions=["saddle", "beale"], optimizers=["sgd", *draw.ADAPTIVE], lrs=(0.01, 0.1), steps=5)
    text = draw.report(results)
    assert "| beale |" in text and "adaptive methods faster than SGD" in text and "steps to \\|y\\|" in text
    out = tmp_path / "paths.png"
    draw.draw(results, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

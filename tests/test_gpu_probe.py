"""The GPU path of the paper experiments (README "Paper-scale runs on a GPU", experiments/gpu_probe.py): every paper
experiment's one-line probe composes and trains, the README lists exactly those probes, every paper config states its
GPU estimate, and the estimate's arithmetic is the one its docstring writes."""

from __future__ import annotations

import pytest

from ablate.runtime.job import train
from tests.conftest import CONFIG_DIR, REPO, compose_config, load_script

probe = load_script(REPO / "experiments" / "gpu_probe.py", "gpu_probe_under_test")
PAPERS = sorted(probe.PAPERS)
# The probe's own overrides, made faster still: ResNet-110/164 on 2 CPU cores cost ~1 s per image batch of 64.
FASTEST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.synthetic.num_train=200",
    "data.synthetic.num_test=16",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
]


def test_every_paper_experiment_has_a_probe():
    """A paper-scale config (one with a _cpu twin) that the probe table forgets would have no GPU path."""
    configs = {p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")}
    assert {name for name in configs if f"{name}_cpu" in configs} == set(PAPERS)


@pytest.mark.slow  # ~2-4 s each on a quiet 2-core machine (the deep ResNets' one step), more under load
@pytest.mark.parametrize("name", PAPERS)
def test_probe_trains(tmp_path, name):
    overrides = probe.probe_overrides(name)
    assert overrides[:2] == [f"experiment={name}", "debug=fast"]
    fewer_passes = ["reg.fmp_test_repeats=2"] if name == "fractional_max_pooling" else []  # 12 passes: ~1 min on CPU
    summary = train(compose_config([*overrides, *FASTEST, *fewer_passes], tmp_path, fast=False), quiet=True)
    assert summary["epochs"] == 1
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0


def test_probe_is_two_epochs_of_the_papers_shape(tmp_path):
    """The probe as the README gives it (no test-only overrides): 2 epochs, the paper's image shape."""
    for name in ("swa", "fractional_max_pooling"):
        cfg = compose_config(probe.probe_overrides(name), tmp_path, fast=False)
        assert cfg.trainer.max_epochs == 2 and cfg.trainer.limit_train_batches == 5
        paper = probe.PAPERS[name]
        assert (cfg.data.synthetic.channels, cfg.data.synthetic.size) == (paper.channels, paper.size)
    assert cfg.data.pad == 4  # FMP keeps the paper's 36x36 input on synthetic data too


def test_readme_lists_every_probe_and_each_config_its_gpu_estimate():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Paper-scale runs on a GPU") :]
    for name in PAPERS:
        assert f"`{probe.probe_command(name)}`" in section, name
        header = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().split("defaults:")[0]
        assert "# GPU estimate: ~" in header and "estimated, not measured" in header.lower(), name
        assert "## GPU time" in (REPO / "experiments" / name / "README.md").read_text(), name


def test_run_seconds_is_the_documented_formula():
    f = probe.Flops(
        train=3e9, eval=1e9, repeats=2, batch=100, epochs=10, train_images=1000, val_images=200, dropconnect_weights=5
    )
    per_epoch = (1000 * 3e9 + 200 * 1e9 * 2) / 1e12 + 10 * 2e-3 + 10 * 8 * 100 * 5 * 4 / 1e9
    end = (1000 + probe.TEST_IMAGES) * 1e9 * 2 / 1e12
    assert probe.run_seconds(f, tflops=1.0, step_ms=2.0, gbps=1.0) == pytest.approx(10 * per_epoch + end)


def test_flop_count_of_an_mlp_is_its_matmuls():
    """adam's 784-1000-1000-10 network: 2 FLOPs per weight per image forward; backward skips the input's gradient."""
    f = probe.count_flops("adam")
    forward = 2 * (784 * 1000 + 1000 * 1000 + 1000 * 10)
    assert f.eval == forward
    assert f.train == pytest.approx(forward + 2 * forward - 2 * 784 * 1000)
    assert (f.epochs, f.batch, f.repeats) == (200, 128, 1)


def test_time_probe_reads_the_second_epoch_from_history(tmp_path):
    """--time's plumbing, on a few hundred images instead of the paper's 60,000."""
    small = ("data.synthetic.num_train=300", "data.synthetic.num_test=50", "data.val_size=0.1", "data.batch_size=64")
    t = probe.time_probe("adam", epochs=2, extra=("trainer.accelerator=cpu", *small))
    assert t["device"] == "cpu"
    assert 0 < t["s_per_epoch"] < t["wall_s"] and 0 < t["first_epoch_s"] < t["wall_s"]

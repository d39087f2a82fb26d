"""End-to-end training in-process through Hydra's compose API: every option composes and trains one epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.runtime.job import main, train
from tests.conftest import CONFIG_DIR, read_results


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def assert_trained(summary: dict) -> None:
    metrics = summary["metrics"]
    assert summary["epochs"] >= 1
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"):
        assert key in metrics, key
        assert metrics[key] == metrics[key], f"{key} is NaN"


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_trains(make_cfg, optimizer):
    extra = ["data.batch_size=320"] if optimizer == "lbfgs" else []
    assert_trained(train(make_cfg(f"optimizer={optimizer}", "model=mlp", *extra)))


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_scheduler_trains(make_cfg, scheduler):
    assert_trained(train(make_cfg(f"scheduler={scheduler}", "model=mlp", "trainer.max_epochs=2")))


@pytest.mark.parametrize(
    "model",
    [
        "mlp",
        "convnet",
        "resnet",
        "preresnet model.depth=20",
        "mlp model.activation=maxout model.batchnorm=true",
        "convnet model.downsample=maxpool",
    ],
)
def test_every_model_trains(make_cfg, model):
    name, *knobs = model.split()
    assert_trained(train(make_cfg(f"model={name}", *knobs)))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu", "tanh", "sigmoid", "maxout"])
def test_every_activation_trains(make_cfg, activation):
    assert_trained(train(make_cfg("model=convnet", f"model.activation={activation}")))


@pytest.mark.parametrize("data", ["digits", "synthetic data.synthetic.channels=3 data.synthetic.size=32"])
def test_other_data_sets_train(make_cfg, data):
    name, *knobs = data.split()
    assert_trained(train(make_cfg(f"data={name}", *knobs, "model=resnet")))


def test_fashion_mnist_default_composes_and_runs_a_few_batches(make_cfg):
    cfg = make_cfg("debug=fast", fast=False)
    cfg.trainer.max_epochs = 1
    summary = train(cfg)
    assert summary["metrics"]["test/acc"] > 0


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_trainer_configs(make_cfg, trainer):
    assert_trained(train(make_cfg(f"trainer={trainer}", "trainer.max_epochs=1", "trainer.accelerator=cpu")))


def test_results_json_describes_the_run(make_cfg, tmp_path):
    cfg = make_cfg("seed=0", "model=mlp")
    result = main(cfg)
    results = read_results(Path(cfg.paths.output_dir))
    assert results["status"] == "completed"
    assert results["seed"] == 0
    assert results["metrics"]["val/acc_best"] == pytest.approx(result)  # sweepers get a validation metric
    assert results["config"]["model"]["_target_"] == "ablate.models.MLP"
    assert results["num_params"] == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert results["data"]["train"] + results["data"]["val"] == 320
    assert results["epochs"] == 1 and results["wall_time_s"] > 0 and results["train_samples_per_s"] > 0
    assert "${" not in str(results["config"])  # resolved, no interpolations
    assert Path(results["checkpoint_last"]).is_file()

"""ablate.config.metric_registry: one direction per metric, asked by checkpoint "best", early stopping, plateau
schedules, top-k members and the table's wording (the sweeper's use is in test_search.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ablate.config import metric_registry
from ablate.config.rules import validate
from ablate.errors import ConfigError
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("metric", "lower"),
    [
        ("val/acc", False),
        ("val/acc_best", False),
        ("val/acc_ema_best", False),
        ("test/acc_top5_swa", False),
        ("val/acc_snapshot_ens3", False),
        ("val/loss", True),
        ("val/loss_best", True),
        ("val/nll_ema", True),
        ("test/ece", True),
        ("val/error", True),
        ("gap", True),
    ],
)
def test_direction_of_every_written_metric(metric: str, lower: bool) -> None:
    assert metric_registry.lower_is_better(metric) is lower
    assert metric_registry.mode(metric) == ("min" if lower else "max")


def test_unknown_metric_is_an_error() -> None:
    for name in ("val/f1", "val/nll_foo", "lr-AdamW/pg1", "loss"):
        with pytest.raises(ConfigError, match="unknown metric"):
            metric_registry.lower_is_better(name)


def test_recipe_metrics_follow_the_ensemble() -> None:
    per_epoch, end = metric_registry.recipe_val_metrics("none")
    assert per_epoch == ["val/loss", "val/acc", "val/acc_best", "val/loss_best"] and end == []
    per_epoch, end = metric_registry.recipe_val_metrics("ema")
    assert {"val/loss_ema", "val/acc_ema", "val/acc_ema_best"} <= set(per_epoch) and "val/nll_ema" in end
    _, end = metric_registry.recipe_val_metrics("snapshot", cycles=3)
    assert {"val/nll_snapshot_ens", "val/acc_snapshot3", "val/acc_snapshot_ens2"} <= set(end)
    for name in (*per_epoch, *end):
        assert metric_registry.is_known(name)


def test_monitor_modes_are_derived_from_the_registry(tmp_path: Path) -> None:
    # Before: the checkpoint kept mode=max on val/loss (a warning), early stopping / plateau on val/acc were refused.
    # mode stays null in the config (it is not mutated after checking); the objects built from it follow the monitor.
    from ablate.build.optimizer_plan import scheduler_fn
    from ablate.build.trainer import config_callbacks

    def callback(cfg, kind):
        return next(c for c in config_callbacks(cfg, has_val=True) if type(c).__name__ == kind)

    cfg = compose_config(["callbacks.model_checkpoint.monitor=val/loss"], tmp_path)
    assert validate(cfg) == [] and cfg.callbacks.model_checkpoint.mode is None
    assert callback(cfg, "ModelCheckpoint").mode == "min"
    cfg = compose_config(["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/acc"], tmp_path)
    validate(cfg)
    assert callback(cfg, "EarlyStopping").mode == "max" and callback(cfg, "ModelCheckpoint").mode == "max"
    cfg = compose_config(["scheduler=plateau", "scheduler.monitor=val/acc"], tmp_path)
    validate(cfg)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert scheduler_fn(cfg.scheduler)(optimizer).mode == "max"
    cfg = compose_config(["scheduler=plateau", "scheduler.monitor=val/acc", "scheduler.fn.mode=min"], tmp_path)
    with pytest.raises(ConfigError, match=r"scheduler\.fn\.mode=min contradicts monitor val/acc"):
        validate(cfg)


def test_callbacks_built_without_a_mode_follow_their_monitor() -> None:
    from ablate.training.callbacks import EarlyStopping, ModelCheckpoint

    assert ModelCheckpoint(monitor="val/nll_ema").mode == "min"
    assert ModelCheckpoint(monitor="val/acc").mode == "max"
    assert EarlyStopping(monitor="val/acc_best").mode == "max"
    with pytest.raises(ConfigError, match="unknown metric"):
        EarlyStopping(monitor="val/f1")


def test_top_k_and_table_wording_ask_the_registry() -> None:
    from ablate.evaluation import members
    from ablate.report import stats

    assert members.lower_is_better("val/error") is True  # was "maximise" (only loss/nll/ece prefixes were known)
    assert members.lower_is_better("val/acc_best", "min") is True  # metric_mode still overrides
    with pytest.raises(ConfigError, match=re.escape("metric_mode=max|min")):
        members.lower_is_better("val/f1")
    assert stats.lower_is_better("test/nll_ema") is True and stats.lower_is_better("test/acc_swa") is False
    with pytest.raises(ConfigError, match="unknown metric"):
        stats.lower_is_better("lr-AdamW/pg1")  # was guessed from the name

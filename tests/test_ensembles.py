"""The ensemble group: snapshot points, EMA's update rule, SWA's averaging and BN recompute, what checkpoints hold."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch

from ablate.ensembles import EMA, SWA, SnapshotCollector, build_callbacks, snapshot_steps, swa_model_with_bn
from ablate.errors import ConfigError
from ablate.run import train
from tests.conftest import read_results, run_cli

BASE_LR = 0.1
STEPS_PER_EPOCH = 8  # 256 training images / batch 32 (FAST overrides)
TINY = ["model=mlp", "model.width=32", "optimizer=sgd", f"optimizer.lr={BASE_LR}"]


class Probe(L.Callback):
    """Records the LR of every optimizer step, the weights at epoch ends, and the run's objects for inspection."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.epoch_end_weights: list[dict[str, torch.Tensor]] = []
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.initial = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_end_weights.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    def on_train_end(self, trainer, pl_module) -> None:
        self.trainer, self.module, self.datamodule = trainer, pl_module, trainer.datamodule

    def callback(self, kind: type) -> L.Callback:
        return next(cb for cb in self.trainer.callbacks if isinstance(cb, kind))


def run(make_cfg, *overrides: str) -> tuple[dict, Probe]:
    probe = Probe()
    summary = train(make_cfg(*TINY, *overrides), extra_callbacks=[probe])
    return summary, probe


# -- snapshot ensembles ------------------------------------------------------------------------------------------
def paper_alpha(t: int, total: int, cycles: int) -> float:
    """Huang et al. 2017, eq. (2): alpha(t) = alpha0/2 (cos(pi mod(t-1, ceil(T/M)) / ceil(T/M)) + 1), t = 1..T."""
    length = math.ceil(total / cycles)
    return BASE_LR / 2 * (math.cos(math.pi * ((t - 1) % length) / length) + 1)


@pytest.mark.parametrize("cycles", [3, 5])  # 24 steps: 3 divides them, 5 leaves a shortened last cycle
def test_snapshots_fall_at_the_cycle_ends_of_the_papers_schedule(make_cfg, cycles):
    summary, probe = run(make_cfg, "ensemble=snapshot", f"ensemble.cycles={cycles}", "trainer.max_epochs=3")
    total = 3 * STEPS_PER_EPOCH
    # The LR each step actually used is the paper's formula ...
    assert probe.lrs == pytest.approx([paper_alpha(t, total, cycles) for t in range(1, total + 1)], abs=1e-9)
    # ... and snapshots are taken after the steps that end a cycle: the LR minima, where the next step restarts.
    cycle_ends = [t for t in range(1, total) if probe.lrs[t] > probe.lrs[t - 1]] + [total]
    taken = summary["ensemble"]["snapshot_steps"]
    assert taken == cycle_ends == snapshot_steps(total, cycles)
    assert taken[: cycles - 1] == [k * math.ceil(total / cycles) for k in range(1, cycles)]
    assert len(summary["ensemble"]["snapshots"]) == cycles

    metrics = summary["metrics"]
    # test/acc is the final model (test_weights: last), which is also the last snapshot.
    assert metrics["test/acc"] == pytest.approx(metrics[f"test/acc_snapshot{cycles}"])
    for key in ("test/acc_snapshot_ens", "test/nll_snapshot_ens", "test/ece_snapshot_ens", "val/acc_snapshot_ens"):
        assert key in metrics
    final = torch.load(summary["ensemble"]["snapshots"][-1], weights_only=True)
    module_state = probe.module.state_dict()
    assert set(final) == set(module_state)
    for name, tensor in final.items():  # the final weights (val_acc_best is updated by the validation after it)
        if name.startswith("model."):
            torch.testing.assert_close(tensor, module_state[name].cpu())


def test_snapshot_ensemble_averages_the_last_m_members_probabilities(make_cfg):
    summary, probe = run(
        make_cfg, "ensemble=snapshot", "ensemble.cycles=3", "ensemble.members=2", "trainer.max_epochs=3"
    )
    assert summary["ensemble"]["members"] == 2
    # Recompute the ensemble by hand from the saved files: mean of the softmax of the last two snapshots.
    model, module, dm = probe.module.model, probe.module, probe.datamodule
    probs = []
    for path in summary["ensemble"]["snapshots"][-2:]:
        state = torch.load(path, weights_only=True)
        model.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
        model.eval()
        with torch.no_grad():
            probs.append(model(module.normalize(dm.x_test)).softmax(1))
    acc = float((torch.stack(probs).mean(0).argmax(1) == dm.y_test).float().mean())
    assert summary["metrics"]["test/acc_snapshot_ens"] == pytest.approx(acc)
    # The ensemble-size curve: the last m snapshots for every m; m = 1 is the last snapshot alone.
    assert summary["metrics"]["test/acc_snapshot_ens2"] == pytest.approx(acc)
    assert summary["metrics"]["test/acc_snapshot_ens1"] == summary["metrics"]["test/acc_snapshot3"]
    assert {"test/acc_snapshot_ens3", "val/acc_snapshot_ens3"} <= set(summary["metrics"])


def test_nocycle_takes_snapshots_at_the_same_steps_of_the_runs_own_schedule(make_cfg):
    summary, probe = run(make_cfg, "ensemble=nocycle", "ensemble.cycles=3", "scheduler=cosine", "trainer.max_epochs=3")
    assert summary["ensemble"]["snapshot_steps"] == [8, 16, 24]
    assert all(a >= b for a, b in zip(probe.lrs, probe.lrs[1:], strict=False))  # no restarts
    assert "test/acc_snapshot_ens" in summary["metrics"]


# -- EMA ---------------------------------------------------------------------------------------------------------
def test_ema_after_one_step_is_d_w0_plus_1_minus_d_w1(make_cfg):
    decay = 0.9
    summary, probe = run(make_cfg, "ensemble=ema", f"ensemble.decay={decay}", "+trainer.max_steps=1", "test=false")
    ema = probe.callback(EMA).average_model.state_dict()
    w1 = probe.module.model.state_dict()
    for name, w0 in probe.initial.items():
        if w0.is_floating_point():
            torch.testing.assert_close(ema[name], decay * w0 + (1 - decay) * w1[name])
    assert summary["ensemble"]["ema_updates"] == 1
    assert "val/acc_ema" in summary["metrics"] and "test/acc_ema" not in summary["metrics"]  # test=false


def test_ema_warns_when_the_run_is_too_short_for_its_decay(make_cfg):
    # 8 updates: with decay 0.999 the initial weights keep 0.999**8 = 99% of the final average; with 0.5, 0.4%.
    with pytest.warns(UserWarning, match=r"decay=0.999 spans ~1000 updates, but this run makes 8; 99%"):
        run(make_cfg, "ensemble=ema", "test=false")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(make_cfg, "ensemble=ema", "ensemble.decay=0.5", "test=false")
    assert not [w for w in caught if "initial weights" in str(w.message)]


def test_ema_updates_once_per_optimizer_step_under_accumulation(make_cfg):
    summary, _ = run(make_cfg, "ensemble=ema", "scheduler=cosine", "trainer.accumulate_grad_batches=2", "test=false")
    assert summary["global_step"] == STEPS_PER_EPOCH // 2
    assert summary["ensemble"]["ema_updates"] == STEPS_PER_EPOCH // 2


def test_ema_keeps_raw_weights_in_the_module_and_checkpoints(make_cfg):
    summary, probe = run(make_cfg, "ensemble=ema", "ensemble.decay=0.5", "trainer.max_epochs=2")
    metrics = summary["metrics"]
    for key in ("val/acc", "val/acc_ema", "val/acc_ema_best", "test/acc", "test/acc_ema", "test/nll_ema", "test/nll"):
        assert key in metrics
    assert len(summary["metrics_per_class"]["test/acc_ema"]) == len(summary["metrics_per_class"]["test/acc"])
    ckpt = torch.load(summary["checkpoint_last"], weights_only=True)
    raw = probe.module.state_dict()
    for name, tensor in ckpt["state_dict"].items():
        torch.testing.assert_close(tensor, raw[name].cpu())  # the raw weights, not the average
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("EMA")]
    average = probe.callback(EMA).average_model.state_dict()
    for name, tensor in average.items():
        torch.testing.assert_close(state["average"][f"module.{name}"], tensor.cpu())
    assert not torch.equal(average["1.weight"], raw["model.1.weight"])


class StopAfterFirstEpoch(L.Callback):
    """Ends fit after epoch 0, as a killed run would, leaving last.ckpt of that epoch (the schedule is unchanged)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


@pytest.mark.parametrize(
    "ensemble",
    [
        ["ensemble=ema", "ensemble.decay=0.8"],
        ["ensemble=snapshot", "ensemble.cycles=2"],
        ["ensemble=swa", "ensemble.swa_start=0", "reg=batchnorm"],
    ],
    ids=["ema", "snapshot", "swa"],
)
def test_resumed_run_continues_the_average_or_snapshots(make_cfg, ensemble):
    overrides = [*TINY, *ensemble, "trainer.max_epochs=2"]
    full = train(make_cfg(*overrides, subdir="full"))
    first = train(make_cfg(*overrides, subdir="first"), extra_callbacks=[StopAfterFirstEpoch()])
    assert first["epochs"] == 1
    resumed = train(make_cfg(*overrides, f"ckpt_path={first['checkpoint_last']}", subdir="resumed"))
    variant = {"ensemble=ema": "ema", "ensemble=snapshot": "snapshot_ens", "ensemble=swa": "swa"}[ensemble[0]]
    for key in (f"test/acc_{variant}", f"test/nll_{variant}", f"val/nll_{variant}", "test/loss"):
        assert resumed["metrics"][key] == pytest.approx(full["metrics"][key], rel=1e-5), key
    info = {k: v for k, v in full["ensemble"].items() if k != "snapshots"}
    assert {k: v for k, v in resumed["ensemble"].items() if k != "snapshots"} == info


# -- SWA ---------------------------------------------------------------------------------------------------------
def test_swa_averages_epoch_ends_and_recomputes_bn_statistics(make_cfg):
    summary, probe = run(make_cfg, "ensemble=swa", "ensemble.swa_start=1", "trainer.max_epochs=3", "reg=batchnorm")
    swa = probe.callback(SWA)
    assert summary["ensemble"]["swa_epochs_averaged"] == 2
    averaged = swa.average_model.state_dict()
    after_1, after_2 = probe.epoch_end_weights[1:]
    for name, tensor in averaged.items():  # the equal-weight average of the weights after epochs 1 and 2
        if name.endswith(("weight", "bias")):
            torch.testing.assert_close(tensor, (after_1[name] + after_2[name]) / 2)

    module, dm = probe.module, probe.datamodule
    model = swa_model_with_bn(swa, module, dm)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    inputs = []
    handle = bn.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach()))
    with torch.no_grad():
        model(module.normalize(dm.x_train))  # eval mode: the hook only sees what reaches the BN layer
    handle.remove()
    fresh_mean = torch.cat(inputs).mean(0)
    torch.testing.assert_close(bn.running_mean, fresh_mean, rtol=1e-4, atol=1e-5)
    raw_mean = probe.module.model.state_dict()["2.running_mean"]
    assert not torch.allclose(bn.running_mean, raw_mean, atol=1e-3)  # not the raw model's running statistics
    for key in ("val/acc_swa", "test/acc_swa", "test/nll_swa", "test/ece_swa", "test/acc"):
        assert key in summary["metrics"]


def test_swa_schedule_holds_swa_lr_after_the_decay(make_cfg):
    _, probe = run(make_cfg, "ensemble=swa", "ensemble.swa_start=2", "ensemble.swa_lr=0.02", "trainer.max_epochs=4")
    per_epoch = probe.lrs[::STEPS_PER_EPOCH]
    # Izmailov et al.'s schedule with swa_start=2: t = epoch / 2 -> 1.0, 1.0 (t=0.5), swa_lr (t >= 0.9), swa_lr
    assert per_epoch == pytest.approx([BASE_LR, BASE_LR, 0.02, 0.02])


# -- config ------------------------------------------------------------------------------------------------------
def test_no_ensemble_adds_no_callbacks(make_cfg):
    assert build_callbacks(make_cfg()) == []
    assert isinstance(build_callbacks(make_cfg("ensemble=snapshot"))[0], SnapshotCollector)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ensemble=snapshot", "scheduler=cosine"], "use ensemble=nocycle"),
        (["ensemble=snapshot", "scheduler.fn.cycles=3"], "differs from ensemble.cycles=5"),
        (["ensemble=snapshot", "ensemble.members=6"], "ensemble.members must be in [1, ensemble.cycles=5]"),
        (["ensemble=nocycle", "ensemble.cycles=0"], "ensemble.cycles must be an integer >= 1"),
        (["ensemble=ema", "ensemble.decay=1.5"], "ensemble.decay must be in [0, 1]"),
        (["ensemble=swa", "ensemble.swa_start=1.5"], "ensemble.swa_start"),
        (["ensemble=swa", "ensemble.swa_start=3", "trainer.max_epochs=3"], "must be an epoch index in [0, 3)"),
        (["ensemble=swa", "ensemble.swa_lr=0.01", "scheduler=cosine"], "ignores it"),
    ],
)
def test_bad_ensemble_settings_are_one_line_config_errors(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        build_callbacks(make_cfg(*overrides))
    assert message in str(err.value)


@pytest.mark.slow
def test_cli_snapshot_run_writes_ensemble_metrics_and_weights_only_files(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "data=synthetic",
        "data.synthetic.num_train=320",
        "data.val_size=64",
        "data.batch_size=32",
        "model=mlp",
        "trainer.max_epochs=2",
        "ensemble=snapshot",
        "ensemble.cycles=2",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli(args, tmp_path, check=True)
    results = read_results(run_dir)
    assert results["status"] == "completed"
    summary = proc.stdout.strip().splitlines()[-2]  # the single model and the ensemble, side by side
    assert f"test/acc={results['metrics']['test/acc']:.4f}  test/acc_snapshot_ens=" in summary
    for key in ("test/acc", "test/acc_snapshot_ens", "test/acc_snapshot1", "test/acc_snapshot2"):
        assert key in results["metrics"]
    for path in [*(run_dir / "snapshots").glob("*.pt"), *(run_dir / "checkpoints").glob("*.ckpt")]:
        torch.load(path, weights_only=True)
    assert len(list((run_dir / "snapshots").glob("snapshot_*.pt"))) == 2

"""The ensemble group: snapshot points, EMA's update rule, SWA's averaging and BN recompute, what checkpoints hold."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch

from ablate.config.rules import check, validate
from ablate.errors import ConfigError
from ablate.runtime.job import train
from ablate.training.ensembles import (
    EMA,
    SWA,
    SnapshotCollector,
    build_callbacks,
    check_run_length,
    snapshot_steps,
    swa_model_with_bn,
)
from tests.conftest import read_results, run_cli, snapshot_alpha

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
@pytest.mark.parametrize(
    ("cycles", "steps"),
    [(3, None), (5, None), (4, 26)],  # 24 steps: 3 divides them; 5 and (26 steps, 4) leave a remainder to spread
)
def test_snapshots_fall_at_the_annealed_end_of_every_cycle(make_cfg, cycles, steps):
    limit = [f"+trainer.max_steps={steps}", "trainer.max_epochs=4"] if steps else ["trainer.max_epochs=3"]
    summary, probe = run(make_cfg, "ensemble=snapshot", f"ensemble.cycles={cycles}", *limit)
    total = steps or 3 * STEPS_PER_EPOCH
    # The LR each step actually used is the paper's formula, cycle by cycle ...
    assert probe.lrs == pytest.approx(
        [snapshot_alpha(t, total, cycles, BASE_LR) for t in range(1, total + 1)], abs=1e-9
    )
    # ... and snapshots are taken after the steps that end a cycle: the LR minima, where the next step restarts.
    cycle_ends = [t for t in range(1, total) if probe.lrs[t] > probe.lrs[t - 1]] + [total]
    taken = summary["ensemble"]["snapshot_steps"]
    assert taken == cycle_ends == snapshot_steps(total, cycles)
    assert len(taken) == len(summary["ensemble"]["snapshots"]) == cycles
    # Every cycle ends annealed: its last step has the smallest LR of its cycle, the same for equal lengths.
    starts = [0, *taken[:-1]]
    for start, end in zip(starts, taken, strict=True):
        assert probe.lrs[end - 1] == min(probe.lrs[start:end])
        assert probe.lrs[end - 1] < probe.lrs[start] == pytest.approx(BASE_LR)

    metrics = summary["metrics"]
    # test/acc is the final model (test_weights: last), which is also the last snapshot.
    assert metrics["test/acc"] == pytest.approx(metrics[f"test/acc_snapshot{cycles}"])
    for key in ("test/acc_snapshot_ens", "test/nll_snapshot_ens", "test/ece_snapshot_ens", "val/acc_snapshot_ens"):
        assert key in metrics
    # members=auto (the default): m is the best val/acc_snapshot_ens<m> (ties: lower val NLL), and test/acc_snapshot_ens
    # is that m's test accuracy.
    val = {m: metrics[f"val/acc_snapshot_ens{m}"] for m in range(1, cycles + 1)}
    chosen = max(m for m in val if val[m] == max(val.values()))
    assert summary["ensemble"]["members"] == chosen and summary["ensemble"]["members_rule"] == "auto"
    assert metrics["test/acc_snapshot_ens"] == metrics[f"test/acc_snapshot_ens{chosen}"]
    final = torch.load(summary["ensemble"]["snapshots"][-1], weights_only=True)
    module_state = probe.module.state_dict()
    assert set(final) == set(module_state)
    for name, tensor in final.items():  # the final weights (val_acc_best is updated by the validation after it)
        if name.startswith("model."):
            torch.testing.assert_close(tensor, module_state[name].cpu())


@pytest.mark.parametrize(
    ("total", "cycles", "ends"),
    [(126, 5, [26, 51, 76, 101, 126]), (11, 5, [3, 5, 7, 9, 11]), (24, 3, [8, 16, 24]), (10, 5, [2, 4, 6, 8, 10])],
)
def test_uneven_runs_spread_the_remainder_and_every_snapshot_is_annealed(total, cycles, ends):
    from ablate.optim.schedulers import snapshot

    assert snapshot_steps(total, cycles) == ends  # always M snapshots, the last at T
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    scheduler, lrs = snapshot(optimizer, total_steps=total, cycles=cycles), []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for start, end in zip([0, *ends[:-1]], ends, strict=True):
        assert lrs[start] == pytest.approx(3e-3)  # each cycle restarts at alpha0 ...
        assert lrs[end - 1] == min(lrs[start:end]) < lrs[start]  # ... and its last step is its annealed minimum
    if total == 126:  # the paper's ceil(T / M) cut the last cycle to 22 steps, ending at lr 1.7e-4
        assert lrs[-1] < 1.2e-5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ensemble.cycles=5", "+trainer.max_steps=4"], "ensemble.cycles=5 needs >= 1 optimizer step per cycle"),
        (["ensemble.cycles=3", "trainer.accumulate_grad_batches=4"], "the run has 2; use ensemble.cycles<=2"),
        (["ensemble.cycles=3", "trainer.limit_train_batches=2"], "the run has 2; use ensemble.cycles<=2"),
    ],
    ids=["T<M", "accumulation", "limit_train_batches"],
)
def test_too_few_steps_for_the_cycles_is_refused_before_training(make_cfg, overrides, message):
    cfg = make_cfg(*TINY, "ensemble=snapshot", *overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "snapshots").exists()  # nothing trained


def test_one_step_cycles_run_with_a_warning_that_they_are_not_annealed(make_cfg):
    (warning,) = check_run_length(make_cfg("ensemble=snapshot"), 7)  # 2, 2, 1, 1, 1
    assert "3 of the 5 cycles last 1 optimizer step (7 steps in all)" in warning
    assert "use ensemble.cycles<=3" in warning
    assert check_run_length(make_cfg("ensemble=snapshot"), 10) == []  # 2 steps each


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


def one_hot(labels: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), 2).float()


def test_members_auto_chooses_on_validation_never_on_test(tmp_path, monkeypatch):
    """Three snapshots whose predictions are fixed by hand: on validation the ensemble of the last 2 is best, on test
    the last snapshot alone. The chosen m must be validation's, and test/acc_snapshot_ens that m's test accuracy."""
    import ablate.training.ensembles as ens

    targets = torch.tensor([0, 0, 0, 0])
    # Per snapshot k (cycle order), probabilities on 4 samples of class 0; the ensemble of size m averages the last m.
    val = [one_hot([1, 1, 1, 1]), one_hot([0, 0, 1, 1]), one_hot([0, 1, 0, 0])]
    val[1][2] = torch.tensor([0.45, 0.55])  # m=2 averages [0.725, 0.275] on sample 2
    test = [one_hot([0, 0, 0, 0]), one_hot([1, 1, 0, 0]), torch.tensor([[0.6, 0.4]] * 4)]
    probs = {"val": iter(val), "test": iter(test)}
    monkeypatch.setattr(ens, "eval_probabilities", lambda model, module, loader: (next(probs[loader]), targets))

    model = torch.nn.Linear(2, 2)
    collector = SnapshotCollector(tmp_path, cycles=3, members="auto")
    for k in (1, 2, 3):
        path = tmp_path / f"snapshot_{k}.pt"
        torch.save({f"model.{n}": t for n, t in model.state_dict().items()}, path)
        collector.taken[k] = str(path)
    module = type("Module", (), {"model": model, "mean": torch.zeros(1)})()
    metrics, _ = ens._snapshot_metrics(collector, module, {"val": "val", "test": "test"}, n=2)
    assert [metrics[f"val/acc_snapshot_ens{m}"] for m in (1, 2, 3)] == [0.75, 1.0, 0.25]
    assert [metrics[f"test/acc_snapshot_ens{m}"] for m in (1, 2, 3)] == [1.0, 0.5, 1.0]
    assert collector.chosen_members == 2  # validation's best, not test's (m = 1 or 3)
    assert metrics["test/acc_snapshot_ens"] == metrics["test/acc_snapshot_ens2"] == 0.5
    assert ens.ensemble_summary([collector])["members"] == 2


def test_members_auto_breaks_ties_by_validation_nll_then_towards_more_members():
    from ablate.training.ensembles import choose_members

    assert choose_members({1: 0.9, 2: 0.95, 3: 0.95, 4: 0.94}) == 3  # no NLL given: the larger m
    assert choose_members({1: 0.9, 2: 0.9, 3: 0.8}) == 2
    assert choose_members({1: 0.9}) == 1
    # Tied on accuracy: the lowest validation NLL among the tied sizes (never the NLL of an untied size).
    nll = {1: 0.1, 2: 0.30, 3: 0.25, 4: 0.40, 5: 0.35}
    assert choose_members({1: 0.9, 2: 0.95, 3: 0.95, 4: 0.95, 5: 0.95}, nll) == 3
    assert choose_members({1: 0.9, 2: 0.95, 3: 0.95}, {1: 0.1, 2: 0.2, 3: 0.2}) == 3  # NLL tied too: larger m


def test_nocycle_takes_snapshots_at_the_same_steps_of_the_runs_own_schedule(make_cfg):
    summary, probe = run(make_cfg, "ensemble=nocycle", "ensemble.cycles=3", "scheduler=cosine", "trainer.max_epochs=3")
    assert summary["ensemble"]["snapshot_steps"] == [8, 16, 24]
    assert all(a >= b for a, b in zip(probe.lrs, probe.lrs[1:], strict=False))  # no restarts
    assert "test/acc_snapshot_ens" in summary["metrics"]


# -- EMA ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("warmup", "first_decay"), [("false", 0.9), ("true", 0.1)])  # warm-up: min(0.9, 1 / 10)
def test_ema_after_one_step_is_d_w0_plus_1_minus_d_w1(make_cfg, warmup, first_decay):
    summary, probe = run(
        make_cfg,
        "ensemble=ema",
        "ensemble.decay=0.9",
        f"ensemble.warmup={warmup}",
        "+trainer.max_steps=1",
        "test=false",
    )
    ema = probe.callback(EMA).average_model.state_dict()
    w1 = probe.module.model.state_dict()
    for name, w0 in probe.initial.items():
        if w0.is_floating_point():
            torch.testing.assert_close(ema[name], first_decay * w0 + (1 - first_decay) * w1[name])
    assert summary["ensemble"]["ema_updates"] == 1
    assert summary["ensemble"]["initial_weight_share"] == pytest.approx(first_decay)
    assert "val/acc_ema" in summary["metrics"] and "test/acc_ema" not in summary["metrics"]  # test=false


class StepWeights(L.Callback):
    """The classifier's floating-point weights after every optimizer step."""

    def __init__(self) -> None:
        self.after: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        state = pl_module.model.state_dict()
        self.after.append({k: v.detach().clone() for k, v in state.items() if v.is_floating_point()})


@pytest.mark.parametrize(
    ("overrides", "updates"),
    [
        (["+trainer.max_steps=60"], 60),  # ~60 steps at the default decay 0.999 (7.5 epochs)
        (["+trainer.max_steps=61", "ensemble.every_n_steps=4", "ensemble.start_step=3"], 15),  # 4, 8, ..., 60
    ],
    ids=["60_steps", "61_steps_every_4"],
)
def test_ema_warmup_leaves_under_1_percent_of_the_initial_weights(make_cfg, overrides, updates):
    probe, weights = Probe(), StepWeights()
    cfg = make_cfg(*TINY, "ensemble=ema", "trainer.max_epochs=8", "test=false", *overrides)
    summary = train(cfg, extra_callbacks=[probe, weights])
    info = summary["ensemble"]
    assert info["ema_decay"] == 0.999 and info["ema_warmup"] is True and info["ema_updates"] == updates
    # The average, replayed by hand from EMA_0 = w0: the t-th update uses d_t = min(0.999, (1 + t) / (10 + t)).
    every, start = (4, 3) if updates == 15 else (1, 0)
    steps = [i for i in range(len(weights.after)) if i >= start and i % every == 0]
    assert len(steps) == updates
    share, expected = 1.0, {k: v for k, v in probe.initial.items() if v.is_floating_point()}
    for t, i in enumerate(steps):
        d = min(0.999, (1 + t) / (10 + t))
        share *= d
        expected = {k: d * v + (1 - d) * weights.after[i][k] for k, v in expected.items()}
    average = probe.callback(EMA).average_model.state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(average[name], tensor)
    assert info["initial_weight_share"] == pytest.approx(share, rel=1e-9)
    assert info["initial_weight_share"] < 0.01
    assert "warnings" not in summary


def test_ema_without_warmup_warns_in_results_not_as_a_python_warning(make_cfg, capsys):
    # 8 updates: with decay 0.999 and no warm-up the initial weights keep 0.999**8 = 99% of the final average.
    summary, _ = run(make_cfg, "ensemble=ema", "ensemble.warmup=false", "test=false")
    assert summary["ensemble"]["initial_weight_share"] == pytest.approx(0.999**8)
    (warning,) = summary["warnings"]
    assert "decay=0.999 with warmup=false leaves 99% of the final average on the initial weights" in warning
    assert capsys.readouterr().err.count("99% of the final average") == 1  # printed once
    cfg = make_cfg(*TINY, "ensemble=ema", "ensemble.decay=0.5", "ensemble.warmup=false", "test=false", subdir="d05")
    summary = train(cfg)
    assert "warnings" not in summary


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
def checked_callbacks(cfg) -> list[L.Callback]:
    """build_callbacks as the run calls it: on a config the rule book passed."""
    return build_callbacks(check(cfg).config)


def test_no_ensemble_adds_no_callbacks(make_cfg):
    assert checked_callbacks(make_cfg()) == []
    assert isinstance(checked_callbacks(make_cfg("ensemble=snapshot"))[0], SnapshotCollector)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ensemble=snapshot", "scheduler=cosine"], "use ensemble=nocycle"),
        (["ensemble=snapshot", "scheduler.fn.cycles=3"], "differs from ensemble.cycles=5"),
        (["ensemble=snapshot", "scheduler.interval=epoch"], "ensemble=snapshot needs scheduler.interval=step"),
        (["ensemble=snapshot", "ensemble.members=6"], "an integer in [1, ensemble.cycles=5], got 6"),
        (["ensemble=nocycle", "ensemble.cycles=0"], "ensemble.cycles must be an integer >= 1"),
        (["ensemble=ema", "ensemble.decay=1.5"], "ensemble.decay must be a number in [0, 1)"),
        (["ensemble=swa", "ensemble.swa_start=1.5"], "ensemble.swa_start"),
        (["ensemble=swa", "ensemble.swa_start=3", "trainer.max_epochs=3"], "must be an epoch index in [0, 3)"),
        (["ensemble=swa", "ensemble.swa_lr=0.01", "scheduler=cosine"], "ignores it"),
    ],
)
def test_bad_ensemble_settings_are_one_line_config_errors(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        checked_callbacks(make_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ensemble=ema", "ensemble.every_n_steps=abc"], "ensemble.every_n_steps must be an integer >= 1, got 'abc'"),
        (["ensemble=ema", "ensemble.every_n_steps=1.5"], "ensemble.every_n_steps must be an integer >= 1, got 1.5"),
        (["ensemble=ema", "ensemble.start_step=0.5"], "ensemble.start_step must be an integer >= 0, got 0.5"),
        (["ensemble=ema", "ensemble.decay=1.0"], "ensemble.decay must be a number in [0, 1) (decay 1 never moves"),
        (["ensemble=ema", "ensemble.decay=true"], "ensemble.decay must be a number in [0, 1)"),
        (["ensemble=ema", "ensemble.warmup=maybe"], "ensemble.warmup must be true or false, got 'maybe'"),
        (["ensemble=snapshot", "ensemble.cycles=2.5"], "ensemble.cycles must be an integer >= 1, got 2.5"),
        (["ensemble=snapshot", "ensemble.members=abc"], "ensemble.members must be auto (chosen on validation), null"),
        (["ensemble=snapshot", "ensemble.members=6"], "an integer in [1, ensemble.cycles=5], got 6"),
        (["ensemble=snapshot", "data.val_size=0"], "ensemble.members=auto chooses the ensemble size on validation"),
        (["ensemble=swa", "ensemble.swa_lr=abc"], "ensemble.swa_lr must be a positive number or null"),
        (["ensemble=swa", "ensemble.swa_start=abc"], "ensemble.swa_start must be a number >= 0"),
    ],
)
def test_bad_ensemble_values_are_named_by_the_rule_book(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ensemble.start_step=8"], "ensemble.start_step=8 leaves no EMA update in this run of 8 optimizer steps"),
        (["+trainer.max_steps=3", "ensemble.start_step=3"], "ensemble.start_step=3 leaves no EMA update"),
    ],
)
def test_ema_that_would_never_update_is_refused_before_training(make_cfg, overrides, message):
    cfg = make_cfg(*TINY, "ensemble=ema", *overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # refused before fit


def test_cyclic_schedule_that_stops_mid_cycle_says_so_once(make_cfg, capsys):
    # 24 steps of cycles of 2 * 5: the run ends 2.4 cycles in; step_size_up=6 gives 2 whole cycles.
    summary, _ = run(make_cfg, "scheduler=cyclic", "scheduler.fn.base_lr=0.01", "scheduler.fn.step_size_up=5",
                     "trainer.max_epochs=3", "test=false")  # fmt: skip
    (warning,) = summary["warnings"]
    assert warning.startswith("scheduler=cyclic stops mid-cycle: the run has 24 steps = 2.4 cycles of 10")
    assert "for 2 whole cycles set scheduler.fn.step_size_up=6" in warning
    assert capsys.readouterr().err.count("stops mid-cycle") == 1
    cfg = make_cfg(*TINY, "scheduler=cyclic", "scheduler.fn.base_lr=0.01", "scheduler.fn.step_size_up=4",
                   "trainer.max_epochs=3", "test=false", subdir="whole")  # fmt: skip
    assert "warnings" not in train(cfg)  # 24 steps = 3 whole cycles of 8


def test_cli_ensemble_errors_are_one_line_exit_2(tmp_path):
    for args, message in (
        (["ensemble=ema", "ensemble.every_n_steps=abc"], "ensemble.every_n_steps must be an integer >= 1"),
        (["ensemble=ema", "ensemble.start_step=100000"], "ensemble.start_step=100000 leaves no EMA update"),
    ):
        run_dir = tmp_path / args[-1].replace("=", "_")
        proc = run_cli(
            ["data=digits", "model=mlp", "trainer.max_epochs=1", *args, f"hydra.run.dir={run_dir}"], tmp_path
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"error: {message}") and "Traceback" not in proc.stderr
        assert not (run_dir / "checkpoints").exists()


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

"""The converged gate's window (``--converged-window``, plan ``converged: {window: final_lr}``): schedules that decay
until near the end (the SWA paper's SGD: to 0.01 x lr at 90% of the budget) are judged on their final constant-lr
phase, where the last tenth vs the tenth before straddles the end of the decay."""

from __future__ import annotations

import math
import statistics

import pytest

from ablate.config.rules.table import CONVERGED_WINDOWS
from ablate.report.gates import WINDOWS, final_lr_change
from tests.conftest import write_run
from tests.test_gates import BASE, DECLARED, GAIN, PRIMARY, gate_lines, verdict_line
from tests.test_table import error_of, table

EPOCHS = 40
# lr: 0.1 to 50%, linear decay to 0.001 at 90%, then constant (4 epochs); the loss falls with the decay, then is flat
LR = [0.1 if e < 20 else 0.001 if e >= 36 else 0.1 - (e - 20) * 0.099 / 16 for e in range(EPOCHS)]
LOSS = [0.5 * math.exp(-e / 8) if e < 36 else 0.5 * math.exp(-35 / 8) * (1 - 0.01 * (e - 35)) for e in range(EPOCHS)]


def _history(run, lrs, losses):
    lines = ["epoch,train/loss,train/acc,val/loss,val/acc,lr,time"]
    lines += [f"{e},{loss},0.9,0.5,0.85,{lr},{e + 1.0}" for e, (lr, loss) in enumerate(zip(lrs, losses, strict=True))]
    (run / "history.csv").write_text("\n".join(lines) + "\n")


def swa_sweep(root, lrs=LR, losses=LOSS):
    for s, (b, g) in enumerate(zip(BASE, GAIN, strict=True)):
        base = write_run(root, f"n{s}", ["ensemble=none", f"seed={s}"], seed=s, **{"test/acc": b})
        _history(base, lrs, losses)
        write_run(root, f"s{s}", ["ensemble=swa", f"seed={s}"], seed=s, **{"test/acc": b + g})
    return root


def test_final_lr_window_compares_the_halves_of_the_final_constant_lr_phase():
    assert LR[-5] > 0.001 and LR[-4:] == [0.001] * 4  # a 4-epoch final phase
    change, k = final_lr_change(LOSS, LR)
    expected = abs(statistics.fmean(LOSS[-4:-2]) - statistics.fmean(LOSS[-2:])) / 0.02  # below the 0.02-nat floor
    assert k == 2 and change == pytest.approx(expected)
    assert final_lr_change(LOSS[:-1], LR[:-1]) == "final constant-lr phase of 3 epochs, needs 4+"


def test_a_decay_until_near_the_end_fails_by_tenths_and_passes_on_its_final_phase(tmp_path, capsys):
    root = swa_sweep(tmp_path / "swa")
    out = table(capsys, root, *PRIMARY, *DECLARED, "--converged")
    (line,) = gate_lines(out)
    assert "last 4 epochs vs the 4 before" in line and line.endswith("**FAIL**")  # straddles the end of the decay
    out = table(capsys, root, *PRIMARY, *DECLARED, "--converged", "--converged-window", "final_lr")
    (line,) = gate_lines(out)
    assert "the final constant-lr phase, last 2 epochs vs the 2 before" in line and line.endswith("**pass**")
    assert "**Verdict: yes**" in verdict_line(out)


def test_a_final_phase_too_short_cannot_be_checked(tmp_path, capsys):
    root = swa_sweep(tmp_path / "short", lrs=[0.1 * 0.9**e for e in range(EPOCHS)])  # never constant
    (line,) = gate_lines(table(capsys, root, *PRIMARY, *DECLARED, "--converged", "--converged-window", "final_lr"))
    assert "cannot be checked: n0: final constant-lr phase of 1 epoch, needs 4+" in line and line.endswith("FAIL**")


def test_the_window_from_a_plan_and_its_errors(tmp_path, capsys):
    root = swa_sweep(tmp_path / "plan")
    plan = tmp_path / "plan.yaml"
    body = "baseline: ensemble=none\nprimary: ensemble=swa\nexpected_effect: 0.005\nmargin: 0.002\n"
    plan.write_text(body + "gates:\n  converged: {tolerance: 0.05, window: final_lr}\n")
    (line,) = gate_lines(table(capsys, root, "--metrics", "test/acc", "--plan", plan))
    assert "final constant-lr phase" in line and line.endswith("**pass**")
    plan.write_text(body + "gates:\n  converged: {window: final_lr}\n")  # the default tolerance
    assert "(< 5.00% required)" in gate_lines(table(capsys, root, "--metrics", "test/acc", "--plan", plan))[0]
    plan.write_text(body + "gates:\n  converged: {window: last_lr}\n")
    assert "converged.window must be one of tenths, final_lr" in error_of(capsys, root, "--plan", plan)
    err = error_of(capsys, root, *PRIMARY, *DECLARED, "--converged-window", "final_lr")
    assert "--converged-window needs --converged" in err


def test_every_window_option_has_a_measure():
    assert tuple(WINDOWS) == CONVERGED_WINDOWS

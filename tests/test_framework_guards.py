"""Framework internals stay in their guarded modules, and the guards fall back to public paths."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from ablate.layers.kinds import BATCH_NORMS, DROPOUTS
from ablate.training import lightning_fast
from ablate.training.scoring import averaged_log_probs, eval_logits, stochastic_passes

SRC = Path(__file__).resolve().parents[1] / "src"
# Private names of Lightning, torch, Optuna and Hydra that ablate uses, and the one module allowed each.
PRIVATE = re.compile(
    r"_current_fx_name|fit_loop|\._trainer\b|_DropoutNd|_BatchNorm\b|_return_value|\._storage\b|\._trial_id\b"
    r"|_is_local_file_protocol|_save_last_checkpoint|_monitor_candidates|_should_save_on_train_epoch_end"
    r"|_wandb_init|_average_model|_latest_update_step"
)
ALLOWED = {
    "ablate/training/lightning_fast.py",
    "hydra_plugins/ablate_optuna_sweeper/hydra_compat.py",
    "ablate/layers/kinds.py",  # its docstring names the torch bases it replaces
}


def test_framework_private_names_only_in_their_guarded_modules() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        offenders += [f"{rel}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert offenders == []


def test_lightning_version_guard() -> None:
    assert lightning_fast.FAST  # the tests run on the tested versions (requirements.lock)
    assert lightning_fast._check("2.6.6") and lightning_fast._check("2.6.9")
    notes = list(lightning_fast.NOTES)
    try:
        assert not lightning_fast._check("2.7.0") and not lightning_fast._check("2.5.1")
        assert len(lightning_fast.NOTES) == len(notes) + 2 and "\n" not in lightning_fast.NOTES[-1]
    finally:
        lightning_fast.NOTES[:] = notes  # later runs in this process would record them as their warnings


def test_outside_the_tested_range_everything_takes_the_public_path() -> None:
    code = (
        "import lightning; lightning.__version__ = '9.0.0'\n"
        "from ablate.training import lightning_fast as f\n"
        "from ablate.training.module import ClassifierModule\n"
        "assert not f.FAST and len(f.NOTES) == 1\n"
        "assert '__setattr__' not in f.HookAttrFastPath.__dict__\n"
        "assert '__signature__' not in ClassifierModule.training_step.__dict__\n"
        "assert '_save_last_checkpoint' not in f.LastEveryEpoch.__dict__\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "outside the tested range" in line]
    assert len(warning) == 1 and "Traceback" not in done.stderr


def test_public_layer_families_cover_torchs_private_bases() -> None:
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.LazyBatchNorm2d):
        assert issubclass(cls, BATCH_NORMS) and issubclass(cls, nn.modules.batchnorm._BatchNorm)
    for cls in (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout):
        assert issubclass(cls, DROPOUTS)
    assert not issubclass(nn.GroupNorm, BATCH_NORMS) and not issubclass(nn.Identity, DROPOUTS)


def test_one_stochastic_pass_average_matches_the_former_three() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.5)).train()
    x = torch.randn(4, 6)
    torch.manual_seed(1)
    logits, first = eval_logits(model, x, 3)
    torch.manual_seed(1)
    passes = [model(x).softmax(dim=1) for _ in range(3)]  # the module's former eval step
    assert torch.equal(logits, torch.stack(passes).mean(0).clamp_min(1e-12).log()) and torch.equal(first, passes[0])
    torch.manual_seed(1)
    tta = averaged_log_probs(model, x, passes=2, flip=True)
    torch.manual_seed(1)
    views = [model(v).float().softmax(dim=1) for v in (x, x.flip(-1)) for _ in range(2)]
    former = torch.stack(views).mean(0)
    assert torch.equal(tta, former.clamp_min(torch.finfo(torch.float32).tiny).log())
    assert torch.equal(eval_logits(model.eval(), x)[0], model(x))
    assert stochastic_passes(model, x, 1)[0].shape == (4, 5)


def test_a_guard_note_is_recorded_in_the_runs_warnings(make_cfg, monkeypatch) -> None:
    """Outside the tested Lightning range the note is not only logged: results.json's warnings carry it."""
    from ablate.runtime.job import train

    note = "lightning 9.0.0 is outside the tested range 2.6.6 to <2.7: ..."
    monkeypatch.setattr(lightning_fast, "NOTES", [note])
    summary = train(make_cfg("data=digits", "model=mlp", "test=false"))
    assert note in summary["warnings"]

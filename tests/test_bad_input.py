"""Hostile command lines: each is one line, `error: <what>; <what to do>`, exit 2, no traceback.

The fuzz list runs in-process through the same functions train.py uses (Hydra's compose, ``hydra_error_line`` for
Hydra's own errors, ``validate`` for ours), so 100 cases cost seconds; a handful run as real subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablate.config.rules import check, effective_seed, validate
from ablate.errors import ConfigError
from ablate.runtime.cli import hydra_error_line
from tests.conftest import CONFIG_DIR, FAST, REPO, compose_config, read_results, run_cli

# (overrides, text the one-line error must contain). The first override is the hostile one unless noted.
FUZZ: list[tuple[list[str], str]] = [
    # numeric knobs: wrong types, empties, non-finite, out of range
    (["optimizer.lr=abc"], "optimizer.lr must be a positive number, got 'abc'; e.g. optimizer.lr=0.01"),
    (["optimizer.lr="], "optimizer.lr must be a positive number, got ''"),
    (["optimizer.lr=null"], "optimizer.lr must be a positive number, got null"),
    (["optimizer.lr=true"], "optimizer.lr must be a positive number, got true"),
    (["optimizer.lr=[0.1]"], "optimizer.lr must be a positive number, got [0.1]"),
    (["optimizer.lr={a:1}"], "optimizer.lr must be a positive number"),
    (["optimizer.lr=nan"], "optimizer.lr must be a positive number, got NaN"),
    (["optimizer.lr=inf"], "optimizer.lr must be a positive number"),
    (["optimizer.lr=1e999"], "optimizer.lr must be a positive number"),
    (["optimizer.lr=0"], "optimizer.lr must be a positive number, got 0"),
    (["optimizer.lr=-1e-3"], "optimizer.lr must be a positive number, got -0.001"),
    (["optimizer.lr='0.1.2'"], "optimizer.lr must be a positive number, got '0.1.2'"),
    (["optimizer=sgd", "optimizer.momentum=1.0"], "optimizer.momentum must be a number in [0, 1) (momentum >= 1"),
    (["optimizer=momentum", "optimizer.momentum=1.5"], "optimizer.momentum must be a number in [0, 1)"),
    (["optimizer=momentum", "optimizer.momentum=-0.1"], "optimizer.momentum must be a number in [0, 1)"),
    (["optimizer=nesterov", "optimizer.momentum=0"], "optimizer.nesterov=true needs optimizer.momentum > 0"),
    (["optimizer=adam", "optimizer.betas=[0.9]"], "optimizer.betas must be a list of 2 numbers in [0, 1)"),
    (["optimizer=adam", "optimizer.betas=[0.9,1.0]"], "optimizer.betas must be a list of 2 numbers in [0, 1)"),
    (["optimizer=adam", "optimizer.betas=abc"], "optimizer.betas must be a list of 2"),
    (["optimizer.weight_decay=-0.01"], "optimizer.weight_decay must be a number >= 0, got -0.01"),
    (["optimizer=rmsprop", "optimizer.alpha=2"], "optimizer.alpha must be a number in [0, 1]"),
    (["optimizer=adadelta", "optimizer.rho=1.5"], "optimizer.rho must be a number in [0, 1]"),
    (["optimizer=lbfgs", "optimizer.max_iter=0"], "optimizer.max_iter must be an integer >= 1"),
    (["optimizer=lbfgs", "optimizer.line_search_fn=backtracking"], "optimizer.line_search_fn must be one of"),
    (["data.num_folds=3", "data.fold=7"], "data.fold must be in [0, 3), got 7; e.g. data.fold=2"),
    # trainer
    (["trainer.max_epochs=true"], "trainer.max_epochs must be an integer >= 1, got true; e.g. trainer.max_epochs=6"),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs must be an integer >= 1, got 2.5"),
    (["trainer.max_epochs=0"], "trainer.max_epochs must be an integer >= 1, got 0"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs must be an integer >= 1, got -1"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs must be an integer >= 1, got 'ten'"),
    (["trainer.max_epochs=''"], "trainer.max_epochs must be an integer >= 1, got ''"),
    (["trainer.accumulate_grad_batches=1.5"], "trainer.accumulate_grad_batches must be an integer >= 1"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val must be a number >= 0 or null, got -1"),
    (["trainer.gradient_clip_algorithm=l2"], "trainer.gradient_clip_algorithm must be one of norm, value"),
    (["trainer.limit_test_batches=-0.5"], "trainer.limit_test_batches must be a number >= 0"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch must be an integer >= 1"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps must be an integer >= 1"),
    (["trainer.enable_progress_bar=maybe"], "trainer.enable_progress_bar must be true or false"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches must be a positive number or null, got 0"),
    (["trainer.limit_val_batches=1.5"], "trainer.limit_val_batches must be a fraction in [0, 1] or a whole number"),
    (["scheduler=cyclic", "optimizer.lr=0.00001"], "scheduler.fn.base_lr=0.0001 must be below scheduler.fn.max_lr"),
    # data
    (["data.batch_size=[1,2]"], "data.batch_size must be an integer >= 1, got [1, 2]; e.g. data.batch_size=128"),
    (["data.batch_size=0"], "data.batch_size must be an integer >= 1, got 0"),
    (["data.batch_size=12.5"], "data.batch_size must be an integer >= 1, got 12.5"),
    (["data.batch_size=abc"], "data.batch_size must be an integer >= 1, got 'abc'"),
    (["data.eval_batch_size=-1"], "data.eval_batch_size must be an integer >= 1"),
    (["data.val_size=abc"], "data.val_size must be a number >= 0 (a fraction in [0, 1) or a sample count), got 'abc'"),
    (["data.val_size=1.5"], "data.val_size must be a fraction in [0, 1) or a sample count, got 1.5"),
    (["data.val_size=-3"], "data.val_size must be a number >= 0"),
    (["data.num_folds=1"], "data.num_folds must be an integer >= 2 (or 0), got 1"),
    (["data.num_folds=5", "data.fold=5"], "data.fold must be in [0, 5), got 5"),
    (["data.fold=-1"], "data.fold must be an integer >= 0"),
    (["data.train_subset=-5"], "data.train_subset must be an integer >= 0"),
    (["data.bootstrap_seed=-1"], "data.bootstrap_seed must be an integer >= 0 or null, got -1"),
    (["data.synthetic.num_classes=1"], "data.synthetic.num_classes must be an integer >= 2 (a classifier needs two"),
    (["data.download=maybe"], "data.download must be true or false, got 'maybe'"),
    # model
    (["model=mlp", "model.depth=two"], "model.depth must be an integer >= 1, got 'two'; e.g. model.depth=2"),
    (["model=mlp", "model.width=2.5"], "model.width must be an integer >= 1, got 2.5"),
    (["model=mlp", "model.width=0"], "model.width must be an integer >= 1, got 0"),
    (["model=mlp", "model.dropout=1.0"], "model.dropout must be a number in [0, 1), got 1.0"),
    (["model=mlp", "model.activation=swish"], "model.activation must be one of relu, leaky_relu"),
    (["model=convnet", "model.channels=[32,-1]"], "model.channels must be a list of integers >= 1, got [32, -1]"),
    (["model=convnet", "model.channels=32"], "model.channels must be a list of integers >= 1, got 32"),
    (["model=convnet", "model.downsample=avgpool"], "model.downsample must be one of stride, maxpool, fmp"),
    (["model=resnet", "model.stochastic_depth=0"], "model.stochastic_depth must be a number in (0, 1]"),
    (["model=fmpnet", "model.fmp_ratio=2"], "model.fmp_ratio must be a number in (1, 2)"),
    (["model=mlp", "model.batchnorm=2"], "model.batchnorm must be true or false, got 2"),
    # scheduler
    (["scheduler=step", "scheduler.fn.step_size=0"], "scheduler.fn.step_size must be an integer >= 1, got 0"),
    (["scheduler=exponential", "scheduler.fn.gamma=-0.5"], "scheduler.fn.gamma must be a positive number"),
    (["scheduler=step", "scheduler.fn.gamma=0"], "scheduler.fn.gamma must be a positive number"),
    (["scheduler=plateau", "scheduler.fn.mode=max"], "scheduler.fn.mode=max contradicts monitor val/loss"),
    (["scheduler=plateau", "scheduler.monitor=val/acc", "scheduler.fn.mode=min"], "scheduler.fn.mode=min contradicts"),
    (["scheduler=plateau", "scheduler.fn.factor=1.5"], "scheduler.fn.factor must be a number in (0, 1)"),
    (["scheduler=plateau", "scheduler.fn.patience=-2"], "scheduler.fn.patience must be an integer >= 0"),
    (["scheduler=multistep", "scheduler.fn.milestones=[3,-5]"], "scheduler.fn.milestones must be a list of integers"),
    (["scheduler=onecycle", "scheduler.fn.pct_start=0"], "scheduler.fn.pct_start must be a number in (0, 1)"),
    (["scheduler=snapshot", "scheduler.fn.cycles=0"], "scheduler.fn.cycles must be an integer >= 1"),
    (["scheduler=cyclic", "scheduler.fn.step_size_up=0"], "scheduler.fn.step_size_up must be an integer >= 1"),
    (["scheduler=cosine", "scheduler.interval=batch"], "scheduler.interval must be one of step, epoch"),
    (["scheduler=plateau", "scheduler.monitor=val/f1"], "scheduler.monitor must be one of val/loss, val/acc"),
    (["scheduler=plateau", "data.val_size=0"], "scheduler.monitor=val/loss needs a validation split"),
    # early stopping and checkpoint selection across groups
    (["callbacks=early_stopping", "data.val_size=0"], "callbacks.early_stopping.monitor=val/loss needs a validation"),
    (["reg=early_stopping", "data.val_size=0"], "reg.early_stopping needs a validation split"),
    (["callbacks=early_stopping", "trainer.limit_val_batches=0"], "needs a validation split"),
    (["callbacks=early_stopping", "callbacks.early_stopping.mode=max"], "callbacks.early_stopping.mode=max contra"),
    (["callbacks.model_checkpoint.monitor=val/f1"], "callbacks.model_checkpoint.monitor must be one of val/loss"),
    (["callbacks=early_stopping", "callbacks.early_stopping.patience=-1"], "callbacks.early_stopping.patience must"),
    # rules between the optimizer, model=transfer and the trainer (found by the build before issue 17)
    (["optimizer.backbone_lr_scale=0.1"], "backbone_lr_scale needs a model with a backbone; use model=transfer"),
    (["model=transfer", "optimizer=lbfgs", "optimizer.backbone_lr_scale=0.1"], "lbfgs takes a single parameter group"),
    (["model=transfer", "model.finetune=staged", "trainer.max_epochs=1"], "unfreeze_at_epoch must be in [1, trainer.m"),
    (["optimizer=lbfgs", "trainer.accumulate_grad_batches=2"], "use a larger data.batch_size instead of trainer.acc"),
    # rules between the ensemble, the scheduler, reg and model keys (found by the builders before issue 17)
    (["ensemble=snapshot", "scheduler=cosine"], "ensemble=snapshot takes snapshots at the LR minima of scheduler=snap"),
    (["ensemble=snapshot", "scheduler.fn.cycles=3"], "scheduler.fn.cycles=3 differs from ensemble.cycles=5; set ensem"),
    (["ensemble=swa", "ensemble.swa_lr=0.01", "scheduler=cosine"], "ensemble.swa_lr is set but the scheduler is '"),
    (["model=mlp", "model.dropout=0.2", "reg=dropout"], "model.dropout=0.2 and reg.dropout=0.5 set the same thing; k"),
    (["model=resnet", "model.stochastic_depth=0.9", "reg=stochastic_depth"], "model.stochastic_depth=0.9 and reg."),
    # the metric a sweep selects on (checked by the job before issue 17)
    (["optimized_metric=test/acc"], "optimized_metric=test/acc is not a validation metric; sweeps select on val/"),
    (["optimized_metric=val/f1"], "optimized_metric=val/f1: unknown metric"),
    # run keys
    (["seed=abc"], "seed must be an integer, got 'abc'; e.g. seed=1"),
    (["seed=1.5"], "seed must be an integer, got 1.5"),
    (["seed=true"], "seed must be an integer, got true"),
    (["test_weights=worst"], "test_weights must be one of best, last, got 'worst'"),
    (["nan_check_every=0"], "nan_check_every must be an integer >= 1"),
    (["test=maybe"], "test must be true or false"),
    # interpolations
    (["optimizer.lr=${foo}"], "optimizer.lr=${foo} cannot be resolved (Interpolation key 'foo' not found)"),
    (["optimizer.lr=${oc.env:ABLATE_TEST_UNSET_VARIABLE}"], "give a default, e.g. ${oc.env:LR,0.01}"),
    (["data.batch_size=${optimizer.nope}"], "data.batch_size=${optimizer.nope} cannot be resolved"),
    (["optimizer.lr=${data.name}"], "optimizer.lr must be a positive number, got 'synthetic'"),
    # Hydra's own errors: parsing, unknown options and keys, typed nodes
    (["optimizer=adm"], "optimizer=adm is not an option of optimizer; choose one of adadelta, adagrad"),
    (["model=transformer"], "model=transformer is not an option of model; choose one of convnet"),
    (["optimizer.lrr=0.1"], "optimizer.lrr is not a key of the config (Key 'lrr' is not in struct)"),
    (["model.width=64"], "model.width is not a key of the config"),
    (["optimizer.lr=héllo"], "cannot parse the override 'optimizer.lr=héllo'; quote values"),
    (["model.depth=二"], "cannot parse the override"),
    (["optimizer.lr='0.01"], "cannot parse the override"),
    (["data.batch_size=[1,2"], "cannot parse the override"),
    (["reg.dropout=abc"], "reg.dropout=abc: Value 'abc' of type 'str' could not be converted to Float"),
    (["reg=[dropout,foo]"], "reg=foo is not an option of reg"),
    (["aug.flip=yes"], "give aug.flip a value of its type"),
    (["~optimizer.foo"], "'optimizer.foo' does not exist"),
    (["+experiment=nope"], "experiment=nope is not an option of experiment"),
    (["reg.nothing=1"], "reg.nothing is not a key of the config"),
    (["optimizer.lr=1e-3,1e-2"], "Ambiguous value for argument 'optimizer.lr=1e-3,1e-2'; 1. To use it as a list"),
    (["optimizer.lr=1", "optimizer.lr=2", "optimizer.lr=abc"], "optimizer.lr must be a positive number, got 'abc'"),
]


def first_error(overrides: list[str], output_dir: Path) -> str:
    """The one line train.py prints for these overrides, computed in-process (no `error: ` prefix)."""
    try:
        cfg = compose_config(overrides, output_dir)
    except (HydraException, OmegaConfBaseException) as err:
        return hydra_error_line(err)
    try:
        validate(cfg)
    except ConfigError as err:
        return str(err)
    raise AssertionError(f"{overrides} passed validation")


def test_the_fuzz_list_is_long_enough():
    assert len(FUZZ) >= 60 and len({tuple(o) for o, _ in FUZZ}) == len(FUZZ)


@pytest.mark.parametrize(("overrides", "expected"), FUZZ, ids=[" ".join(o) for o, _ in FUZZ])
def test_hostile_override_is_one_line_naming_the_fix(overrides, expected, tmp_path):
    line = first_error(overrides, tmp_path)
    assert expected in line
    assert "\n" not in line and "; " in line  # `<what is wrong>; <what to do>`


@pytest.mark.parametrize("path_kind", ["missing", "folder", "text", "empty", "device"])
def test_ckpt_path_that_is_not_a_checkpoint(path_kind, tmp_path):
    path = {
        "missing": tmp_path / "nope.ckpt",
        "folder": tmp_path,
        "text": tmp_path / "notes.txt",
        "empty": tmp_path / "empty.ckpt",
        "device": Path("/dev/null"),
    }[path_kind]
    if path_kind in ("text", "empty"):
        path.write_text("not a checkpoint\n" if path_kind == "text" else "")
    line = first_error([f"ckpt_path={path}"], tmp_path / "run")
    assert line.startswith(f"ckpt_path={path} ") and "\n" not in line
    if path_kind == "folder":
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
        assert f"use ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}" in first_error([f"ckpt_path={path}"], tmp_path)


def every_option() -> list[list[str]]:
    """Override lists that together select every option of every group once: the i-th list takes the i-th option
    of each group (cycling), so ~20 compositions cover all ~80 files."""
    groups: dict[str, list[str]] = {}
    for path in sorted(CONFIG_DIR.glob("*/*.yaml")):
        if path.parent.name not in ("hydra", "paths", "debug", "experiment"):
            groups.setdefault(path.parent.name, []).append(path.stem)
    rows = max(len(options) for options in groups.values())
    lists = [[f"{group}={options[i % len(options)]}" for group, options in groups.items()] for i in range(rows)]
    displaced = []  # ensemble=snapshot|swa select their own scheduler (another one is refused): theirs on a row alone
    for overrides in lists:  # data.root is mandatory (???) for data=imagefolder: a missing one is refused
        overrides += ["data.root=images"] if "data=imagefolder" in overrides else []
        if "ensemble=snapshot" in overrides or "ensemble=swa" in overrides:
            displaced += [[o] for o in overrides if o.startswith("scheduler=")]
            overrides[:] = [o for o in overrides if not o.startswith("scheduler=")]
    return lists + displaced + [[f"experiment={path.stem}"] for path in sorted(CONFIG_DIR.glob("experiment/*.yaml"))]


def test_every_option_of_every_group_passes_validation(tmp_path):
    for overrides in every_option():
        cfg = compose_config(overrides, tmp_path, fast=False)
        warnings = validate(cfg)
        assert warnings == [] or "optimizer=lbfgs" in overrides, (overrides, warnings)


@pytest.mark.parametrize(
    "override",
    [
        "seed=-1",
        "seed=4294967296",
        "seed=123456789012345678901234567890",
        "optimizer.lr='0.01'",
        "trainer.max_epochs=2.0",
        "data.val_size=100",
        "data.val_size=0",
        "optimizer.lr=1",
        "trainer.gradient_clip_val=null",
        "scheduler=plateau",
        "data.num_folds=5",
        "callbacks=early_stopping",
    ],
)
def test_valid_values_pass(override, tmp_path):
    validate(compose_config([override], tmp_path))


def test_numeric_strings_from_the_environment_are_coerced(tmp_path, monkeypatch):
    monkeypatch.setenv("LR", "0.02")
    monkeypatch.setenv("EPOCHS", "3")
    cfg = compose_config(
        ["optimizer.lr=${oc.env:LR}", "trainer.max_epochs=${oc.env:EPOCHS}", "data.val_size=100.0"], tmp_path
    )
    before = OmegaConf.to_container(cfg)
    checked = check(cfg).config  # the checked copy holds the coerced values; cfg itself is not written
    assert OmegaConf.to_container(cfg) == before
    cfg = checked
    assert cfg.data.val_size == 100 and isinstance(cfg.data.val_size, int)  # a count, not a fraction
    assert cfg.optimizer.lr == 0.02 and isinstance(cfg.optimizer.lr, float)
    assert cfg.trainer.max_epochs == 3 and isinstance(cfg.trainer.max_epochs, int)
    assert OmegaConf.to_container(cfg.scheduler, resolve=True)["fn"]["max_lr"] == 0.02  # onecycle follows lr


def test_a_checkpoint_mode_against_its_metric_is_a_warning(tmp_path):
    # Training is unaffected, only the "best" pick is inverted (a test device elsewhere: best = the first epoch).
    warnings = validate(compose_config(["callbacks.model_checkpoint.mode=min"], tmp_path))
    assert warnings == [
        "callbacks.model_checkpoint.mode=min contradicts monitor val/acc (higher is better, "
        "ablate.config.metric_registry); "
        "use callbacks.model_checkpoint.mode=max, or leave it null to follow the monitor (the 'best' checkpoint is "
        "the worst epoch)"
    ]


def test_lbfgs_with_dropout_or_augmentation_is_a_one_line_warning(tmp_path):
    assert validate(compose_config(["optimizer=lbfgs"], tmp_path)) == []
    for extra, named in (["reg=dropout"], "reg.dropout"), (["aug=flip_crop"], "aug.flip, aug.crop_padding"):
        warnings = validate(compose_config(["optimizer=lbfgs", "model=mlp", *extra], tmp_path))
        assert len(warnings) == 1 and named in warnings[0] and "\n" not in warnings[0]


def test_any_integer_is_a_seed_folded_into_numpy_range():
    assert [effective_seed(s) for s in (0, 1, -1, 2**32, 2**32 + 5, -(2**40))] == [0, 1, 2**32 - 1, 0, 5, 0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.val_size=100000"], "data.val_size=100000 gives 100000 of 320 training samples to validation"),
        (["data.val_size=3"], "a stratified split needs between 10 and 310"),
        (["data.val_size=0.001"], "data.val_size=0.001 gives 0 of 320"),
        (["data.num_folds=1000"], "data.num_folds=1000 is more than the 32 samples of the largest class"),
        (["data.train_subset=250"], "data.train_subset=250 must be between 10 and 246 for the 256 training images"),
        (["data.train_subset=5"], "data.train_subset=5 must be between 10 and 246"),
    ],
)
def test_split_sizes_that_do_not_fit_the_data(overrides, expected, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config(overrides, tmp_path)
    validate(cfg)
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.data).prepare()
    assert expected in str(err.value) and "\n" not in str(err.value) and "; " in str(err.value)


def test_a_data_set_with_one_class_is_refused():
    from ablate.data import DataModule

    data = DataModule(name="synthetic", val_size=0, synthetic={"num_train": 50, "num_test": 10, "num_classes": 1})
    with pytest.raises(ConfigError, match="has only 1 class; a classifier needs two or more"):
        data.prepare()


def test_validation_does_not_import_torch(tmp_path):
    code = f"""
import sys
from hydra import compose, initialize_config_dir
import ablate
from ablate.runtime.cli import check_job, hydra_error_line, run_hydra
from ablate.config.rules import validate
with initialize_config_dir(config_dir={str(CONFIG_DIR)!r}, version_base="1.3"):
    cfg = compose(config_name="train", overrides=["paths.output_dir={tmp_path}", "optimizer=lbfgs", "reg=dropout"])
assert validate(cfg)
cfg.optimizer.lr = "abc"
try:
    validate(cfg)
except Exception as err:
    print(err)
try:
    check_job(cfg)  # the CLI's failure path: one line, a failed results.json, exit 2
except SystemExit as exit_info:
    assert exit_info.code == 2
assert "torch" not in sys.modules, "validation imported torch"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("optimizer.lr must be a positive number, got 'abc'")
    assert read_results(tmp_path)["status"] == "failed"


# -- as a user meets them: real processes --------------------------------------------------------------------------
SUBPROCESS_CASES = [
    (["optimizer.lr=abc"], "error: optimizer.lr must be a positive number, got 'abc'; e.g. optimizer.lr=0.01", True),
    (["trainer.max_epochs=true"], "error: trainer.max_epochs must be an integer >= 1, got true", True),
    (["optimizer.lr=${nope}"], "error: optimizer.lr=${nope} cannot be resolved", True),
    (["optimizer.lr=héllo"], "error: cannot parse the override 'optimizer.lr=héllo'", False),
    (["optimizer=adm"], "error: optimizer=adm is not an option of optimizer", False),
    (["data.val_size=100000"], "error: data.val_size=100000 gives 100000 of 320", True),  # after torch, in run.main
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "expected", "writes_results"), SUBPROCESS_CASES, ids=lambda v: str(v)[:40])
def test_cli_bad_input_exits_2_with_one_error_line(overrides, expected, writes_results, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*FAST, *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith(expected), proc.stderr
    assert not (run_dir / "checkpoints").exists()
    if writes_results:
        results = read_results(run_dir)
        assert results["status"] == "failed" and results["error"] == error_lines[0].removeprefix("error: ")


@pytest.mark.slow
def test_bad_job_in_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *FAST, "optimizer.lr=abc,-1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors[:2] == [
        "error: optimizer.lr must be a positive number, got 'abc'; e.g. optimizer.lr=0.01",
        "error: optimizer.lr must be a positive number, got -1; e.g. optimizer.lr=0.01",
    ]
    assert (
        proc.returncode != 0 and "2 of 2 sweep jobs did not complete" in errors[-1]
    )  # ablate.runtime.sweep_recap's recap
    assert [read_results(sweep / job)["status"] for job in ("0", "1")] == ["failed", "failed"]


def test_hydra_full_error_keeps_hydras_own_output(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "optimizer=adm"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "Could not find 'optimizer/adm'" in proc.stderr


def test_a_seed_beyond_numpys_range_trains_like_its_folded_seed(make_cfg):
    from ablate.runtime.job import train

    big = train(make_cfg(f"seed={2**32 + 7}", "model=mlp", "model.width=32", subdir="big"))
    folded = train(make_cfg("seed=7", "model=mlp", "model.width=32", subdir="folded"))
    assert big["metrics"] == folded["metrics"]


def test_a_schedule_too_short_for_its_phases_is_a_config_error(make_cfg):
    from ablate.runtime.job import train

    # 256 images / 64 = 4 steps: OneCycleLR's warm-up of 25% rounds to zero steps (torch divides by zero).
    with pytest.raises(ConfigError, match=r"^scheduler: the run is too short for this schedule \(4 steps\); raise"):
        train(make_cfg("scheduler=onecycle", "model=mlp", "data.batch_size=64"))


def test_lbfgs_trains_a_conv_model(make_cfg):
    from ablate.runtime.job import train

    # channels_last conv weights cannot be flattened with .view(-1), which torch's LBFGS does: NCHW is kept for it.
    summary = train(make_cfg("optimizer=lbfgs", "model=convnet", "data.batch_size=320"))
    assert summary["metrics"]["train/loss"] == summary["metrics"]["train/loss"]


def test_evaluate_py_reports_hydra_errors_in_one_line(tmp_path):
    proc = run_cli(["nope=1"], tmp_path, script="evaluate.py")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: nope is not a key of the config (Key 'nope' is not in struct); check the spelling "
        "(python evaluate.py --cfg job lists the keys), or add a new key with +nope=1"
    ]


def test_run_hydra_reports_errors_before_the_task_and_leaves_the_tasks_own(monkeypatch, capsys):
    from omegaconf.errors import InterpolationResolutionError

    from ablate.runtime.cli import run_hydra, task

    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # restored afterwards; run_hydra sets it to 1

    def resolver_fails() -> None:  # e.g. a run-folder resolver in hydra.run.dir, before the task runs
        try:
            raise ConfigError("run folder /x is a file; pick a folder")
        except ConfigError as err:
            raise InterpolationResolutionError("resolver failed") from err

    with pytest.raises(SystemExit) as info:
        run_hydra(resolver_fails)
    assert info.value.code == 2 and capsys.readouterr().err == "error: run folder /x is a file; pick a folder\n"

    @task
    def buggy(cfg):  # a bug inside the task keeps its traceback
        raise InterpolationResolutionError("a bug")

    with pytest.raises(InterpolationResolutionError):
        run_hydra(lambda: buggy(None))

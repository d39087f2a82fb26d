"""The training job: config -> data, model, module, trainer -> fit, test -> results.json.

``train(cfg)`` raises; ``main(cfg)`` (called by train.py) turns user errors into one-line messages and exit codes.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import EarlyStopping, ModelSummary, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from ablate.build.finetune import finetune_callbacks, pop_backbone_lr_scale
from ablate.config import metric_registry
from ablate.config.object_checks import check_optimization, check_run_length, is_lbfgs, optimizer_stepping
from ablate.config.rules import effective_seed, validate
from ablate.config.schema import AugmentConfig, InitConfig, RegConfig, typed
from ablate.data.augment import build_augment
from ablate.errors import AblateError, ConfigError, DivergedError
from ablate.models.init import apply_init
from ablate.runtime import resume as resuming
from ablate.runtime.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries
from ablate.runtime.cli import hydra_overrides, record_failure
from ablate.runtime.console import quiet_job, quiet_lightning
from ablate.runtime.history import History
from ablate.runtime.interrupt import STATE as SIGNALS
from ablate.runtime.interrupt import RunInterrupted, StopAtSafePoint
from ablate.runtime.interrupt import install as install_signal_handlers
from ablate.runtime.interrupt import restore as restore_signal_handlers
from ablate.runtime.loggers import log_final_hparams
from ablate.runtime.profiling import NullProfiler
from ablate.runtime.results import RunRecord
from ablate.runtime.rundir import check_folder
from ablate.runtime.sweep_objective import check_objective, divide_threads, objective
from ablate.training.ensembles import build_callbacks as build_ensemble_callbacks
from ablate.training.ensembles import ensemble_metrics, ensemble_summary
from ablate.training.module import ClassifierModule
from ablate.training.regularization import StepRegularizers, apply_dropconnect, check_reg, model_kwargs


def _instantiate(node: DictConfig, what: str, **kwargs: Any) -> Any:
    try:
        # _convert_="all": plain lists/dicts, so no OmegaConf object reaches an optimizer state or checkpoint.
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, AblateError):
            raise cause from None
        lines = [line.strip() for line in str(cause).splitlines() if not line.strip().startswith("full_key:")]
        message = " ".join(line for line in lines if line) or type(cause).__name__
        raise ConfigError(f"cannot build {what}: {message}; check `{what}` (python train.py --help)") from err


def _build_callbacks(cfg: DictConfig, has_val: bool) -> list[L.Callback]:
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if name == "model_checkpoint" and not has_val:
            node = OmegaConf.merge(node, {"monitor": None, "filename": "epoch{epoch:03d}"})
        callbacks.append(_instantiate(node, f"callbacks.{name}"))
    patience = cfg.reg.early_stopping_patience
    if patience:
        if not has_val:
            raise ConfigError("reg.early_stopping needs a validation split; set data.val_size > 0")
        callbacks.append(EarlyStopping(monitor="val/loss", mode=metric_registry.mode("val/loss"), patience=patience))
    callbacks.append(History(Path(cfg.paths.output_dir) / "history.csv"))  # per-epoch table for plots
    return callbacks


def _quiet(callbacks: list[L.Callback], quiet: bool) -> list[L.Callback]:
    """Without the progress bar and model summary when ``quiet`` (Lightning refuses them with those switched off)."""
    return [c for c in callbacks if not (quiet and isinstance(c, ProgressBar | ModelSummary))]


def _scheduler_fn(node: DictConfig) -> Any:
    """The schedule's factory; a plateau schedule's ``mode: null`` becomes its monitor's direction (metric registry)."""
    fn = _instantiate(node.fn, "scheduler.fn")
    if "mode" in node.fn and node.fn.mode is None and node.get("monitor"):
        fn = functools.partial(fn, mode=metric_registry.mode(node.monitor))
    return fn


def _use_plain_cuda_probe() -> None:
    """Undo Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` for a CPU run.

    Lightning sets it at import so that ``torch.cuda.is_available()`` cannot poison a later fork. On a CUDA build of
    torch without a driver, that check dlopens NVML on every call, and Adam/AdamW call it on every step (~0.1 ms,
    1-2% of a small model's step). A CPU run never initialises CUDA, so the plain check is safe here.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1":
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def _final_metrics(trainer: L.Trainer) -> dict[str, float]:
    # LearningRateMonitor's lr-<optimizer>/pg<i> holds the LR at the start of the last epoch (it logs at epoch start),
    # which reads as final and is not: results.json records the final LR as `lr_final` instead (_final_lrs).
    items = sorted(trainer.callback_metrics.items())
    return {k: float(v) for k, v in items if v.numel() == 1 and not k.startswith("lr-")}


def _final_lrs(trainer: L.Trainer) -> dict[str, float]:
    """Each parameter group's learning rate after the last optimizer and scheduler step (``AdamW/pg1``: group 1)."""
    return {
        f"{type(opt).__name__}/pg{i}": float(group["lr"])
        for opt in trainer.optimizers
        for i, group in enumerate(opt.param_groups, 1)
    }


def build_datamodule(cfg: DictConfig) -> Any:
    """The run's data, loaded and split (also used by evaluate.py to rebuild a run from its checkpoint config)."""
    datamodule = _instantiate(cfg.data, "data")
    datamodule.shuffle_seed = effective_seed(cfg.seed)  # any integer is a seed (ablate.config.rules)
    datamodule.prepare()
    return datamodule


def build_model(cfg: DictConfig, datamodule: Any, reg: RegConfig, init_cfg: InitConfig) -> torch.nn.Module:
    """The run's network with its reg-dependent layers (dropout rates, DropConnect, FMP), freshly initialised."""
    model = _instantiate(
        cfg.model,
        "model",
        input_shape=datamodule.input_shape,
        num_classes=datamodule.num_classes,
        **model_kwargs(cfg.model._target_, reg, cfg.model),
    )
    apply_init(model, init_cfg.scheme)
    apply_dropconnect(model, reg)
    return model


# Lightning warnings that do not apply to in-memory loaders and per-batch normalization in the module.
for _pattern in (
    ".*overridden `on_after_batch_transfer`.*",
    ".*does not have many workers.*",
    ".*Checkpoint directory .* exists and is not empty.*",  # a resumed run continues its own checkpoints
):
    warnings.filterwarnings("ignore", message=_pattern)
quiet_lightning()


def train(
    cfg: DictConfig,
    record: RunRecord | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    ckpt_path: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train (and test) one configuration. Raises AblateError subclasses for anything the user can fix.

    ``ckpt_path`` overrides ``cfg.ckpt_path`` (main passes the copy it made in a new run folder). ``quiet`` (a
    multirun job, which says one line when it ends): no progress bar, model summary or Lightning INFO lines.
    """
    ckpt_path = ckpt_path or cfg.get("ckpt_path") or None
    config_warnings = validate(cfg)  # train.py ran it before importing torch; this covers direct callers
    seed = effective_seed(cfg.seed)
    if record is not None and config_warnings:
        record.update(warnings=config_warnings)
    if record is not None and seed != cfg.seed:
        record.update(effective_seed=seed)  # any integer is a seed; this one is what numpy/torch received
    check_objective(cfg)
    torch_threads = divide_threads(cfg)  # jobs running at once share the cores (hydra/launcher=joblib)
    reg, aug_cfg, init_cfg = typed(cfg.reg, RegConfig), typed(cfg.aug, AugmentConfig), typed(cfg.init, InitConfig)
    check_reg(reg)
    ensemble_callbacks = build_ensemble_callbacks(cfg)  # [] for ensemble=none: nothing runs per step
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", False)))  # process-wide; no effect on GPU arithmetic
    L.seed_everything(seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule, reg, init_cfg)
    if getattr(model, "backbone_args", None) and not cfg.model.get("backbone_args"):
        # A backbone read from model.init_from's run: record it, so the checkpoint alone rebuilds this model.
        with open_dict(cfg):
            cfg.model.backbone_args = model.backbone_args
    if reg.input_noise:
        if aug_cfg.noise_std:
            raise ConfigError("reg.input_noise and aug.noise_std are the same technique; set only one")
        aug_cfg.noise_std = reg.input_noise
    augment = build_augment(vars(aug_cfg), datamodule.num_classes, datamodule.input_shape[1:])
    scheduler = None
    if cfg.get("scheduler"):
        scheduler = {
            "fn": _scheduler_fn(cfg.scheduler),
            "interval": cfg.scheduler.get("interval", "epoch"),
            "monitor": cfg.scheduler.get("monitor"),
        }
    optimizer_node, backbone_lr_scale = pop_backbone_lr_scale(cfg.optimizer)
    optimizer = _instantiate(optimizer_node, "optimizer")
    finetuning = finetune_callbacks(model, cfg, backbone_lr_scale, scheduler)  # model=transfer's strategies
    stepping = optimizer_stepping(cfg, optimizer)
    steps_per_epoch = math.ceil(len(datamodule.train_dataloader()) / stepping["accumulate_grad_batches"])
    # Ensemble cycles / EMA updates that fit the run, a cyclic LR cut mid-cycle: refused or warned before training.
    run_warnings = check_run_length(cfg, len(datamodule.train_dataloader()), stepping["accumulate_grad_batches"])
    if run_warnings:
        config_warnings = [*config_warnings, *run_warnings]
        if record is not None:
            record.update(warnings=config_warnings)
        if rank_zero_only.rank == 0:  # config warnings were printed by train.py's check_job; these are new
            for warning in run_warnings:
                print(f"warning: {warning}", file=sys.stderr)
    check_optimization(cfg, model, optimizer, scheduler, steps_per_epoch=steps_per_epoch)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    module = ClassifierModule(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        mean=datamodule.mean,
        std=datamodule.std,
        seed=seed,
        decay_bias_and_norm=bool(cfg.decay_bias_and_norm),
        backbone_lr_scale=backbone_lr_scale,
        label_smoothing=reg.label_smoothing,
        # torch's LBFGS flattens gradients with .view(-1), which NHWC (channels_last) conv weights do not allow.
        channels_last=bool(cfg.channels_last) and len(datamodule.input_shape) == 3 and not is_lbfgs(optimizer),
        nan_check_every=int(cfg.nan_check_every),
        run_config=run_config,
        augment=augment,
        regularizers=StepRegularizers(reg, model),
        eval_repeats=reg.fmp_test_repeats if reg.fmp else 1,
        **stepping,
    )
    has_val = len(datamodule.y_val) > 0
    if scheduler and str(scheduler["monitor"] or "").startswith("val/") and not has_val:
        raise ConfigError(f"scheduler.monitor={scheduler['monitor']} needs a validation split; set data.val_size > 0")
    loggers = [_instantiate(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()]
    # The module steps the optimizer itself (manual optimization), so clipping and accumulation are its job.
    extra_trainer_args = {"gradient_clip_val": None, "gradient_clip_algorithm": None, "accumulate_grad_batches": 1}
    if not cfg.trainer.get("profiler"):
        extra_trainer_args["profiler"] = NullProfiler()
    if quiet:
        quiet_job()
        extra_trainer_args.update(enable_progress_bar=False, enable_model_summary=False)
    trainer: L.Trainer = _instantiate(
        cfg.trainer,
        "trainer",
        callbacks=[
            *_quiet(_build_callbacks(cfg, has_val), quiet),
            *finetuning,
            *ensemble_callbacks,
            *extra_callbacks,
            StopAtSafePoint(),
        ],
        logger=loggers or False,
        # Atomic same-folder writes with a sha256 beside each checkpoint, verified on every load.
        plugins=[AtomicCheckpointIO()],
        **extra_trainer_args,
    )
    if isinstance(trainer.accelerator, CPUAccelerator):
        _use_plain_cuda_probe()
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)  # resolved: no ${...} reaches a logger

    num_params = sum(p.numel() for p in model.parameters())
    if record is not None:
        record.update(data=datamodule.summary(), num_params=num_params, torch_threads=torch_threads)
        if hasattr(model, "transfer_summary"):
            record.update(transfer=model.transfer_summary())
        record.update(versions={**record.data["versions"], "lightning": L.__version__})

    fit_start = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_time = time.time() - fit_start
    if SIGNALS.pending is not None:  # the signal came after the last safe point of the fit loop
        raise RunInterrupted(SIGNALS.pending)
    if trainer.interrupted:
        raise KeyboardInterrupt
    metrics = _final_metrics(trainer)
    metrics["val/acc_best"] = float(module.val_acc_best)
    if math.isfinite(float(module.val_loss_best)):  # inf: no validation epoch ran
        metrics["val/loss_best"] = float(module.val_loss_best)
    lr_final = _final_lrs(trainer)  # before test(), which sets the trainer up again
    checkpoint = trainer.checkpoint_callback  # read before test(), which restores the callback's older state
    checkpoints = {
        "checkpoint_best": getattr(checkpoint, "best_model_path", None) or None,
        "checkpoint_last": getattr(checkpoint, "last_model_path", None) or None,
    }
    per_class: dict[str, list[float]] = {}
    if cfg.get("test"):
        # Early stopping means "keep the best-validation weights", whatever test_weights says.
        use_best = (cfg.get("test_weights", "best") == "best" or reg.early_stopping_patience > 0) and has_val
        test_ckpt = checkpoints["checkpoint_best"] if use_best else None
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt or None, verbose=False)
        metrics.update({k: v for k, v in _final_metrics(trainer).items() if k.startswith("test/")})
        per_class = module.test_per_class  # {"test/acc": [accuracy of class 0, class 1, ...]}
    if ensemble_callbacks:  # the averaged / ensembled models, scored beside the raw weights
        device = trainer.strategy.root_device
        extra, extra_per_class = ensemble_metrics(ensemble_callbacks, module, datamodule, bool(cfg.get("test")), device)
        metrics.update(extra)
        per_class = {**per_class, **extra_per_class}
    log_final_hparams(trainer.loggers, int(cfg.seed), metrics)
    epochs = trainer.current_epoch
    summary = {
        "metrics": metrics,
        "metrics_per_class": per_class,
        "epochs": epochs,
        "global_step": trainer.global_step,
        "fit_time_s": round(fit_time, 3),
        "train_samples_per_s": round(epochs * len(datamodule.y_train) / max(fit_time, 1e-9), 1),
        "num_params": num_params,
        "device": str(trainer.strategy.root_device),
        "world_size": trainer.world_size,
        "lr_final": lr_final,
        **checkpoints,
    }
    if ensemble_callbacks:
        summary["ensemble"] = {"name": cfg.ensemble.name, **ensemble_summary(ensemble_callbacks)}
    if config_warnings:
        summary["warnings"] = config_warnings
    if record is not None:
        record.update(**summary)
    return summary


def _print_summary(summary: dict[str, Any], run_dir: Path, job: list[str] | None = None) -> None:
    """The final metrics; a multirun job (``job``: its overrides) in one line, the sweep's recap names the folder."""
    metrics = summary["metrics"]
    averaged = [f"test/acc_{variant}" for variant in ("snapshot_ens", "ema", "swa")]  # beside the single model
    keys = [k for k in ("test/acc", *averaged, "test/loss", "val/acc_best", "train/acc") if k in metrics]
    if _in_search():  # a search trial shows validation only: test numbers per trial invite choosing on test
        keys = [k for k in keys if not k.startswith("test/")]
    line = "  ".join(f"{k}={metrics[k]:.4f}" for k in keys)
    ensemble = summary.get("ensemble") or {}
    if ensemble.get("members_rule") == "auto":  # ensemble.members=auto: which size validation chose
        line += f"  (snapshot_ens: last {ensemble['members']} of {len(ensemble['snapshots'])}, m chosen on val)"
    timing = f"epochs={summary['epochs']}  fit={summary['fit_time_s']:.1f}s"
    if job is not None:  # a search's sweeper prints its own line per trial
        from ablate.runtime.sweep_recap import in_search, job_line

        if not in_search():
            print(job_line(job, f"{line}  {timing}"), flush=True)
        return
    print(f"\n{line}\n{timing}  run dir: {run_dir}")


def _in_search() -> bool:
    from ablate.runtime.sweep_recap import in_search

    return in_search()


def main(cfg: DictConfig) -> float | None:
    """Entry point for train.py: returns ``optimized_metric`` (a validation metric, for Hydra sweepers; None when the
    run failed or diverged inside a sweep) or exits non-zero with a clear message.

    Exit codes: 0 completed, 2 bad input (ablate.errors), 3 diverged, 128 + signal when interrupted (130 SIGINT,
    143 SIGTERM). In a sweep, a failed job is recorded and the sweep goes on; an interrupted job ends the sweep.
    """
    overrides, multirun = hydra_overrides()
    previous_handlers = install_signal_handlers()
    if multirun:
        sweep_dir = Path(cfg.paths.output_dir).parent
        SIGNALS.on_exit_between_jobs = lambda signum: print(_sweep_interrupted(sweep_dir, signum), file=sys.stderr)
    try:
        return _main(cfg, overrides, multirun)
    finally:
        SIGNALS.in_job = False
        if not multirun:  # a sweep keeps them between jobs: a signal there ends the sweep with its recap
            restore_signal_handlers(previous_handlers)


def _sweep_interrupted(sweep_dir: Path, signum: int) -> str:
    from ablate.runtime.sweep_recap import interrupted_message

    return interrupted_message(sweep_dir, signum)


def _main(cfg: DictConfig, overrides: list[str], multirun: bool) -> float | None:
    output_dir = Path(cfg.paths.output_dir)
    is_rank_zero = rank_zero_only.rank == 0
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an unresolvable ${...}: report it like any other config error
        print(f"error: {err}", file=sys.stderr)
        sys.exit(ConfigError.exit_code)
    check_folder(output_dir, "run folder")
    try:
        resume = resuming.plan(cfg, output_dir, rank_zero=is_rank_zero)
    except AblateError as err:  # a refused resume: one line, and a failed record unless the folder holds a run
        print(f"error: {err}", file=sys.stderr)
        if is_rank_zero:
            record_failure(cfg, overrides, str(err))
        sys.exit(ConfigError.exit_code)
    in_place = resume is not None and resume.in_place
    if is_rank_zero and (output_dir / "results.json").exists() and not in_place:
        print(
            f"error: run folder {output_dir} already holds another run's results.json; "
            "leave hydra.run.dir unset (every run gets a new folder) or pick an empty folder",
            file=sys.stderr,
        )
        sys.exit(ConfigError.exit_code)
    ckpt_path = None
    if in_place:
        # The same run, continued: original overrides and .hydra/ stay; this attempt is listed under "resumes".
        record = RunRecord.reopen(
            output_dir, {"overrides": overrides, "ckpt_path": resume.source, "changed": resume.changed}
        )
        config["ckpt_path"] = record.data["config"].get("ckpt_path")
        record.update(config=config)
        ckpt_path = resume.ckpt_path
        for folder in (output_dir, output_dir / "checkpoints"):
            remove_stale_temporaries(folder)  # what a kill -9 during a write left behind
        _keep_metrics_csv(output_dir, attempt=len(record.data["resumes"]))
    else:
        own = [o for o in overrides if not o.lstrip("+").startswith("ckpt_path=")]
        extra = {"resumed_from": resume.source} if resume is not None else {}
        record = RunRecord(output_dir, config, own, seed=cfg.get("seed"), **extra)
        if resume is not None:
            if is_rank_zero:
                resuming.prepare_new_folder(resume, output_dir)
            ckpt_path = resume.ckpt_path
    if is_rank_zero:
        record.write()
        record.start_heartbeat()
    try:
        summary = train(cfg, record, ckpt_path=ckpt_path, quiet=multirun)
    except AblateError as err:
        status = "diverged" if isinstance(err, DivergedError) else "failed"
        if is_rank_zero:
            record.finish(status, str(err))
        print(f"error: {err}\nresults: {record.path} (status: {status})", file=sys.stderr)
        if multirun:  # keep the sweep going; the table shows this run as failed/diverged
            return None
        sys.exit(err.exit_code)
    except (RunInterrupted, KeyboardInterrupt, SIGTERMException) as err:
        # SIGTERMException: Lightning's own SIGTERM flag, raised at a batch end (a SystemExit with code 0).
        signum = err.signum if isinstance(err, RunInterrupted) else 15 if isinstance(err, SIGTERMException) else 2
        _interrupted(record, output_dir, signum, is_rank_zero)
        if multirun:
            print(_sweep_interrupted(output_dir.parent, signum), file=sys.stderr)
        sys.exit(128 + signum)
    except Exception as err:
        if is_rank_zero:
            record.finish("failed", f"{type(err).__name__}: {err}")
        if not multirun:
            raise
        # One job's bug must not end the sweep: record it, show where, go on to the next job.
        traceback.print_exc()
        print(f"error: job failed with {type(err).__name__}: {err}\nresults: {record.path}", file=sys.stderr)
        return None
    if is_rank_zero:
        record.finish("completed")
        _print_summary(summary, output_dir, overrides if multirun else None)
    return objective(cfg, summary["metrics"])


def _keep_metrics_csv(output_dir: Path, attempt: int) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv: keep the earlier attempt's rows beside the new file."""
    csv = output_dir / "csv" / "metrics.csv"
    if csv.is_file():
        os.replace(csv, csv.with_name(f"metrics.before-resume-{attempt}.csv"))


def _interrupted(record: RunRecord, output_dir: Path, signum: int, is_rank_zero: bool) -> None:
    import shlex
    import signal

    last = output_dir / "checkpoints" / "last.ckpt"
    args = " ".join(shlex.quote(o) for o in record.data.get("overrides", []))
    how = f"python train.py {args} ckpt_path={last}".replace("  ", " ") if last.is_file() else "no checkpoint saved"
    from ablate.runtime.sweep_recap import search_resume_advice

    how = search_resume_advice() or how  # a search trial: rerun the search (a lone trial command would need -m)
    message = f"interrupted by {signal.Signals(signum).name}; resume: {how}"
    if is_rank_zero:
        record.finish("interrupted", message)
    print(f"error: {message}\nresults: {record.path} (status: interrupted)", file=sys.stderr)
    from ablate.runtime.interrupt import requeue_signal, requeue_slurm_job

    if signum == requeue_signal():
        requeue_slurm_job()

"""The training job: check -> build -> fit -> test -> record.

``train(cfg)`` raises; ``main(cfg)`` (called by train.py) turns user errors into one-line messages and exit codes.
The objects a run is made of come from ``ablate.build`` (a frozen Recipe); what this module adds is the run's
plumbing: results.json and history.csv, signals, checksummed checkpoint files, resume, the console.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ablate.build.recipe import Recipe, build
from ablate.config.rules import check, effective_seed
from ablate.errors import AblateError, ConfigError, DivergedError
from ablate.runtime import outcome
from ablate.runtime import resume as resuming
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
from ablate.runtime.sweep_continue import completed_before
from ablate.runtime.sweep_objective import check_objective, divide_threads, objective
from ablate.training import lightning_fast
from ablate.training.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries

# Lightning warnings that do not apply to in-memory loaders and per-batch normalization in the module.
for _pattern in (
    ".*overridden `on_after_batch_transfer`.*",
    ".*does not have many workers.*",
    ".*Checkpoint directory .* exists and is not empty.*",  # a resumed run continues its own checkpoints
    ".*Experiment logs directory .* exists and is not empty.*",  # resume moved metrics.csv aside before continuing
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
    checked = check(cfg)  # train.py checked before importing torch; this covers direct callers. cfg stays as given.
    cfg, seed = checked.config, effective_seed(checked.config.seed)
    if record is not None and checked.warnings:
        record.update(warnings=checked.warnings)
    if record is not None and seed != cfg.seed:
        record.update(effective_seed=seed)  # any integer is a seed; this one is what numpy/torch received
    check_objective(cfg)
    torch_threads = divide_threads(cfg)  # jobs running at once share the cores (hydra/launcher=joblib)

    recipe = build(cfg, quiet=quiet)
    run_warnings = _new_warnings(record, checked.warnings, [*lightning_fast.NOTES, *recipe.warnings])
    trainer = _trainer(cfg, recipe, extra_callbacks, quiet)
    if record is not None:
        record.update(**outcome.start_fields(recipe, torch_threads))
        record.update(versions={**record.data["versions"], "lightning": L.__version__})

    fit_start = time.time()
    trainer.fit(recipe.module, datamodule=recipe.datamodule, ckpt_path=ckpt_path)
    fit_time = time.time() - fit_start
    if SIGNALS.pending is not None:  # the signal came after the last safe point of the fit loop
        raise RunInterrupted(SIGNALS.pending)
    if trainer.interrupted:
        raise KeyboardInterrupt

    fitted = outcome.after_fit(trainer, recipe)
    per_class = outcome.test(trainer, recipe, fitted, run_test=bool(cfg.get("test")))
    log_final_hparams(trainer.loggers, int(cfg.seed), fitted.metrics)
    summary = outcome.summarize(trainer, recipe, fitted, per_class, fit_time, run_warnings)
    if record is not None:
        record.update(**summary)
    return summary


def _new_warnings(record: RunRecord | None, config_warnings: list[str], built: Sequence[str]) -> list[str]:
    """The run's warnings: the rule book's (train.py printed them) and building's and the framework guards' (printed
    here, being new)."""
    if not built:
        return config_warnings
    every = [*config_warnings, *built]
    if record is not None:
        record.update(warnings=every)
    if rank_zero_only.rank == 0:
        for warning in built:
            print(f"warning: {warning}", file=sys.stderr)
    return every


def _trainer(cfg: DictConfig, recipe: Recipe, extra_callbacks: Sequence[L.Callback], quiet: bool) -> L.Trainer:
    """The recipe's Trainer with the run's plumbing: history.csv, signals handled at safe points (last), atomic
    checksummed checkpoint files, and a profiler that costs nothing unless one is asked for."""
    if quiet:
        quiet_job()
    profiler = {} if cfg.trainer.get("profiler") else {"profiler": NullProfiler()}
    trainer = recipe.trainer(
        recorders=[History(Path(cfg.paths.output_dir) / "history.csv")],  # per-epoch table for plots
        extra=[*extra_callbacks, StopAtSafePoint()],
        plugins=[AtomicCheckpointIO()],  # same-folder writes, a sha256 beside each checkpoint, verified on load
        **profiler,
    )
    if isinstance(trainer.accelerator, CPUAccelerator):
        _use_plain_cuda_probe()
    for logger in trainer.loggers:
        logger.log_hyperparams(recipe.run_config)  # resolved: no ${...} reaches a logger
    return trainer


def _use_plain_cuda_probe() -> None:
    """Undo Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` for a CPU run.

    Lightning sets it at import so that ``torch.cuda.is_available()`` cannot poison a later fork. On a CUDA build of
    torch without a driver, that check dlopens NVML on every call, and Adam/AdamW call it on every step (~0.1 ms,
    1-2% of a small model's step). A CPU run never initialises CUDA, so the plain check is safe here.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1":
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


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
        cfg = check(cfg).config  # the rule book's checked copy: what results.json records and train builds
    except ConfigError as err:  # train.py's check_job caught this before; direct callers get the same answer
        where = record_failure(cfg, overrides, str(err)) if is_rank_zero else None
        print(f"error: {err}" + (f"\nresults: {where} (status: failed)" if where else ""), file=sys.stderr)
        if multirun:
            return None
        sys.exit(err.exit_code)
    check_folder(output_dir, "run folder")
    if multirun and is_rank_zero and (earlier := completed_before(output_dir, overrides)) is not None:
        return objective(cfg, earlier.get("metrics") or {})  # completed before: skipped, its folder untouched
    record, ckpt_path = _open_record(cfg, overrides, output_dir, is_rank_zero)
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
        outcome.print_summary(summary, output_dir, overrides if multirun else None)
    return objective(cfg, summary["metrics"])


def _open_record(
    cfg: DictConfig, overrides: list[str], output_dir: Path, is_rank_zero: bool
) -> tuple[RunRecord, str | None]:
    """The run's results.json (new, or reopened for a resume in place) and the checkpoint fit starts from."""
    config = OmegaConf.to_container(cfg, resolve=True)
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
    if in_place:
        # The same run, continued: original overrides and .hydra/ stay; this attempt is listed under "resumes".
        record = RunRecord.reopen(
            output_dir, {"overrides": overrides, "ckpt_path": resume.source, "changed": resume.changed}
        )
        config["ckpt_path"] = record.data["config"].get("ckpt_path")
        record.update(config=config)
        for folder in (output_dir, output_dir / "checkpoints"):
            remove_stale_temporaries(folder)  # what a kill -9 during a write left behind
        _keep_metrics_csv(output_dir, attempt=len(record.data["resumes"]))
        return record, resume.ckpt_path
    own = [o for o in overrides if not o.lstrip("+").startswith("ckpt_path=")]
    extra = {"resumed_from": resume.source} if resume is not None else {}
    record = RunRecord(output_dir, config, own, seed=cfg.get("seed"), **extra)
    if resume is not None and is_rank_zero:
        resuming.prepare_new_folder(resume, output_dir)
    return record, resume.ckpt_path if resume is not None else None


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

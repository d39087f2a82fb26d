"""Resuming from ``ckpt_path``: which folder the run continues in, and which settings may change.

- An interrupted run (status ``interrupted``, or ``running`` with its process gone) continues in its own folder:
  the run-folder resolver (ablate.runtime.rundir) already chose that folder, its ``results.json`` goes on to its final
  status, and ``resumes`` lists each continuation (time, its overrides, the checkpoint).
- Anything else (a finished run, a checkpoint outside a run folder, an explicit ``hydra.run.dir``) continues in a
  new folder: the source checkpoints are copied there first, so the old folder is only ever read. The new run's
  ``results.json`` records ``resumed_from``.
- The checkpoint fixes the run: a setting that differs from its ``ablate_config`` is refused (exit 2), except the
  short list in ``MAY_CHANGE``. ``trainer.max_epochs`` may grow only when the schedule does not depend on the run
  length (a factory with ``total_steps``: onecycle, cosine, snapshot, warmup_cosine fixed their length at start).
"""

from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from ablate.errors import ConfigError
from ablate.runtime.rundir import checkpoint_run, status_of
from ablate.training.checkpoint_io import checksum_path, load_verified, verify

# Settings that do not change what is trained (prefixes of dotted keys); everything else is fixed by the checkpoint.
MAY_CHANGE = (
    "ckpt_path",
    "test",
    "test_weights",
    "tags",
    "task_name",
    "logger",
    "paths",
    "hparams_search",
    "nan_check_every",
    "callbacks.progress_bar",
    "callbacks.lr_monitor",
    "callbacks.model_checkpoint.dirpath",
    "callbacks.model_checkpoint.verbose",
    "data.data_dir",
    "data.download",
    "data.eval_batch_size",
    "trainer.default_root_dir",
    "trainer.accelerator",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps",
    "trainer.limit_test_batches",
    "trainer.profiler",
)
EXTENDABLE = "trainer.max_epochs"


@dataclass
class ResumePlan:
    ckpt_path: str  # what Lightning loads: the checkpoint itself (in place) or its copy in the new folder
    source: str  # the checkpoint the user named
    in_place: bool
    source_run: Path | None
    changed: dict[str, Any] = field(default_factory=dict)  # allowed changes: key -> [checkpoint's, now]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): node}


def _prefixed(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _may_change(key: str) -> bool:
    return _prefixed(key, MAY_CHANGE)


def fixed_length_schedule(config: dict[str, Any]) -> str | None:
    """The scheduler target when its length was fixed at the start (its factory takes ``total_steps``)."""
    target = ((config.get("scheduler") or {}).get("fn") or {}).get("_target_")
    if not target:
        return None
    try:
        fn = get_method(target)
    except Exception:
        return None
    return target if "total_steps" in inspect.signature(fn).parameters else None


# Classes that configs name by ``_target_`` and that moved when src/ablate was regrouped by stage (issue 17): a run
# started before keeps the old dotted path in its checkpoint's config, and resuming it is not a changed setting.
MOVED_TARGETS = {
    "ablate.callbacks.": "ablate.training.callbacks.",
    "ablate.loggers.": "ablate.runtime.loggers.",
    "ablate.profiling.": "ablate.runtime.profiling.",
}


def _current_target(value: Any) -> Any:
    if isinstance(value, str):
        for old, new in MOVED_TARGETS.items():
            if value.startswith(old):
                return new + value[len(old) :]
    return value


def check_unchanged(saved: dict[str, Any], now: dict[str, Any], ckpt: str) -> dict[str, Any]:
    """Refuse settings that differ from the checkpoint's; return the allowed differences."""
    old, new = {k: _current_target(v) for k, v in _flat(saved).items()}, _flat(now)
    changed = {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    refused = [k for k in changed if not _may_change(k) and k != EXTENDABLE]
    if refused:
        key, (was, is_now) = refused[0], changed[refused[0]]
        more = f" (and {len(refused) - 1} more: {', '.join(refused[1:4])})" if len(refused) > 1 else ""
        raise ConfigError(
            f"ckpt_path {ckpt} was trained with {key}={was}, not {is_now}{more}; a resumed run keeps the "
            f"checkpoint's settings: drop the override, or start a new run without ckpt_path"
        )
    if EXTENDABLE in changed and (schedule := fixed_length_schedule(saved)):
        was, is_now = changed[EXTENDABLE]
        raise ConfigError(
            f"trainer.max_epochs cannot change from {was} to {is_now} on resume: the schedule {schedule} fixed its "
            f"length at the start; start a new run with trainer.max_epochs={is_now}"
        )
    noise = ("ckpt_path", "paths", "callbacks.model_checkpoint.dirpath", "trainer.default_root_dir")
    return {k: v for k, v in changed.items() if not _prefixed(k, noise)}


def _copy_checkpoints(source: Path, folder: Path) -> Path:
    """Copy the source run's checkpoints (with their .sha256) into ``folder``; return the copy of ``source``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(source.parent.glob("*.ckpt")) if source.parent.name == "checkpoints" else [source]
    for ckpt in files:
        for path in (ckpt, checksum_path(ckpt)):
            if path.is_file() and not (folder / path.name).exists():
                shutil.copyfile(path, folder / path.name)  # copyfile: the new file's mode follows the umask
    copy = folder / source.name
    verify(copy)
    return copy


def _started_elsewhere(source: Path, output_dir: Path) -> bool:
    """Whether ``source`` is a checkpoint outside ``output_dir`` (where the run in ``output_dir`` started from)."""
    return source.is_file() and checkpoint_run(source) != output_dir.resolve()


def plan(cfg: DictConfig, output_dir: Path, rank_zero: bool = True) -> ResumePlan | None:
    """Check a resume before anything is written; None when ``ckpt_path`` is not set.

    Other DDP ranks start after rank 0 has reopened the record (``running``) and only read the plan.
    """
    source = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    # A run started in an interrupted run's folder (a SLURM requeue: ablate.runtime.rundir chose it; a sweep job run
    # again: ablate.runtime.sweep_continue) continues it, from its own last.ckpt even when the command's ckpt_path
    # names the checkpoint it started from.
    own = status_of(Path(output_dir)) == "interrupted"
    if source is None or (own and _started_elsewhere(source, Path(output_dir))):
        if not own:
            return None
        source = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not source.is_file():  # interrupted before its first epoch ended: start again, in the same folder
            return ResumePlan("", "", True, Path(output_dir))
    if not source.is_file():
        raise ConfigError(f"ckpt_path {source} does not exist; pass a run's checkpoints/last.ckpt")
    checkpoint = load_verified(source)
    saved = checkpoint.get("ablate_config") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(f"ckpt_path {source} holds no ablate_config; pass a checkpoint written by train.py")
    changed = check_unchanged(saved, OmegaConf.to_container(cfg, resolve=True), str(source))
    run = checkpoint_run(source)
    status = status_of(run) if run is not None else None
    if rank_zero and status == "running":
        raise ConfigError(f"the run in {run} is still running; wait for it to end (or stop it) before resuming it")
    # Only an interrupted run continues in place; a finished run's folder is never written again.
    in_place = run == Path(output_dir).resolve() and (status == "interrupted" or not rank_zero)
    if in_place:
        return ResumePlan(str(source), str(source.resolve()), True, run, changed)
    copy = Path(output_dir) / "checkpoints" / source.name
    return ResumePlan(str(copy), str(source.resolve()), False, run, changed)


def prepare_new_folder(resume: ResumePlan, output_dir: Path) -> None:
    """Copy the source checkpoints into the new run's folder (after the checks; the source is only read)."""
    _copy_checkpoints(Path(resume.source), Path(output_dir) / "checkpoints")
    history = resume.source_run / "history.csv" if resume.source_run is not None else None
    if history is not None and history.is_file():  # the curves start at epoch 0; rows after the checkpoint go
        shutil.copyfile(history, Path(output_dir) / "history.csv")

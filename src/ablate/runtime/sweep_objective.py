"""What a job in a sweep needs from the sweep.

- ``objective``: the value train.py returns to Hydra sweepers: ``optimized_metric`` (a validation metric), or None
  for a run that produced no finite value, which the sweeper records as failed (never a made-up number).
- ``divide_threads``: torch threads per job, so jobs that run at once (hydra/launcher=joblib) share the cores
  instead of each starting one thread per core and fighting over them.

What the sweep says when it ends (recap, exit code) is in ``ablate.runtime.sweep_recap``. Imports no torch at module
level.
"""

from __future__ import annotations

import math
import os

from omegaconf import DictConfig

from ablate.config.rules.search import optimized_metric
from ablate.errors import ConfigError


def _check_search_is_a_multirun() -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    search = hydra_cfg.runtime.choices.get("hparams_search")
    if search and hydra_cfg.mode != RunMode.MULTIRUN:
        raise ConfigError(
            f"hparams_search={search} runs a search of many jobs; "
            f"add -m (python train.py -m hparams_search={search} ...)"
        )


def check_objective(cfg: DictConfig) -> str:
    """``optimized_metric`` (its rule is the rule book's, ``ablate.config.rules.search.optimized_metric``); also
    refuses a search started without -m, which only Hydra's run mode can tell."""
    _check_search_is_a_multirun()
    return optimized_metric(cfg)


def objective(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """``metrics[optimized_metric]``; None when it is missing or not finite (the sweeper counts the job as failed)."""
    value = metrics.get(check_objective(cfg))
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (joblib's n_jobs semantics); 1 outside a sweep."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return n_jobs if n_jobs > 0 else max(_cores() + 1 + n_jobs, 1)  # joblib: -1 = all cores, -2 = all but one


def divide_threads(cfg: DictConfig) -> int:
    """Set torch's intra-op threads: ``torch_threads``, else the cores divided by the jobs running at once."""
    import torch

    threads = cfg.get("torch_threads")
    if threads is None:
        jobs = parallel_jobs()
        if jobs == 1:
            return torch.get_num_threads()
        threads = max(1, _cores() // jobs)
    torch.set_num_threads(int(threads))
    return int(threads)

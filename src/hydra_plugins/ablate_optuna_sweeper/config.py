"""The ``hydra/sweeper=ablate_optuna`` config node (every key documented in configs/hparams_search/random.yaml)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class AblateOptunaSweeperConf:
    _target_: str = "hydra_plugins.ablate_optuna_sweeper.sweeper.AblateOptunaSweeper"
    # random | tpe | grid
    sampler: str = "tpe"
    seed: int = 0
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    # The value train.py returns; ablate.config.metric_registry gives its direction (auto) unless `direction` is
    # minimize/maximize. A metric the recipe does not write is refused before the first trial.
    metric: str = "${oc.select:optimized_metric,val/acc_best}"
    direction: str = "auto"
    # Trials in the study in all (finished + running); null: the grid's size (grid) or an error (other samplers).
    n_trials: Any = None
    # Trials launched at once (in parallel with hydra/launcher=joblib, submitit_*).
    n_jobs: int = 1
    # null: <searches_dir>/<study name>/optuna.db; any SQLAlchemy URL (postgresql://, mysql://) to share a study.
    storage: Any = None
    # null: <sampler>-<hash of the command's overrides, space and seed>, so the same command finds its study again.
    study_name: Any = None
    # Where a search's sweep dir goes (unless hydra.sweep.dir is given on the command line).
    searches_dir: str = "${oc.select:paths.log_dir,logs}/searches"
    # Seeds per setting (seed, seed+1, ...) and k-fold CV (all folds when data.num_folds >= 2): objective = mean.
    repeats: Any = "${oc.select:search.repeats,1}"
    num_folds: Any = "${oc.select:data.num_folds,0}"
    # null | median (stops trials whose validation curve falls below the median; needs one job per trial).
    pruner: Any = None
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    # The search space: key -> Hydra sweep syntax, e.g. `tag(log, interval(1e-4, 1e-1))`, `choice(a, b)`, `range(1, 4)`.
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="ablate_optuna", node=AblateOptunaSweeperConf, provider="ablate"
)

"""The Optuna study of a search: its sampler and pruner, its name (derived from the command, so the same command
resumes it), its RDB storage, a resumed study's checks (same direction, same space), trials a killed sweeper left
RUNNING, and the trials' statuses in the words of the sweep recap."""

from __future__ import annotations

import hashlib
import inspect
import json
import socket
from typing import TYPE_CHECKING, Any

from ablate.training.liveness import pid_alive
from hydra_plugins.ablate_optuna_sweeper import optuna_compat
from hydra_plugins.ablate_optuna_sweeper.space import SearchError

if TYPE_CHECKING:
    import optuna

# Overrides that do not change what a trial computes, so they do not change the study's name either.
_NOT_IN_STUDY_NAME = ("hydra.", "hydra/", "ckpt_path")


def _build_sampler(cls: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """The sampler, or a one-line error naming the keyword arguments it takes (Optuna raises a bare TypeError)."""
    taken = [
        p for p in inspect.signature(cls).parameters if p not in ("self", "seed", "search_space", "args", "kwargs")
    ]
    unknown = sorted(set(kwargs) - set(inspect.signature(cls).parameters))
    if unknown:
        raise SearchError(
            f"error: hydra.sweeper.sampler_kwargs: the {name} sampler takes no {', '.join(unknown)}; "
            f"it takes {', '.join(taken) or 'no keyword arguments (besides seed)'}"
        )
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise SearchError(f"error: hydra.sweeper.sampler_kwargs {kwargs}: {err}") from None


def make_sampler(params: dict[str, Any], name: str, space: dict[str, Any], trials_so_far: int) -> Any:
    """The sampler ``name`` with the search's seed and ``sampler_kwargs``."""
    import optuna

    seed = params.get("seed")
    if seed is not None and trials_so_far:
        # A resumed search must not replay the first run's random draws: shift the seed by the trials so far.
        seed = int(seed) + trials_so_far
    kwargs = dict(params.get("sampler_kwargs") or {})
    if name == "random":
        return _build_sampler(optuna.samplers.RandomSampler, name, seed=seed, **kwargs)
    if name == "tpe":
        return _build_sampler(optuna.samplers.TPESampler, name, seed=seed, **kwargs)

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            # Optuna's calls study.stop(), which works only inside study.optimize; the sweeper stops by itself.
            pass

    return _build_sampler(AskTellGridSampler, name, space, seed=seed, **kwargs)


def study_name(params: dict[str, Any], fixed: list[str], space: dict[str, Any], sampler: str) -> str:
    if params.get("study_name"):
        return str(params["study_name"])
    kept = sorted(o for o in fixed if not o.startswith(_NOT_IN_STUDY_NAME))
    content: dict[str, Any] = {"overrides": kept, "space": {k: repr(v) for k, v in sorted(space.items())}}
    if params.get("seed") not in (None, 0):
        # Another sampler seed is another search (not a resume of seed 0's); seed 0 keeps the old names.
        content["sampler_seed"] = int(params["seed"])
    key = json.dumps(content)
    return f"{sampler}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def fail_interrupted(study: optuna.Study, storage: str) -> int:
    """Trials a killed sweeper on this machine left RUNNING: mark them FAIL and queue their parameters again."""
    from optuna.trial import TrialState

    host, retried = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != host or pid_alive(int(attrs.get("pid", -1))):
            continue  # another machine's (or a live process's) trial
        # A finished trial's attributes are read-only, so mark it through the storage (Optuna's public
        # BaseStorage API) before telling it FAIL.
        optuna_compat.set_trial_attr(study, trial.number, storage, "status", "interrupted")
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        retried += 1
    return retried


def counted(study: optuna.Study) -> int:
    """Trials that use up the budget: every trial except those interrupted (they are run again)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") != "interrupted")


def has_waiting(study: optuna.Study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _build_pruner(kwargs: dict[str, Any]) -> Any:
    import optuna

    try:
        return optuna.pruners.MedianPruner(**kwargs)
    except (TypeError, ValueError) as err:
        taken = [p for p in inspect.signature(optuna.pruners.MedianPruner).parameters if p != "self"]
        raise SearchError(
            f"error: hydra.sweeper.pruner_kwargs {kwargs}: {err}; the median pruner takes {', '.join(taken)}"
        ) from None


def _open_study(name: str, storage: str, sampler: Any, direction: str, pruner: Any) -> optuna.Study:
    """Create or load the study; a storage URL that cannot be parsed or opened is a one-line error."""
    import optuna

    try:
        return optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, direction=direction, load_if_exists=True, pruner=pruner
        )
    except Exception as err:  # SQLAlchemy's ArgumentError, NoSuchModuleError, OperationalError, ...: all unusable URLs
        if isinstance(err, SearchError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SearchError(
            f"error: hydra.sweeper.storage={storage} cannot be opened ({type(err).__name__}: {first}); give a "
            "SQLAlchemy URL that this machine can reach, e.g. sqlite:///search.db or postgresql://user@host/db "
            "(null: <sweep dir>/optuna.db)"
        ) from None


def _check_same_space(study: optuna.Study, distributions: dict[str, Any], storage: str) -> None:
    """A resumed study must keep its search space: Optuna's samplers cannot mix spaces (they fail mid-sweep)."""
    import optuna

    wanted = {k: optuna.distributions.distribution_to_json(v) for k, v in sorted(distributions.items())}
    stored = study.user_attrs.get("space")
    if stored is None:
        if not study.trials:
            study.set_user_attr("space", wanted)
            return
        stored = {}  # a study from before the space was recorded: compare with its trials' distributions
        for trial in study.get_trials(deepcopy=False):
            stored.update({k: optuna.distributions.distribution_to_json(v) for k, v in trial.distributions.items()})
        if not stored:
            return
    changed = [k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if changed:

        def shown(space: dict[str, str], key: str) -> str:
            return repr(optuna.distributions.json_to_distribution(space[key])) if key in space else "absent"

        diff = "; ".join(f"{k}: was {shown(stored, k)}, now {shown(wanted, k)}" for k in changed)
        raise SearchError(
            f"error: study {study.study_name} in {storage} was run with another search space ({diff}); "
            "resume it with its original space, or start a new study (another hydra.sweeper.study_name)"
        )


def trial_statuses(study: optuna.Study) -> dict[str, str]:
    """{trial number: status} in Optuna's terms: completed, pruned, failed / diverged / interrupted (FAIL), running."""
    from optuna.trial import TrialState

    statuses = {}
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE:
            statuses[str(trial.number)] = "completed"
        elif trial.state == TrialState.PRUNED:
            statuses[str(trial.number)] = "pruned"
        elif trial.state == TrialState.FAIL:
            status = trial.user_attrs.get("status")
            statuses[str(trial.number)] = status if status in ("diverged", "interrupted") else "failed"
        elif trial.state == TrialState.RUNNING:
            statuses[str(trial.number)] = "running"
    return statuses

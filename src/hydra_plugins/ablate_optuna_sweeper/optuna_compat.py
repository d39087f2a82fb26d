"""The sweeper's access to Optuna trials outside the ask/tell pair, through Optuna's public storage API only.

Optuna's ``Study`` has no public handle on its storage and its trials no public storage id, so the sweeper used
the study's and trial's private attributes. Here the same storage is opened from its URL (``optuna.storages.
RDBStorage``, public) and a trial's id looked up from its number (``BaseStorage``'s public
``get_trial_id_from_study_id_trial_number``): no private name, so no version guard. It costs one storage lookup
per call, a few milliseconds per trial (never per training step).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


@lru_cache(maxsize=4)
def _storage(url: str) -> optuna.storages.BaseStorage:
    import optuna

    return optuna.storages.RDBStorage(url)


def trial_id(study: optuna.Study, number: int, url: str) -> int:
    """The storage's id of trial ``number`` of ``study`` (what a job needs to reattach to the trial)."""
    storage = _storage(url)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def set_trial_attr(study: optuna.Study, number: int, url: str, key: str, value: Any) -> None:
    """A user attribute of a trial this process did not ask for (a killed sweeper's RUNNING trial)."""
    _storage(url).set_trial_user_attr(trial_id(study, number, url), key, value)


def fresh_user_attrs(study: optuna.Study, number: int) -> dict[str, Any]:
    """A running trial's user attributes as stored now, including those its job wrote from another process (a live
    ``Trial``'s ``user_attrs`` is a copy cached when it was asked). Unfinished trials are always read from storage."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number == number:
            return trial.user_attrs
    return {}

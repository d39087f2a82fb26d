"""The rule book: every value rule and every cross-option rule of every entry point, in one place, torch-free.

- ``core``: the :class:`Rule` type and :func:`check_value` (one line per error: ``<key> must be <what>, got <value>;
  e.g. <key>=<example>``);
- ``train_keys``: train.py's keys (``RULES``, ``rule_for``, ``effective_seed``); ``typed_nodes``: the reg / aug knobs;
  ``cross``: rules between keys; ``passes``: the one pass, :func:`check` (a checked copy + warnings) and
  :func:`validate` (the warnings only; neither writes into the config it is given);
- ``evaluate``: evaluate.py's keys; ``search``: the Optuna sweeper's settings and space, and train.py's
  ``optimized_metric``; ``table``: the table command's options.

Checks that need built objects or loaded data stay where those exist (``ablate.build.object_checks``, the data
module's split sizes); they name the key the same way. This package imports no torch (a test checks ``sys.modules``).
"""

from ablate.config.rules.core import Rule, check_value, choice, flag, fraction, integer, number, positive
from ablate.config.rules.cross import has_validation
from ablate.config.rules.evaluate import DEVICE, EVALUATE_RULES, validate_evaluate
from ablate.config.rules.passes import Checked, check, resolve, validate
from ablate.config.rules.search import SEARCH_RULES, validate_search
from ablate.config.rules.train_keys import (
    LBFGS,
    METRICS,
    MONITORABLE,
    PLATEAU,
    RULES,
    SEED_MODULUS,
    effective_seed,
    rule_for,
)
from ablate.config.rules.typed_nodes import AugmentConfigError, check_aug, check_reg

_has_validation = has_validation  # the name the Optuna sweeper imported before the rule book became a package

__all__ = [
    "DEVICE",
    "EVALUATE_RULES",
    "LBFGS",
    "METRICS",
    "MONITORABLE",
    "PLATEAU",
    "RULES",
    "SEARCH_RULES",
    "SEED_MODULUS",
    "AugmentConfigError",
    "Checked",
    "Rule",
    "check",
    "check_aug",
    "check_reg",
    "check_value",
    "choice",
    "effective_seed",
    "flag",
    "fraction",
    "has_validation",
    "integer",
    "number",
    "positive",
    "resolve",
    "rule_for",
    "validate",
    "validate_evaluate",
    "validate_search",
]

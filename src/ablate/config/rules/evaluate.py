"""The rules of evaluate.py (configs/evaluate.yaml), checked before any run is read or model loaded."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ablate.config.rules.core import Rule, check_value, choice, integer
from ablate.config.rules.passes import resolve
from ablate.errors import ConfigError

EVALUATE_RULES: dict[str, Rule] = {
    "run": Rule(str, "logs/runs/<time>", nullable=True),
    "sweep": Rule(str, "logs/multiruns/<time>", nullable=True),
    "setting": Rule(str, "'reg=none'", nullable=True, why="overrides of one setting of the sweep, space-separated"),
    "top_k": integer(3, low=1, nullable=True, why="how many of the best runs to keep; null keeps all"),
    "metric": Rule(str, "val/acc_best"),
    "metric_mode": choice("auto", "min", "max"),
    "weights": Rule(str, "last", choices=("best", "last"), nullable=True, why="null: the weights each run tested"),
    "ensemble.space": choice("prob", "logit"),
    "eval.mc_samples": integer(20, low=0, why="0 turns MC dropout off"),
    "eval.tta": Rule(str, "flip", choices=("flip",), nullable=True, why="null turns it off"),
    "batch_size": integer(1000, low=1, nullable=True, why="null: each run's data.eval_batch_size"),
    "device": Rule(str, "cpu"),  # and DEVICE's spelling
    "seed": integer(0),
}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def validate_evaluate(cfg: DictConfig) -> DictConfig:
    """evaluate.py's keys against EVALUATE_RULES, the device's spelling and the run list. Returns a checked copy of
    ``cfg`` (numeric strings coerced); ``cfg`` itself is not written. Whether the device exists is asked of torch by
    ablate.evaluation.saved_runs, still before any model is loaded."""
    plain = resolve(cfg)
    checked = copy.deepcopy(cfg)
    for key, rule in EVALUATE_RULES.items():
        node: Any = plain
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError:
            continue
        value = check_value(key, node, rule)
        if value != node or type(value) is not type(node):
            with open_dict(checked):
                OmegaConf.update(checked, key, value, merge=False, force_add=True)
    device = plain.get("device")
    if not DEVICE.fullmatch(str(device or "auto")):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:<index> or mps, got {device!r}; e.g. device=cpu")
    _check_run_list(plain.get("runs"))
    return checked


def _check_run_list(runs: Any) -> None:
    """``runs=dir`` or ``runs='[d1,d2]'``: folders, each named once (a run listed twice would count twice)."""
    if runs is None:
        return
    listed = [runs] if isinstance(runs, str) else runs
    if not isinstance(listed, list) or not all(isinstance(r, str) and r for r in listed):
        raise ConfigError(f"runs must be a run folder or a list of run folders, got {runs!r}; e.g. runs='[dir1,dir2]'")
    seen: dict[Path, str] = {}
    for name in listed:
        folder = Path(name).expanduser().resolve()
        if folder in seen:
            same = f" (as {seen[folder]})" if seen[folder] != name else ""
            raise ConfigError(
                f"runs lists {name} twice{same}; each run is one ensemble member: name it once, "
                "or train more seeds for a larger ensemble"
            )
        seen[folder] = name

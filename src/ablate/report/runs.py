"""Loading runs for tables: results.json -> Run (status, setting as typed, metrics, history file).

Three things decide which row a run lands in:

- its overrides minus the keys averaged over (``--over``, default ``seed``) and minus keys that are not settings
  (``NON_SETTING_KEYS``: resume paths, output paths, logging and progress-bar switches);
- overrides compared by value, not spelling: Hydra's multirun sweepers rewrite each job's values
  (``optimizer.lr=1e9,1e-3`` reaches the job as ``optimizer.lr=1000000000.0``), so values are normalised with Hydra's
  own override parser for grouping, and rows are labelled with the spelling the user typed, recovered from the
  sweep's ``multirun.yaml`` (where Hydra keeps the command line as given);
- a resumed run is one run: ``ckpt_path`` is not a setting, and a run whose ``ckpt_path`` points into another run's
  folder supersedes that run (it is not counted twice).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import ConfigError
from ablate.runtime.results import STALE_AFTER_S, effective_status

# Overrides that change where or how a run is logged, not what it trains. A key matches an entry when it is the entry
# or lies under it (``paths.log_dir`` under ``paths``; ``hydra/launcher`` under ``hydra``).
NON_SETTING_KEYS = (
    "ckpt_path",
    "hydra",
    "paths",
    "logger",
    "callbacks.progress_bar",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "task_name",
    "tags",
    "data.data_dir",
    "nan_check_every",
)
STATUSES = ("completed", "failed", "diverged", "interrupted", "running")  # "running": no heartbeat to judge by
EVAL_TRAIN_ACC = "train/acc_eval"  # the final weights in eval mode on the training split (ablate.training.train_eval)
DERIVED = {"gap": "test/acc", "val_gap": "val/acc"}  # derived gap -> the held-out accuracy subtracted from train's


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith((f"{p}.", f"{p}/")) for p in prefixes)


def matches_over(key: str, over: tuple[str, ...]) -> bool:
    """``seed`` matches ``seed``; ``fold`` matches ``data.fold`` (the last component), so k-fold runs pool."""
    return any(key == o or key.rsplit(".", 1)[-1] == o for o in over)


@cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


@cache
def normalize(override: str) -> str:
    """``key=value`` with the value written the way Hydra's sweepers write it (``1e9`` -> ``1000000000.0``)."""
    try:
        parsed = _parser().parse_override(override)
        if parsed.is_sweep_override() or parsed.is_delete():
            return override
        return f"{parsed.get_key_element()}={parsed.get_value_element_as_str()}"
    except Exception:  # not Hydra syntax (hand-written results.json): compare as written
        return override


def split_sweep(value: str) -> list[str]:
    """``1e-3,1e9`` -> [``1e-3``, ``1e9``]; commas inside brackets, parentheses or quotes do not split."""
    pieces, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(value):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append(value[start:i])
            start = i + 1
    return [*pieces, value[start:]]


def typed_spellings(multirun_yaml: Path) -> dict[str, str]:
    """normalised override -> the override as typed on the sweep's command line."""
    try:
        task = yaml.safe_load(multirun_yaml.read_text())["hydra"]["overrides"]["task"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    spellings = {}
    for override in task or []:
        key, _, value = override.partition("=")
        for piece in split_sweep(value):
            typed = f"{key}={piece}"
            spellings.setdefault(normalize(typed), typed)
    return spellings


def classify(data: dict[str, Any], now: float, stale_after: float = STALE_AFTER_S) -> str:
    """completed | failed | diverged | interrupted | running (still alive, or no heartbeat to tell)."""
    status = data.get("status")
    if status == "failed" and data.get("error") == "interrupted":  # how runs before `interrupted` existed said it
        return "interrupted"
    if status == "running":
        return effective_status(data, now, stale_after)
    return status if status in STATUSES else "failed"


@dataclass
class Run:
    path: Path  # the results.json
    status: str
    overrides: list[str]  # as recorded
    metrics: dict[str, float]
    seed: Any = None
    typed: dict[str, str] = field(default_factory=dict)  # normalised -> as typed
    data: dict[str, Any] = field(default_factory=dict, repr=False)
    filled: set[str] = field(default_factory=set)  # normalised overrides named by fill_defaults, not typed

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def history(self) -> Path:
        return self.run_dir / "history.csv"

    def metric(self, name: str) -> float | None:
        """A recorded metric, or a derived gap: ``gap`` = train/acc_eval - test/acc (the final weights in eval mode;
        train/acc, the running training-mode accuracy, for runs recorded before train/acc_eval: see
        ``gap_from_train_mode``), ``val_gap`` = train/acc_eval - val/acc (no fallback: the overfitting gate's)."""
        if name in DERIVED:
            train = self.metrics.get(EVAL_TRAIN_ACC)
            if name == "gap" and train is None:
                train = self.metrics.get("train/acc")
            held_out = self.metrics.get(DERIVED[name])
            return None if train is None or held_out is None else float(train) - float(held_out)
        value = self.metrics.get(name)
        return None if value is None else float(value)

    @property
    def gap_from_train_mode(self) -> bool:
        """Its ``gap`` uses train/acc (training mode: masks active, weights moving), recorded before train/acc_eval."""
        m = self.metrics
        return EVAL_TRAIN_ACC not in m and "train/acc" in m and "test/acc" in m

    def setting_tokens(self, over: tuple[str, ...]) -> dict[str, str]:
        """normalised -> display spelling, for the overrides that define this run's setting."""
        tokens = {}
        for o in self.overrides:
            key = override_key(o)
            if _under(key, NON_SETTING_KEYS) or matches_over(key, over):
                continue
            norm = normalize(o)
            tokens[norm] = self.typed.get(norm, o)
        return tokens


def read_history(run: Run) -> list[dict[str, float]]:
    """history.csv rows as floats (empty cells -> NaN); [] when the run has none."""
    if not run.history.is_file():
        return []
    with run.history.open(newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def _multirun_yaml(results: Path, root: Path) -> Path | None:
    for folder in results.parents:
        if (folder / "multirun.yaml").is_file():
            return folder / "multirun.yaml"
        if folder == root or folder == folder.parent:
            return None
    return None


def load_runs(root: str | Path, stale_after: float = STALE_AFTER_S) -> list[Run]:
    """Every results.json under ``root`` (a run, a sweep, or a folder of sweeps), resumed originals left out.

    Finding none is an error (a mistyped or relative path resolved elsewhere), never an empty table."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            f"no runs found at {root}: {'not a folder' if root.exists() else 'no such folder'}; "
            f"pass a run or multirun folder, e.g. logs/multiruns/<time>"
        )
    now = time.time()
    spellings: dict[Path, dict[str, str]] = {}
    runs = []
    unreadable = 0
    for path in sorted(root.rglob("results.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            unreadable += 1
            continue  # being written by a run that predates atomic writes, or not ours
        mr = _multirun_yaml(path, root)
        if mr is not None and mr not in spellings:
            spellings[mr] = typed_spellings(mr)
        runs.append(
            Run(
                path=path,
                status=classify(data, now, stale_after),
                overrides=list(data.get("overrides") or []),
                metrics=dict(data.get("metrics") or {}),
                seed=data.get("seed"),
                typed=spellings.get(mr, {}) if mr else {},
                data=data,
            )
        )
    if not runs:
        found = f" ({unreadable} unreadable)" if unreadable else ""
        raise ConfigError(
            f"no runs found at {root}: no results.json under it{found}; pass a run or multirun folder, "
            "e.g. logs/multiruns/<time>"
        )
    return _drop_superseded(runs)


def user_path(path: str | Path, repo_root: str | Path | None = None) -> Path:
    """A path as the user typed it, for code that runs elsewhere than the user's shell (a notebook's kernel runs in
    notebooks/). A relative path is looked up, in order, under the directory the command was started from (``$PWD``,
    which a shell sets and child processes such as Jupyter kernels inherit), the current directory, and the
    repository root (``$ABLATE_ROOT``, ``repo_root``, the checkout holding this package); the first that exists
    wins. Nothing found: a ConfigError listing where it looked."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    checkout = Path(__file__).resolve().parents[3]  # src/ablate/report/runs.py -> the repository (editable install)
    bases = [os.environ.get("PWD"), os.getcwd(), os.environ.get("ABLATE_ROOT"), repo_root, checkout]
    tried = list(dict.fromkeys(Path(b).resolve() for b in bases if b))
    for base in tried:
        if (base / path).exists():
            return base / path
    raise ConfigError(
        f"no runs found at {path}: it is not under {', '.join(map(str, tried))}; "
        "pass an absolute path, or a path relative to the folder you started from"
    )


def _resumed_from(run: Run) -> Path | None:
    ckpt = next((o.split("=", 1)[1] for o in run.overrides if override_key(o) == "ckpt_path"), None)
    ckpt = ckpt or (run.data.get("config") or {}).get("ckpt_path")
    return Path(ckpt).resolve() if ckpt and ckpt != "null" else None


def _drop_superseded(runs: list[Run]) -> list[Run]:
    """A run resumed into a new folder replaces the interrupted run it continued (one run, not two)."""
    dirs = {r.run_dir.resolve(): r for r in runs}
    superseded = set()
    for run in runs:
        ckpt = _resumed_from(run)
        if ckpt is None:
            continue
        for folder in ckpt.parents:
            original = dirs.get(folder)
            if original is not None and original is not run:
                superseded.add(id(original))
                break
    return [r for r in runs if id(r) not in superseded]

"""Which saved runs ``evaluate.py`` scores: one run, a list of runs, or the top-k of a sweep by a validation metric.

Reads only ``results.json`` files (no torch), so selection is cheap and testable on fake files. Rules:

- Members are ranked by a **validation** metric (``metric=val/...``); a ``test/`` (or ``train/``) metric is refused,
  because choosing members on the test split leaks it into model selection.
- A run that did not complete (``running``, ``failed``, ``diverged``) is refused when named explicitly
  (``run=``/``runs=``) and skipped with a warning when it is part of a ``sweep=``, where failures are expected.
- Members must be trained on the same data set with the same classes and test split.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError

LOWER_IS_BETTER = ("loss", "nll", "ece")  # metric names whose "best" is the minimum (metric_mode=auto)


@dataclass
class Candidate:
    """A finished run that may become an ensemble member."""

    run_dir: Path
    results: dict[str, Any]
    value: float | None = None  # its selection metric, once ranked
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.results.get("status", "unknown"))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_candidate(path: str | Path) -> Candidate:
    run_dir = Path(path).expanduser().resolve()
    results = run_dir / "results.json"
    if not results.is_file():
        raise ConfigError(f"{path} is not a run directory (no results.json); give a folder written by train.py")
    try:
        return Candidate(run_dir, json.loads(results.read_text()))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{results} is not valid JSON ({err}); was the run killed while writing it?") from err


def collect(run: str | None, runs: list[str] | None, sweep: str | None) -> tuple[list[Candidate], list[dict]]:
    """The candidate runs and the sweep runs skipped because they did not complete."""
    given = [name for name, value in (("run", run), ("runs", runs), ("sweep", sweep)) if value]
    if len(given) != 1:
        raise ConfigError(
            f"give exactly one of run=<run dir>, runs='[dir1,dir2]' or sweep=<multirun dir> (got {given or 'none'})"
        )
    if sweep:
        root = Path(sweep).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"sweep={sweep} is not a directory; give a multirun folder (logs/multiruns/<time>)")
        found = [load_candidate(p.parent) for p in sorted(root.rglob("results.json"))]
        found = [c for c in found if c.results.get("kind") != "evaluation"]  # an earlier evaluate.py output
        done = [c for c in found if c.status == "completed"]
        skipped = [{"run_dir": str(c.run_dir), "status": c.status} for c in found if c.status != "completed"]
        for s in skipped:
            warn(f"skipping {s['run_dir']} (status: {s['status']}); only completed runs are ensembled")
        if not done:
            raise ConfigError(f"sweep={sweep} holds no completed run ({len(found)} results.json found)")
        return done, skipped
    candidates = [load_candidate(p) for p in ([run] if run else list(runs or []))]
    for c in candidates:
        if c.status != "completed":
            raise ConfigError(
                f"run {c.run_dir} has status '{c.status}', not completed; evaluate finished runs only "
                "(resume it with train.py ckpt_path=<run>/checkpoints/last.ckpt, or leave it out)"
            )
    return candidates, []


def check_selection_metric(metric: str) -> None:
    if not str(metric).startswith("val/"):
        raise ConfigError(
            f"metric={metric} is not a validation metric; members are selected on validation data only "
            "(never on test): use e.g. metric=val/acc_best or metric=val/loss"
        )


def lower_is_better(metric: str, mode: str = "auto") -> bool:
    if mode not in ("auto", "max", "min"):
        raise ConfigError(f"metric_mode must be auto, max or min, got {mode}")
    if mode != "auto":
        return mode == "min"
    return metric.split("/", 1)[-1].startswith(LOWER_IS_BETTER)


def rank(
    candidates: list[Candidate], metric: str, top_k: int | None, mode: str = "auto", required: bool = True
) -> list[Candidate]:
    """Candidates ordered best first by ``metric`` (ties keep their order), the first ``top_k`` of them kept.

    Without ``required`` (an explicit ``runs=`` list and no ``top_k``), runs lacking the metric keep the given order.
    """
    check_selection_metric(metric)
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
        raise ConfigError(f"top_k must be a positive integer (or null for all runs), got {top_k}")
    for c in candidates:
        value = c.results.get("metrics", {}).get(metric)
        c.value = None if value is None else float(value)
    missing = [str(c.run_dir) for c in candidates if c.value is None]
    if missing:
        if required or top_k is not None:
            raise ConfigError(
                f"{metric} is missing in {', '.join(missing)}; choose a metric= that every run reports "
                "(runs trained without a validation split have no val/ metrics)"
            )
        warn(f"{metric} is missing in {', '.join(missing)}; members are added in the order given")
        return candidates
    sign = 1.0 if lower_is_better(metric, mode) else -1.0
    ordered = sorted(candidates, key=lambda c: sign * c.value)  # type: ignore[operator]
    if top_k is not None and int(top_k) > len(ordered):
        warn(f"top_k={top_k} but only {len(ordered)} completed runs; the ensemble has {len(ordered)} members")
    return ordered[: int(top_k)] if top_k is not None else ordered


def data_signature(results: dict[str, Any]) -> tuple:
    """What must match for predictions to be averaged: data set, classes, test split size (and the generator's
    settings for synthetic data). evaluate.py also compares the loaded test labels themselves."""
    data = results.get("data") or {}
    config = (results.get("config") or {}).get("data") or {}
    synthetic = json.dumps(config.get("synthetic"), sort_keys=True) if data.get("name") == "synthetic" else ""
    return data.get("name", config.get("name")), data.get("num_classes"), data.get("test"), synthetic


def describe(results: dict[str, Any]) -> str:
    name, classes, test, synthetic = data_signature(results)
    return f"{name}, {classes} classes, {test} test images" + (f", synthetic {synthetic}" if synthetic else "")


def check_compatible(members: list[Candidate]) -> None:
    first = members[0]
    for other in members[1:]:
        if data_signature(other.results) != data_signature(first.results):
            raise ConfigError(
                f"runs {first.run_dir} ({describe(first.results)}) and {other.run_dir} ({describe(other.results)}) "
                "are not compatible; ensemble members must share the data set, classes and test split"
            )


def checkpoint_for(candidate: Candidate, weights: str | None) -> tuple[Path, str]:
    """The checkpoint to test and which weights it holds: ``weights`` (best|last), else what the run itself tested
    (its ``test_weights``; early stopping means best; a run without validation has only last)."""
    results, config = candidate.results, candidate.results.get("config") or {}
    has_val = int((results.get("data") or {}).get("val", 0) or 0) > 0
    if weights not in (None, "best", "last"):
        raise ConfigError(f"weights must be best, last or null (the run's test_weights), got {weights}")
    if weights is None:
        early_stopping = int((config.get("reg") or {}).get("early_stopping_patience", 0) or 0) > 0
        wants_best = config.get("test_weights", "best") == "best" or early_stopping
        weights = "best" if wants_best and has_val else "last"
    recorded = results.get(f"checkpoint_{weights}")
    if weights == "best" and not has_val:
        raise ConfigError(f"run {candidate.run_dir} has no validation split, so no best checkpoint; use weights=last")
    options = [Path(recorded), candidate.run_dir / "checkpoints" / Path(recorded).name] if recorded else []
    if not recorded and weights == "last":
        options.append(candidate.run_dir / "checkpoints" / "last.ckpt")
    for path in options:
        if path.is_file():
            return path, weights
    raise ConfigError(
        f"the {weights} checkpoint of run {candidate.run_dir} is missing "
        f"(looked for: {', '.join(map(str, options)) or 'no path recorded in results.json'}); "
        "choose weights=best|last or another run"
    )

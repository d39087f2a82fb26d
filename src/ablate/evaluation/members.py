"""Which saved runs ``evaluate.py`` scores: one run, a list of runs, or the top-k of a sweep by a validation metric.

Reads only ``results.json`` files (no torch), so selection is cheap and testable on fake files. Rules:

- Members are ranked by a **validation** metric (``metric=val/...``); a ``test/`` (or ``train/``) metric is refused,
  because choosing members on the test split leaks it into model selection.
- A run that did not complete (``running``, ``failed``, ``diverged``) is refused when named explicitly
  (``run=``/``runs=``) and skipped with a warning when it is part of a ``sweep=``, where failures are expected.
- Members must be trained on the same data set with the same classes and test split.
- A member is labelled by its overrides (``reg=none seed=2``, spelled as typed on the sweep's command line); its
  *setting* is that label without the keys that members of one setting vary (``SETTING_VARIES``: seed,
  data.bootstrap_seed, data.fold). ``'setting="reg=none"'`` (quoted for Hydra) keeps the runs of one setting;
  without it, members from several settings are ensembled with a warning.
- Ranking ties (common with accuracies on small validation sets) are broken by the lower ``val/loss``, then by the
  run folder in natural order (job 2 before job 10): the same sweep always gives the same members.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.config import metric_registry
from ablate.config.rules import EVALUATE_RULES, check_value
from ablate.errors import ConfigError
from ablate.report.runs import Run, load_runs, normalize
from ablate.training.checkpoint_io import tests_best_weights

SETTING_VARIES = ("seed", "bootstrap_seed", "fold")  # what the members of one setting differ in
TIE_BREAK = "val/loss"  # lower wins among runs tied on the selection metric; then the run folder, natural order


@dataclass
class Candidate:
    """A finished run that may become an ensemble member."""

    run_dir: Path
    results: dict[str, Any]
    value: float | None = None  # its selection metric, once ranked
    notes: list[str] = field(default_factory=list)
    typed: dict[str, str] = field(default_factory=dict)  # normalised override -> as typed (the sweep's multirun.yaml)
    shared: frozenset[str] = frozenset()  # overrides every candidate has (left out of labels, as the table does)

    @property
    def status(self) -> str:
        return str(self.results.get("status", "unknown"))

    def tokens(self, without: tuple[str, ...] = (), shared: bool = True) -> dict[str, str]:
        """normalised override -> display spelling, for the overrides that define the run (the table's rule);
        without ``shared``, those all candidates have are left out."""
        overrides = [str(o) for o in self.results.get("overrides") or []]
        run = Run(self.run_dir / "results.json", self.status, overrides, {}, typed=self.typed)
        tokens = run.setting_tokens(without)
        return tokens if shared else {k: v for k, v in tokens.items() if k not in self.shared}

    @property
    def label(self) -> str:
        """``reg=none seed=2``: what tells this member apart (the folder name when nothing does)."""
        return " ".join(self.tokens(shared=False).values()) or self.run_dir.name

    @property
    def setting(self) -> str:
        """``reg=none``: the label without seed, bootstrap seed and fold."""
        return " ".join(self.tokens(SETTING_VARIES, shared=False).values()) or "(one setting)"


def mark_shared(candidates: list[Candidate]) -> None:
    """Note the overrides every candidate has (``data=digits`` in a sweep over reg and seed): not part of labels."""
    sets = [set(c.tokens()) for c in candidates]
    shared = frozenset(set.intersection(*sets)) if len(sets) > 1 else frozenset()
    for c in candidates:
        c.shared = shared


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


def _sweep_candidates(sweep: str) -> list[Candidate]:
    """Every run under a sweep folder, loaded like the table loads it (status, typed spellings); none is an error."""
    root = Path(sweep).expanduser().resolve()
    loaded = [r for r in load_runs(root) if r.data.get("kind") != "evaluation"]  # not an earlier evaluate.py output
    if not loaded:
        raise ConfigError(f"no runs found at {sweep}: it holds only evaluate.py outputs; pass a multirun folder")
    found = []
    for r in loaded:
        results = {**r.data, "status": r.status}  # a run whose process is gone is no longer "running"
        found.append(Candidate(r.run_dir.resolve(), results, typed=r.typed))
    return found


def collect(run: str | None, runs: list[str] | None, sweep: str | None) -> tuple[list[Candidate], list[dict]]:
    """The candidate runs and the sweep runs skipped because they did not complete."""
    given = [name for name, value in (("run", run), ("runs", runs), ("sweep", sweep)) if value]
    if len(given) != 1:
        raise ConfigError(
            f"give exactly one of run=<run dir>, runs='[dir1,dir2]' or sweep=<multirun dir> (got {given or 'none'})"
        )
    if sweep:
        found = _sweep_candidates(sweep)
        done = [c for c in found if c.status == "completed"]
        skipped = [{"run_dir": str(c.run_dir), "status": c.status} for c in found if c.status != "completed"]
        for s in skipped:
            warn(f"skipping {s['run_dir']} (status: {s['status']}); only completed runs are ensembled")
        if not done:
            raise ConfigError(f"sweep={sweep} holds no completed run ({len(found)} results.json found)")
        mark_shared(done)
        return done, skipped
    candidates = [load_candidate(p) for p in ([run] if run else list(runs or []))]
    mark_shared(candidates)
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
    """metric_mode=min|max as given; auto: the metric registry's direction (an unknown metric is a ConfigError)."""
    if mode not in ("auto", "max", "min"):
        raise ConfigError(f"metric_mode must be auto, max or min, got {mode}")
    if mode != "auto":
        return mode == "min"
    try:
        return metric_registry.lower_is_better(metric)
    except ConfigError as err:
        raise ConfigError(f"metric={metric}: {err}; or give its direction with metric_mode=max|min") from None


def within_setting(candidates: list[Candidate], setting: str) -> list[Candidate]:
    """The runs of one setting: ``setting='reg=none'`` (overrides as on the command line, space-separated; values
    compared as Hydra reads them, so ``optimizer.lr=1e-3`` matches ``0.001``). Runs matching every given override are
    kept; when they span several settings, the one named in full is taken, else the choice is refused."""
    wanted = {normalize(t) for t in str(setting).split()}
    matched = [c for c in candidates if wanted <= set(c.tokens())]
    settings = sorted({c.setting for c in matched})
    if not matched:
        available = "; ".join(sorted({c.setting for c in candidates}))
        raise ConfigError(f"setting='{setting}' matches no completed run; settings there: {available}")
    if len(settings) > 1:
        exact = [c for c in matched if set(c.tokens(SETTING_VARIES, shared=False)) == wanted - matched[0].shared]
        if not exact:
            raise ConfigError(
                f"setting='{setting}' matches {len(settings)} settings ({'; '.join(settings)}); name one in full, "
                f"e.g. 'setting=\"{settings[0]}\"'"
            )
        matched = exact
    return matched


def settings_of(members: list[Candidate]) -> dict[str, int]:
    """setting -> number of members, in member order."""
    counts: dict[str, int] = {}
    for m in members:
        counts[m.setting] = counts.get(m.setting, 0) + 1
    return counts


def _natural(path: Path) -> tuple:
    """Sort key of a run folder with numbers compared as numbers (a sweep's job 2 before job 10)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path)) if t)


def _tie_break(candidate: Candidate) -> tuple:
    loss = candidate.results.get("metrics", {}).get(TIE_BREAK)
    return (math.inf if loss is None else float(loss), _natural(candidate.run_dir))


def rank(
    candidates: list[Candidate], metric: str, top_k: int | None, mode: str = "auto", required: bool = True
) -> list[Candidate]:
    """Candidates ordered best first by ``metric``, ties broken by the lower ``val/loss`` and then by the run
    folder in natural order; the first ``top_k`` of them kept.

    Without ``required`` (an explicit ``runs=`` list and no ``top_k``), runs lacking the metric keep the given order.
    """
    check_selection_metric(metric)
    top_k = check_value("top_k", top_k, EVALUATE_RULES["top_k"])  # the rule book's rule: an integer >= 1 or null
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
    ordered = sorted(candidates, key=lambda c: (sign * c.value, *_tie_break(c)))  # type: ignore[operator]
    if top_k is not None and top_k > len(ordered):
        warn(f"top_k={top_k} but only {len(ordered)} completed runs; the ensemble has {len(ordered)} members")
    if top_k is not None and top_k < len(ordered) and ordered[top_k - 1].value == ordered[top_k].value:
        tied = sum(c.value == ordered[top_k].value for c in ordered)
        warn(
            f"top_k={top_k} cuts through {tied} runs tied at {metric}={ordered[top_k].value:.4g}; kept the ones with "
            f"the lower {TIE_BREAK}, then the first run folders"
        )
    return ordered[:top_k] if top_k is not None else ordered


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
        patience = int((config.get("reg") or {}).get("early_stopping_patience", 0) or 0)
        weights = "best" if tests_best_weights(config.get("test_weights", "best"), patience, has_val) else "last"
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

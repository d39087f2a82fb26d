"""Entry-point glue for train.py (and any other @hydra.main script): every bad command line ends in one line.

- ``run_hydra(main)`` runs a ``@hydra.main`` function and turns Hydra's own errors (override syntax, an unknown
  option or key, a value a typed node cannot take, an unresolvable ``hydra.*`` path), which happen before our code
  runs, into ``error: <what>; <what to do>`` and exit code 2. Exceptions raised inside the task function are never
  reformatted here (they are either AblateErrors, handled by the task, or bugs, which keep their traceback).
  ``HYDRA_FULL_ERROR=1`` in the environment turns this off and shows Hydra's full traces.
- ``check_job(cfg)`` validates the composed config before torch is imported (``ablate.config.rules``).

Torch-free, like ``ablate.config.rules``.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablate.config.rules import resolve, validate
from ablate.errors import AblateError, ConfigError

_IN_TASK = "_ablate_raised_in_task"
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic"


def hydra_overrides() -> tuple[list[str], bool]:
    """The command-line overrides of this job (as typed: a ``${...}`` in one is not resolved) and whether it is
    part of a multirun; ``([], False)`` outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return [], False
    hydra_cfg = HydraConfig.get()
    overrides = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    return [str(o) for o in overrides], hydra_cfg.mode == RunMode.MULTIRUN  # type: ignore[union-attr]


def check_job(cfg: DictConfig) -> bool:
    """Validate before torch is imported. Prints warnings; on a bad config prints one line, records the run as
    failed and exits 2, or returns False inside a multirun so the sweep goes on (the table shows the job failed)."""
    try:
        for warning in validate(cfg):
            print(f"warning: {warning}", file=sys.stderr)
        return True
    except ConfigError as err:
        overrides, multirun = hydra_overrides()
        where = record_failure(cfg, overrides, str(err))
        print(f"error: {err}" + (f"\nresults: {where} (status: failed)" if where else ""), file=sys.stderr)
        if multirun:
            return False
        sys.exit(err.exit_code)


def record_failure(cfg: DictConfig, overrides: list[str], message: str) -> Path | None:
    """A results.json with status failed, like a run that fails later; never over another run's results.json."""
    try:
        output_dir = Path(OmegaConf.select(cfg, "paths.output_dir"))
    except Exception:  # an unresolvable paths.* : nowhere to write
        return None
    path = output_dir / "results.json"
    if path.exists():
        return None
    try:
        config = resolve(cfg)
    except ConfigError:
        config = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    from ablate.runtime.results import RunRecord  # torch-free too

    record = RunRecord(output_dir, config, overrides, seed=config.get("seed"))  # type: ignore[union-attr]
    record.finish("failed", message)
    return record.path


def task(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Mark exceptions raised by the task function itself, so that run_hydra leaves them alone."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except Exception as err:
            setattr(err, _IN_TASK, True)
            raise

    return wrapper


def run_hydra(hydra_main: Callable[[], Any]) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        hydra_main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing, so the error can be one line here
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException, AblateError) as err:
        if getattr(err, _IN_TASK, False):
            raise
        cause = err if isinstance(err, AblateError) else err.__cause__ or err.__context__
        script = os.path.basename(sys.argv[0]) or "train.py"
        line = str(cause) if isinstance(cause, AblateError) else hydra_error_line(err, script)  # e.g. a resolver
        print(f"error: {line}", file=sys.stderr)
        sys.exit(cause.exit_code if isinstance(cause, AblateError) else ConfigError.exit_code)


def hydra_error_line(err: BaseException, script: str = "train.py") -> str:
    """One line with a hint for an error Hydra raised while parsing overrides or composing the config."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = err.__cause__
    cause_line = str(cause).splitlines()[0] if cause is not None and str(cause) else ""
    if type(err).__name__ == "OverrideParseException":
        override = lines[0].split(": ", 1)[-1] if lines[0].startswith(("Lexer", "Parser")) else lines[0]
        return (
            f"cannot parse the override {override!r}; quote values with spaces, non-ASCII or special characters "
            f"""(e.g. 'optimizer.lr="0.01"' or 'data.name="ä"'), brackets must balance; see {GRAMMAR}"""
        )
    missing = re.search(r"Could not (?:find|load) '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = [line for line in lines if "=" not in line and ":" not in line and line != group]
        known = f"choose one of {', '.join(options)}" if options else f"see python {script} --help for {group} options"
        return f"{group}={option} is not an option of {group}; {known}"
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        plus = next((line.split("use ", 1)[1] for line in lines if "use +" in line), f"+{key}=...")
        return (
            f"{key} is not a key of the config ({cause_line}); check the spelling (python {script} --cfg job lists "
            f"the keys), or add a new key with {plus}"
        )
    merging = re.search(r"Error merging override (\S+)", text)
    if merging and cause_line:
        key = getattr(cause, "full_key", None) or merging.group(1).split("=", 1)[0]
        return f"{merging.group(1)}: {cause_line}; give {key} a value of its type (python {script} --cfg job)"
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None) or "a value"
        return f"{key} cannot be resolved ({lines[0] if lines else type(err).__name__}); fix or remove the ${{...}}"
    what = " ".join(line for line in lines if not line.startswith(("Config search path", "provider=")))
    if "Ambiguous value" in what:  # Hydra's text already lists the three fixes
        return what.replace(" 1. ", "; 1. ", 1)
    return (
        f"{what}{f' ({cause_line})' if cause_line else ''}; check the override against python {script} --cfg job "
        "(keys) and --help (options)"
    )

"""Evaluate saved runs and their ensemble: python evaluate.py run=<dir> | runs='[d1,d2]' | sweep=<dir> top_k=5."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ablate.runtime.cli import run_hydra, task  # Hydra's own errors (bad override, unknown key) as one line, exit 2

os.environ.setdefault("ABLATE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
@task
def main(cfg: DictConfig) -> float | None:
    from ablate.config.rules import validate_evaluate  # torch-free: a bad key answers before torch is imported
    from ablate.errors import ConfigError

    try:
        validate_evaluate(cfg)
    except ConfigError as err:
        output_dir = Path(cfg.paths.output_dir)
        if output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # Hydra made it; leave nothing behind
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    from ablate.evaluation.saved_runs import (
        main as evaluate_main,  # imported here so --help answers without loading torch
    )

    return evaluate_main(cfg)


if __name__ == "__main__":
    run_hydra(main)

"""Evaluate saved runs and their ensemble: python evaluate.py run=<dir> | runs='[d1,d2]' | sweep=<dir> top_k=5."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ablate.cli import run_hydra, task  # Hydra's own errors (bad override, unknown key) as one line, exit 2

os.environ.setdefault("ABLATE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
@task
def main(cfg: DictConfig) -> float | None:
    from ablate.evaluate import main as evaluate_main  # imported here so --help answers without loading torch

    return evaluate_main(cfg)


if __name__ == "__main__":
    run_hydra(main)

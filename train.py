"""Train one configuration: python train.py [group=option ...] [key=value ...]   (--help lists the groups)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import ablate  # noqa: F401  (registers the typed reg/aug/init config nodes; imports no torch)
from ablate.cli import check_job, run_hydra, task

os.environ.setdefault("ABLATE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@task
def main(cfg: DictConfig) -> float | None:
    if not check_job(cfg):  # torch-free: a bad value answers in well under a second (None: a failed sweep job)
        return None
    from ablate.run import main as run_main  # imported here so --help and config errors do not load torch

    return run_main(cfg)


if __name__ == "__main__":
    run_hydra(main)

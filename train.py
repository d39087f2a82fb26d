"""Train one configuration: python train.py [group=option ...] [key=value ...]   (--help lists the groups)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import ablate  # noqa: F401  (registers the typed config nodes and the run-folder resolvers; imports no torch)
from ablate.runtime.cli import check_job, run_hydra, task
from ablate.runtime.rundir import check_folder
from ablate.runtime.sweep_recap import exit_code

os.environ.setdefault("ABLATE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@task
def main(cfg: DictConfig) -> float | None:
    if not check_job(cfg):  # torch-free: a bad value answers in well under a second (None: a failed sweep job)
        return None
    from ablate.runtime.job import main as run_main  # imported here so --help and config errors do not load torch

    return run_main(cfg)


if __name__ == "__main__":
    for arg in sys.argv[1:]:  # Hydra would fail with a traceback on a run folder that is a file
        key, _, value = arg.partition("=")
        if key.lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir") and value:
            check_folder(value, key.lstrip("+~"))
    run_hydra(main)  # Hydra's own errors (bad override, unknown option or key) as one line, exit 2
    sys.exit(exit_code())  # non-zero after a sweep in which a job did not complete (ablate.runtime.sweep_recap)

"""ablate: a PyTorch Lightning + Hydra lab for ablating neural-network training techniques."""

__version__ = "0.1.0"

from ablate.config.schema import register_configs
from ablate.runtime.rundir import register_resolvers

register_configs()  # the typed reg/aug/init nodes that configs/train.yaml loads from Hydra's ConfigStore
register_resolvers()  # ${ablate.run_dir:...} and friends, used by configs/hydra/default.yaml (no torch import)

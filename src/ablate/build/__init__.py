"""Stage 2, build: a checked config -> the frozen ``Recipe`` a run is made of (data module, model, LightningModule,
callbacks, loggers, trainer arguments), for train.py, evaluate.py and the benchmarks alike.

``recipe`` (``build(cfg) -> Recipe``, in a fixed order: the seeded RNG is drawn by model init, DropConnect and the
augmentation), one module per part: ``data``, ``model`` (with ``init_from``: another run's weights),
``optimizer_plan`` (optimizer, schedule, stepping, ``finetune``), ``lightning_module`` (the LightningModule, for
training and for evaluation), ``trainer`` (the config's callbacks, loggers, trainer arguments), ``objects`` (config
node -> object, one-line errors), ``object_checks`` (the only checks left outside the rule book: those that need
built objects, e.g. torch's own optimizer arguments on a throwaway copy, a run too short for its schedule). Nothing
here writes into the config: what building learns is returned.

May import: config, training (the classes it instantiates) and the libraries (data, models, layers, optim). Never
runtime, evaluation or report: building knows nothing of run folders, results files or sweeps.
"""

from ablate.build.data import build_datamodule
from ablate.build.lightning_module import evaluation_module, training_module
from ablate.build.model import BuiltModel, build_model
from ablate.build.recipe import Recipe, build

__all__ = ["BuiltModel", "Recipe", "build", "build_datamodule", "build_model", "evaluation_module", "training_module"]

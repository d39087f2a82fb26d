from ablate.optim.param_groups import is_lbfgs, param_groups, scale_group_lrs
from ablate.optim.schedulers import build_scheduler

__all__ = ["build_scheduler", "is_lbfgs", "param_groups", "scale_group_lrs"]

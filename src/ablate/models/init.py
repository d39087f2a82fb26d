"""Weight initialization schemes (Glorot & Bengio 2010; He et al. 2015; Saxe et al. 2014) via torch.nn.init."""

from __future__ import annotations

from torch import nn

from ablate.errors import ConfigError

SCHEMES = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "he_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "he_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}


def apply_init(model: nn.Module, scheme: str) -> int:
    """Re-initialize conv/linear weights with ``scheme`` and zero their biases; returns the layer count.

    ``default`` keeps PyTorch's per-layer initialization untouched.
    """
    if scheme == "default":
        return 0
    if scheme not in SCHEMES:
        raise ConfigError(f"init.scheme '{scheme}' is unknown; choose one of {['default', *SCHEMES]}")
    count = 0
    # A model holding loaded weights (model=transfer) names what may be re-initialized: its new head.
    fresh = model.fresh_modules() if hasattr(model, "fresh_modules") else [model]
    for module in (m for root in fresh for m in root.modules()):
        if isinstance(module, nn.Linear | nn.Conv2d):
            SCHEMES[scheme](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            count += 1
    return count

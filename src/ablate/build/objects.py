"""One way to turn a config node into an object: Hydra's ``instantiate``, with its errors as one-line ConfigErrors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ablate.errors import AblateError, ConfigError


def build_object(node: Mapping[str, Any], what: str, **kwargs: Any) -> Any:
    """``node`` instantiated with ``kwargs``; ``what`` names the config key in the error a user sees."""
    try:
        # _convert_="all": plain lists/dicts, so no OmegaConf object reaches an optimizer state or checkpoint.
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, AblateError):
            raise cause from None
        lines = [line.strip() for line in str(cause).splitlines() if not line.strip().startswith("full_key:")]
        message = " ".join(line for line in lines if line) or type(cause).__name__
        raise ConfigError(f"cannot build {what}: {message}; check `{what}` (python train.py --help)") from err

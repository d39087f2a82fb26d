"""reference.yaml: a paper's numbers, joined to the table by setting.

    source: "Huang et al. 2017, Table 1, p. 6"   # shown with the table
    metric: test/acc                             # the metric of rows given as a bare number (default test/acc)
    rows:
      "ensemble=snapshot": {test/acc: 0.9448, test/loss: 0.21}
      "ensemble=none": 0.9312                    # shorthand: a value of `metric`
    # or a list, when a setting is easier to read on its own line:
    # rows:
    #   - setting: "ensemble=snapshot scheduler=snapshot"
    #     test/acc: 0.9448

Settings are written as on the command line and matched like ``--baseline`` (same values, any spelling; overrides
every run shares may be left out). Numbers use results.json's units: accuracies as fractions (0.9448, not 94.48).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import ConfigError


def load_reference(path: str | Path) -> dict[str, Any]:
    """{"source": str, "metric": str, "rows": {setting: {metric: float}}}; a malformed file is a ConfigError."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:  # a binary file (an image, a checkpoint) passed by mistake
        raise ConfigError(f"--reference {path} is not a text file; pass a reference.yaml (UTF-8 YAML)") from err
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read --reference {path}: {str(err).splitlines()[0]}; pass a reference.yaml") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), dict | list):
        raise ConfigError(f"{path} has no `rows:` mapping; see `python -m ablate.table --help` for the format")
    metric = str(doc.get("metric", "test/acc"))
    items = doc["rows"].items() if isinstance(doc["rows"], dict) else _listed(doc["rows"], path)
    rows: dict[str, dict[str, float]] = {}
    for setting, values in items:
        values = values if isinstance(values, dict) else {metric: values}
        try:
            rows[str(setting)] = {str(k): float(v) for k, v in values.items()}
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{path}: row '{setting}' has a value that is not a number; write e.g. 0.9448") from err
        bad = [k for k, v in rows[str(setting)].items() if "acc" in k and not math.isnan(v) and v > 1.0]
        if bad:
            raise ConfigError(f"{path}: row '{setting}' gives {bad[0]} > 1; write accuracies as fractions (0.9448)")
    return {"source": str(doc.get("source", path)), "metric": metric, "rows": rows}


def _listed(entries: list[Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    items = []
    for entry in entries:
        if not isinstance(entry, dict) or "setting" not in entry:
            raise ConfigError(f"{path}: every item of `rows:` needs a `setting:`; got {entry!r}")
        items.append((entry["setting"], {k: v for k, v in entry.items() if k not in ("setting", "label")}))
    return items

"""experiments/snapshot_ensembles/ensemble_size.py: one line per setting with test/acc_snapshot_ens<m>, the single model
as a band; rows pooled by seed like the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, load_script, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_curve_per_setting_pooled_over_seeds(tmp_path: Path, capsys) -> None:
    script = load_script(REPO / "experiments/snapshot_ensembles/ensemble_size.py", "snapshot_ensemble_size")
    root = tmp_path / "sweep"
    for s in range(2):
        write_run(root, f"none{s}", ["ensemble=none", f"seed={s}"], **{"test/acc": 0.80 + 0.02 * s})
        ens = {f"test/acc_snapshot_ens{m}": 0.80 + 0.01 * m + 0.02 * s for m in (1, 2, 3)}
        write_run(root, f"snap{s}", ["ensemble=snapshot", f"seed={s}"], **{"test/acc": 0.81, **ens})
    out = tmp_path / "size.png"
    script.main([str(root), "--out", str(out)])
    assert out.read_bytes().startswith(PNG_MAGIC)
    printed = capsys.readouterr().out
    assert "ensemble=snapshot: m=1: 82.00%, m=2: 83.00%, m=3: 84.00%" in printed  # means over the two seeds
    assert "ensemble=none" not in printed.split("wrote")[0]  # no snapshot metrics: a band, not a line
    with pytest.raises(SystemExit, match="no test/acc_snapshot_ens"):
        script.main([str(root / "none0"), "--out", str(out)])

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


def test_the_two_sweeps_of_the_readme_in_two_folders(tmp_path: Path, capsys) -> None:
    """The single model's sweep and the ensembles' sweep write into separate folders (run.sh): both are read, and the
    single model is found although its row is named with the other sweep's keys (scheduler, lr)."""
    script = load_script(REPO / "experiments/snapshot_ensembles/ensemble_size.py", "snapshot_ensemble_size")
    single, snap = tmp_path / "single", tmp_path / "snap"
    for s in range(2):
        config = {"_extra": {"config": {"scheduler": "multistep"}}}
        write_run(single, f"none{s}", ["ensemble=none", f"seed={s}"], **{"test/acc": 0.80}, **config)
        ens = {f"test/acc_snapshot_ens{m}": 0.80 + 0.01 * m for m in (1, 2)}
        overrides = ["ensemble=snapshot", "scheduler=snapshot", f"seed={s}"]
        write_run(snap, f"snap{s}", overrides, **{"test/acc": 0.81, **ens})
    drawn = script.draw([single, snap], tmp_path / "size.png")
    assert drawn == [("ensemble=snapshot scheduler=snapshot", pytest.approx([0.81, 0.82]))]
    from ablate.report import build, load_runs
    from ablate.report.stats import fill_defaults, find_row

    rows = build(fill_defaults([*load_runs(single), *load_runs(snap)]), ["test/acc"])
    band = find_row(rows, "ensemble=none")  # what draw() looks up for the single model's band
    assert band is not None and band.n == 2 and band.setting == "ensemble=none scheduler=multistep"

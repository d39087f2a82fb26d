"""notebooks/analysis.ipynb runs top to bottom on a small generated sweep (no training) and shows its three parts."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ablate.errors import ConfigError
from ablate.report.runs import load_runs, user_path
from tests.conftest import REPO, write_run


def _sweep(sweep: Path) -> None:
    for seed in range(2):
        for reg, acc in (("none", 0.80), ("dropout", 0.84)):
            metrics = {"train/acc": 0.9, "test/acc": acc + seed / 100, "val/acc_best": acc, "test/loss": 0.5}
            write_run(sweep, f"{reg}{seed}", [f"reg={reg}", f"seed={seed}"], history=[0.5, acc], **metrics)
    write_run(sweep, "failed", ["reg=none", "seed=9"], status="failed")


@pytest.mark.parametrize("typed", ["absolute", "relative"])
def test_analysis_notebook_runs_on_a_generated_sweep(typed, tmp_path, monkeypatch):
    """``relative``: as ``ABLATE_SWEEP=logs/multiruns/<dir> jupyter execute notebooks/analysis.ipynb`` typed in
    tmp_path; jupyter execute starts the kernel in the notebook's folder, the shell's $PWD stays tmp_path."""
    sweep = tmp_path / "logs" / "multiruns" / "sweep"
    _sweep(sweep)
    kernel_dir = tmp_path / "notebooks"
    kernel_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))  # what the shell sets
    monkeypatch.setenv("ABLATE_SWEEP", str(sweep) if typed == "absolute" else "logs/multiruns/sweep")
    monkeypatch.setenv("ABLATE_BASELINE", "reg=none")
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(kernel_dir)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{sweep}: 5 runs" in text and "'failed': 1" in text
    markdown = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert len(markdown) == 1 and "| reg=dropout | 2 | 84.50 ± 0.71 |" in markdown[0] and "baseline" in markdown[0]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # the curves and the bar chart


def test_no_runs_found_is_an_error_naming_the_path(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(ConfigError, match=f"no runs found at {folder}: "):
            load_runs(folder)
    # A relative path: the shell's folder ($PWD) first, then the current one; none holding it is an error.
    _sweep(tmp_path / "logs" / "s")
    monkeypatch.chdir(tmp_path / "empty")
    monkeypatch.setenv("PWD", str(tmp_path))
    assert user_path("logs/s") == tmp_path / "logs" / "s" and len(load_runs(user_path("logs/s"))) == 5
    monkeypatch.setenv("PWD", os.devnull)
    with pytest.raises(ConfigError, match=f"no runs found at logs/s: it is not under {os.devnull}, {tmp_path}"):
        user_path("logs/s")

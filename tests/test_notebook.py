"""notebooks/analysis.ipynb runs top to bottom on a small generated sweep (no training) and shows its three parts."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO, write_run


def test_analysis_notebook_runs_on_a_generated_sweep(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    for seed in range(2):
        for reg, acc in (("none", 0.80), ("dropout", 0.84)):
            metrics = {"train/acc": 0.9, "test/acc": acc + seed / 100, "val/acc_best": acc, "test/loss": 0.5}
            write_run(sweep, f"{reg}{seed}", [f"reg={reg}", f"seed={seed}"], history=[0.5, acc], **metrics)
    write_run(sweep, "failed", ["reg=none", "seed=9"], status="failed")
    monkeypatch.setenv("ABLATE_SWEEP", str(sweep))
    monkeypatch.setenv("ABLATE_BASELINE", "reg=none")
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "5 runs" in text and "'failed': 1" in text
    markdown = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert len(markdown) == 1 and "| reg=dropout | 2 | 84.50 ± 0.71 |" in markdown[0] and "baseline" in markdown[0]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # the curves and the bar chart

"""experiments/dropout/norms.py: per hidden layer max / median of the units' incoming-weight norms, read from each
run's verified last.ckpt; "at or above c" only when some unit reaches the constraint."""

from __future__ import annotations

from pathlib import Path

import torch

from ablate.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import REPO, load_script, write_run


def _run(root: Path, name: str, reg: str, first_layer_rows: list[float]) -> None:
    run = write_run(root, name, ["experiment=dropout_cpu", f"reg={reg}", "seed=0"])
    (run / "checkpoints").mkdir()
    rows = torch.tensor(first_layer_rows).unsqueeze(1) * torch.eye(1, 4)  # row i has norm first_layer_rows[i]
    state = {"model.0.weight": rows, "model.0.bias": torch.zeros(3), "model.2.weight": torch.full((2, 3), 9.0)}
    AtomicCheckpointIO().save_checkpoint({"state_dict": state}, run / "checkpoints" / "last.ckpt")


def test_norms_per_hidden_layer_and_whether_c_is_reached(tmp_path: Path, capsys) -> None:
    norms = load_script(REPO / "experiments/dropout/norms.py", "dropout_norms")
    _run(tmp_path, "a", "[max_norm]", [3.0, 1.0, 2.0])
    _run(tmp_path, "b", "[l2]", [0.5, 1.0, 2.9])
    norms.main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| run | status | layer 1 max / median | any unit at or above c |"  # the classifier is left out
    assert out[2] == "| reg=[max_norm] seed=0 | completed | 3.00 / 2.00 | yes |"
    assert out[3] == "| reg=[l2] seed=0 | completed | 2.90 / 1.00 | no |"
    norms.main([str(tmp_path), "--c", "2.5"])
    assert capsys.readouterr().out.splitlines()[3].endswith("| yes |")

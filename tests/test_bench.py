"""The throughput benchmark's bookkeeping: both sides train the same steps in lockstep, and the CLI reports ratios.

Timings themselves are not asserted (speed is measured by the benchmark, never by a test).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO, load_script, run_cli

BENCH = REPO / "experiments" / "throughput" / "bench.py"
SMALL = ["data=synthetic", "data.synthetic.num_train=400", "data.val_size=80", "data.batch_size=32"]


def load_bench():
    return load_script(BENCH, "throughput_bench")


def test_lockstep_pairs_every_epoch_and_step(tmp_path: Path):
    bench = load_bench()
    epochs = 3
    cfg = bench.compose_cfg("mlp", epochs, tmp_path, SMALL)
    lockstep = bench.paired_epochs(cfg)

    steps = -(-320 // 32)  # 400 images minus 80 for validation, batch 32
    assert len(lockstep.lightning_times) == len(lockstep.plain_times) == epochs
    assert lockstep.plain.epoch == epochs  # one plain epoch ran before each Lightning epoch
    # Step intervals: (steps - 1) per epoch, warm-up epoch left out, the same count on both sides.
    assert len(lockstep.step_times) == len(lockstep.plain.step_times) == (epochs - 1) * (steps - 1)
    assert all(t > 0 for t in [*lockstep.step_times, *lockstep.plain.step_times])


def test_cli_prints_both_tables_and_the_worst_ratio(tmp_path: Path):
    args = ["--models", "mlp", "--epochs", "2", "--repeats", "1", "--set", *SMALL]
    proc = run_cli(args, tmp_path, script="experiments/throughput/bench.py", check=True)
    assert "plain s/epoch" in proc.stdout and "overhead us/step" in proc.stdout
    worst = re.search(r"^worst ratio: (\d+\.\d\d)$", proc.stdout, flags=re.MULTILINE)
    assert worst is not None, proc.stdout[-2000:]
    assert float(worst.group(1)) > 0


def test_bench_rejects_a_single_epoch(tmp_path: Path):
    proc = run_cli(["--epochs", "1"], tmp_path, script="experiments/throughput/bench.py")
    assert proc.returncode != 0
    assert "--epochs must be >= 2" in proc.stderr

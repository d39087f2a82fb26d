"""Freeze behaviour: train and evaluate a fixed set of configurations and record their final metrics bit for bit.

    python experiments/freeze/freeze.py --set short --out experiments/freeze/baseline-short.json
    python experiments/freeze/freeze.py --compare experiments/freeze/baseline-short.json     # exit 1 on any change
    python experiments/freeze/freeze.py --set all --out before.json                          # + Fashion-MNIST

Every case runs through the real entry points (``python train.py ...``, ``python evaluate.py ...`` as
subprocesses), with its output folders under ``--workdir`` (a temporary folder unless given). The recorded file
maps each case to ``{command, metrics}``: ``metrics`` holds the ``metrics`` entries of each run's results.json (for
a sweep, each job's, prefixed by its job folder; for evaluate.py, its ensemble metrics and member order). Floats
are stored as ``repr(float)`` strings, so equality is bitwise equality. Nothing that varies between identical
runs is recorded (wall times, throughput, time stamps, run folders).

The numbers are only comparable on the same machine and software: the file stores a fingerprint (Python, torch,
Lightning, CPU model and instruction set, thread count), and --compare says when it does not match.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCHEMA = 1

# Per data set: the overrides that make every case short. Fashion-MNIST on a stratified training subset keeps the
# whole long set near 10 minutes on 2 cores (fmpnet is most of it); digits runs take seconds.
DATASETS: dict[str, tuple[str, ...]] = {
    "digits": ("data=digits", "trainer.max_epochs=2"),
    "fashion_mnist": ("data=fashion_mnist", "data.train_subset=10000", "trainer.max_epochs=2"),
}
# The set issue 17 names, as overrides on top of a data set's (the default model, convnet, unless a case names one).
# stochastic_depth needs a residual model: resnet with depth 8 (6n+2, n=1), the smallest one.
CASES: dict[str, tuple[str, tuple[str, ...]]] = {  # name: (kind, overrides)
    "default": ("train", ()),
    "ema": ("train", ("ensemble=ema",)),
    "snapshot": ("train", ("ensemble=snapshot",)),
    "swa": ("train", ("ensemble=swa",)),
    "reg_dropout_l2_dropconnect": ("train", ("reg=[dropout,l2,dropconnect]",)),
    "aug_flip_crop": ("train", ("aug=flip_crop",)),
    "fmpnet": ("train", ("model=fmpnet",)),
    "stochastic_depth": ("train", ("model=resnet", "model.depth=8", "reg=stochastic_depth")),
    "transfer": ("train", ("model=transfer", "model.backbone=convnet")),
    "search": ("search", ("hparams_search=random", "hydra.sweeper.n_trials=3", "model=mlp")),
    "evaluate_topk": ("topk", ("model=mlp", "seed=0,1,2")),
}
SETS = {"short": ("digits",), "all": ("digits", "fashion_mnist")}
TOP_K = 2


@dataclass(frozen=True)
class Case:
    name: str  # "<data set>/<case>"
    kind: str  # train | search | topk
    overrides: tuple[str, ...]


def cases_for(set_name: str, only: list[str] | None = None) -> list[Case]:
    """The cases of a set, in a fixed order; ``only`` keeps those names (full ``digits/ema`` or bare ``ema``)."""
    cases = [
        Case(f"{data}/{name}", kind, (*DATASETS[data], *overrides))
        for data in SETS[set_name]
        for name, (kind, overrides) in CASES.items()
    ]
    return [c for c in cases if matches(c.name, only)]


def matches(name: str, only: list[str] | None) -> bool:
    return not only or name in only or name.split("/", 1)[1] in only


def cpu_identity() -> dict[str, str]:
    """The CPU's model name and a hash of its feature flags (two VMs named "Intel Xeon" can differ in AVX-512)."""
    model, flags = platform.processor(), ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().split("\n\n")[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        model, flags = fields.get("model name", model), fields.get("flags", "")
    return {"cpu_model": model, "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16]}


def fingerprint(threads: int) -> dict[str, Any]:
    """What must match for two records to be compared to the last digit: software, CPU and threads."""
    import torch  # here, not at the top: --help answers without it

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": importlib.metadata.version("lightning"),
        "numpy": importlib.metadata.version("numpy"),
        "machine": platform.machine(),
        **cpu_identity(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # which SIMD kernels torch picks
        "cpu_count": os.cpu_count(),
        "threads": threads,
    }


def exact(value: Any) -> Any:
    """A metric as recorded: floats as repr strings (full precision, bitwise comparable), the rest as they are."""
    return repr(float(value)) if isinstance(value, float) else value


def run_command(cmd: list[str], log: Path, threads: int) -> None:
    """Run an entry point from the repository root, its output to ``log``; raise with the log's tail on failure."""
    # OMP_NUM_THREADS also pins evaluate.py, which has no torch_threads key.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode} (log: {log})\n{tail}")


def run_metrics(results: Path) -> dict[str, Any]:
    return {k: exact(v) for k, v in json.loads(results.read_text())["metrics"].items()}


def sweep_metrics(sweep_dir: Path) -> dict[str, Any]:
    """Every job's metrics and overrides, keyed ``<job folder> <metric>`` (job folders relative to the sweep)."""
    metrics: dict[str, Any] = {}
    jobs = sorted(sweep_dir.rglob("results.json"), key=lambda p: [int(s) if s.isdigit() else s for s in p.parts])
    for results in jobs:
        job = results.parent.relative_to(sweep_dir).as_posix()
        record = json.loads(results.read_text())
        # The job's overrides carry the sampled hyperparameters (search) or the seed; the sweep dir is left out.
        overrides = [o for o in record.get("overrides", []) if not o.startswith("hydra.")]
        metrics[f"{job} overrides"] = " ".join(overrides)
        metrics.update({f"{job} {k}": exact(v) for k, v in record["metrics"].items()})
    return metrics


def evaluation_metrics(eval_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    record = json.loads((eval_dir / "results.json").read_text())
    members = [Path(m["run_dir"]).resolve().relative_to(sweep_dir.resolve()).as_posix() for m in record["members"]]
    metrics: dict[str, Any] = {"members": " ".join(members)}  # which runs the top-k picked, in validation order
    metrics.update({f"ensemble {k}": exact(v) for k, v in record["metrics"].items()})
    return metrics


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "train.py", *args]


def run_case(case: Case, workdir: Path, threads: int) -> dict[str, Any]:
    """Run one case in ``workdir/<case name>``; return ``{command, metrics}``."""
    out = workdir / case.name
    out.parent.mkdir(parents=True, exist_ok=True)
    common = (*case.overrides, f"torch_threads={threads}")
    if case.kind == "train":
        cmd = train_cmd(*common, f"hydra.run.dir={out}")
        run_command(cmd, out.with_suffix(".log"), threads)
        return {"command": shlex.join(cmd[1:]), "metrics": run_metrics(out / "results.json")}
    cmd = train_cmd("-m", *common, f"hydra.sweep.dir={out}")
    run_command(cmd, out.with_suffix(".log"), threads)
    metrics = sweep_metrics(out)
    commands = [cmd]
    if case.kind == "topk":
        eval_dir = out.with_name(out.name + "_evaluation")
        eval_cmd = [sys.executable, "evaluate.py", f"sweep={out}", f"top_k={TOP_K}", f"hydra.run.dir={eval_dir}"]
        run_command(eval_cmd, eval_dir.with_suffix(".log"), threads)
        metrics.update(evaluation_metrics(eval_dir, out))
        commands.append(eval_cmd)
    return {"command": " && ".join(shlex.join(c[1:]) for c in commands), "metrics": metrics}


def run_set(cases: list[Case], workdir: Path, threads: int, verbose: bool = True) -> dict[str, dict[str, Any]]:
    """Run every case; a failing case is recorded with its error (and makes the whole record fail a compare)."""
    record: dict[str, dict[str, Any]] = {}
    for case in cases:
        start = time.perf_counter()
        try:
            record[case.name] = run_case(case, workdir, threads)
        except RuntimeError as err:
            record[case.name] = {"command": "", "metrics": {}, "error": str(err)}
        if verbose:
            status = "FAILED" if "error" in record[case.name] else "ok"
            print(f"{case.name:<40} {status:<6} {time.perf_counter() - start:6.1f} s", flush=True)
    return record


def strip_workdir(text: str, workdir: Path) -> str:
    """Commands with the work folder written as <workdir>, so two records of the same set read the same."""
    return text.replace(str(workdir), "<workdir>")


# Metrics added after the baseline was recorded: new output, not a changed number (reported as "added").
ADDED_METRICS = {"train/acc_eval", "train/nll_eval"}


def diff(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, bool]]:
    """Rows (case, metric, before, after, identical) over the union of both records' metrics."""
    rows = []
    for name in sorted(set(before) | set(after)):
        b_case, a_case = before.get(name, {}), after.get(name, {})
        if "error" in b_case or "error" in a_case:  # a failed run differs from anything, itself included
            rows.append((name, "error", str(b_case.get("error", "-"))[:60], str(a_case.get("error", "-"))[:60], False))
        b, a = b_case.get("metrics", {}), a_case.get("metrics", {})
        for metric in sorted(set(b) | set(a)):
            if metric.split(" ")[-1] in ADDED_METRICS and metric not in b:  # sweeps: "<job> <metric>"
                continue
            bv, av = b.get(metric, "<missing>"), a.get(metric, "<missing>")
            rows.append((name, metric, str(bv), str(av), metric in b and metric in a and bv == av))
    return rows


def print_table(rows: list[tuple[str, str, str, str, bool]]) -> None:
    """A Markdown table (pastes into a note as it is); a sweep job's overrides are the one long cell."""
    lines = [("name", "metric", "before", "after", "identical"), ("---",) * 5]
    lines += [(*row[:4], "yes" if row[4] else "**NO**") for row in rows]
    widths = [min(60, max(len(line[i]) for line in lines)) for i in range(5)]
    for line in lines:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), default=None, help="short: digits only; all: + Fashion-MNIST")
    parser.add_argument("--out", type=Path, help="write the record here (JSON)")
    parser.add_argument("--compare", type=Path, help="rerun the recorded cases and diff against this record")
    parser.add_argument("--only", nargs="+", help="only these cases (digits/ema, or ema for every data set)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: fewest variables)")
    parser.add_argument("--workdir", type=Path, help="where the runs go (default: a temporary folder, removed)")
    return parser.parse_args(argv)


def record_file(results: dict[str, dict[str, Any]], threads: int, set_name: str, wall: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "set": set_name,
        "fingerprint": fingerprint(threads),
        "wall_time_s": round(wall, 1),  # informational: never compared
        "cases": results,
    }


def compare(recorded: dict, fresh: dict) -> int:
    """Print the before/after table; 0 when every metric of every case is identical, else 1."""
    if recorded["fingerprint"] != fresh["fingerprint"]:
        print(f"note: recorded on another machine or software: {recorded['fingerprint']} vs {fresh['fingerprint']}")
    rows = diff(recorded["cases"], fresh["cases"])
    print_table(rows)
    changed = [r for r in rows if not r[4]]
    print(f"\n{len(rows) - len(changed)} of {len(rows)} identical; {len(changed)} differ")
    return 1 if changed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorded = json.loads(args.compare.read_text()) if args.compare else None
    if recorded and args.only:  # compare the cases asked for, not the whole record
        recorded["cases"] = {name: case for name, case in recorded["cases"].items() if matches(name, args.only)}
    if recorded and recorded.get("schema") != SCHEMA:
        print(f"error: {args.compare} has schema {recorded.get('schema')}, not {SCHEMA}", file=sys.stderr)
        return 2
    set_name = args.set or (recorded["set"] if recorded else "short")
    only = args.only or (sorted(recorded["cases"]) if recorded else None)
    cases = cases_for(set_name, only)
    if not cases:
        print(f"error: no case matches {only}; cases: {', '.join(CASES)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ablate-freeze-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        start = time.perf_counter()
        results = run_set(cases, workdir, args.threads)
        for case in results.values():
            case["command"] = strip_workdir(case["command"], workdir)
        record = record_file(results, args.threads, set_name, time.perf_counter() - start)
    print(f"wall time {record['wall_time_s']} s for {len(cases)} cases")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")
    failed = [name for name, case in results.items() if "error" in case]
    for name in failed:
        print(f"FAILED {name}: {results[name]['error']}", file=sys.stderr)
    if recorded:
        return max(compare(recorded, record), 1 if failed else 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

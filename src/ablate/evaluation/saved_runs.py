"""evaluate.py: re-test saved runs from their checkpoints and score their ensemble.

Each member is rebuilt from its checkpoint alone (``ablate_config`` = the resolved run config, weights loaded with
``weights_only=True``) by the same builders as training, and predicts the official test split once per variant:
plain (the run's own test, FMP repeats included), MC dropout (``eval.mc_samples``) and flip TTA (``eval.tta``).
The ensemble averages the members' predictions (``ablate.evaluation.member_scores``) with
``ablate.training.scoring.average_probabilities``, the code every other ensemble uses. Nothing is written into the
runs' folders: outputs go to this command's own folder, and only once every input has been checked.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ablate.build import build_datamodule, build_model, evaluation_module
from ablate.config.rules import validate_evaluate
from ablate.config.schema import InitConfig, RegConfig, typed
from ablate.data.loader import InMemoryLoader
from ablate.errors import AblateError, ConfigError
from ablate.evaluation.ensemble_report import plot_curve, write_markdown
from ablate.evaluation.member_scores import ensemble_scores, member_scores
from ablate.evaluation.members import (
    TIE_BREAK,
    Candidate,
    check_compatible,
    check_selection_metric,
    checkpoint_for,
    collect,
    rank,
    settings_of,
    warn,
    within_setting,
)
from ablate.training.checkpoint_io import load_verified
from ablate.training.module import ClassifierModule
from ablate.training.scoring import averaged_log_probs, dropout_layers, mc_dropout, predict

# data.* keys that shape only the training/validation part, never the official test split.
TRAIN_SPLIT_KEYS = ("batch_size", "eval_batch_size", "val_size", "num_folds", "fold", "split_seed", "train_subset",
                    "bootstrap_seed", "download")  # fmt: skip
# Suffixes of the test-time variants: test/acc, test/acc_mc, test/acc_tta.
PLAIN, MC, TTA = "", "mc", "tta"


@dataclass
class Member:
    candidate: Candidate
    checkpoint: Path
    weights: str
    module: ClassifierModule
    data: Any  # the run's DataModule (test split used)
    config: DictConfig


def _checkpoint_typed(node: Any, schema: type) -> Any:
    """``schema.typed`` for a checkpoint's config, which an older version with other knobs may have written."""
    try:
        return typed(node, schema)
    except Exception as err:  # a checkpoint written by a version with other knobs
        message = f"cannot read the checkpoint's {schema.__name__} ({err}); evaluate it with the version that wrote it"
        raise ConfigError(message) from err


def load_member(candidate: Candidate, weights: str | None, device: torch.device, data_cache: dict) -> Member:
    """Rebuild the run's model and data from its checkpoint (read only) by the builders training used, and load the
    weights it tested."""
    path, which = checkpoint_for(candidate, weights)
    checkpoint = load_verified(path)  # sha256 check, then torch.load(weights_only=True); errors in one line
    if "ablate_config" not in checkpoint:
        raise ConfigError(f"checkpoint {path} has no ablate_config; it was not written by train.py")
    cfg = OmegaConf.create(checkpoint["ablate_config"])
    reg = _checkpoint_typed(cfg.get("reg"), RegConfig)
    # The test split does not depend on batch sizes, the validation split or bootstrap resampling: members that differ
    # only there (seeds, folds, bagging) share one loaded data set. Members normalize with their own checkpoint stats.
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    key = json.dumps({k: v for k, v in data_cfg.items() if k not in TRAIN_SPLIT_KEYS}, sort_keys=True, default=str)
    if key not in data_cache:
        data_cache[key] = build_datamodule(cfg)
    datamodule = data_cache[key]
    # The checkpoint holds every weight: no pretrained download, no model.init_from run (model=transfer).
    model = build_model(cfg, datamodule, reg, _checkpoint_typed(cfg.get("init"), InitConfig), load_weights=False).model
    state = checkpoint["state_dict"]
    module = evaluation_module(cfg, model, datamodule, reg, state["mean"], state["std"])
    model_state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as err:
        message = f"checkpoint {path} does not fit the model its config builds: {str(err).splitlines()[0]}"
        raise ConfigError(message) from err
    module.to(device).eval()
    return Member(candidate, path, which, module, datamodule, cfg)


def check_same_test_split(members: list[Member]) -> None:
    first = members[0]
    for other in members[1:]:
        a, b = first.data, other.data
        if a is not b and not (torch.equal(a.y_test, b.y_test) and torch.equal(a.x_test, b.x_test)):
            raise ConfigError(
                f"runs {first.candidate.run_dir} and {other.candidate.run_dir} have different test splits; "
                "ensemble members must be trained on the same data set and test split"
            )


@torch.no_grad()
def member_log_probs(member: Member, cfg: DictConfig, variants: list[str]) -> tuple[dict[str, torch.Tensor], Any]:
    """Test-split log-probabilities of one member for each variant, and the targets."""
    module, data = member.module, member.data
    batch_size = int(cfg.batch_size if cfg.batch_size is not None else member.config.data.get("eval_batch_size", 1000))
    batches = InMemoryLoader(data.x_test, data.y_test, batch_size, shuffle=False)
    repeats, outputs, targets = module.eval_repeats, {}, None
    for variant in variants:
        torch.manual_seed(int(cfg.seed))  # stochastic passes (MC dropout, FMP) are reproducible
        if variant == MC:
            with mc_dropout(module.model):
                fn = lambda x: averaged_log_probs(module.model, x, passes=int(cfg.eval.mc_samples))
                outputs[variant], targets = predict(fn, batches, module.normalize, output="raw")
        else:
            fn = lambda x, flip=variant == TTA: averaged_log_probs(module.model, x, passes=repeats, flip=flip)
            outputs[variant], targets = predict(fn, batches, module.normalize, output="raw")
    return outputs, targets


def _check_options(cfg: DictConfig) -> tuple[DictConfig, list[str]]:
    """Every key checked (the rule book, ablate.config.rules) before any file is read; returns the checked copy of
    the config (numeric strings coerced; ``cfg`` is not written) and the prediction variants."""
    cfg = validate_evaluate(cfg)
    check_selection_metric(str(cfg.metric))
    return cfg, [PLAIN] + ([MC] if cfg.eval.mc_samples else []) + ([TTA] if cfg.eval.tta else [])


def _device(name: str) -> torch.device:
    """The device, once torch says it exists (the rule book checked the spelling)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but torch finds no CUDA GPU on this machine; use device=auto or device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(
            f"device={name} but this machine has {count} GPU(s) (cuda:0..cuda:{count - 1}); use device=cuda"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name} but torch finds no MPS device here; use device=auto or device=cpu")
    return device


def _mixed_settings(candidates: list[Candidate]) -> list[str]:
    """A warning when the members come from several settings (a top-k of a whole sweep mixes them)."""
    settings = settings_of(candidates)
    if len(settings) < 2:
        return []
    listed = "; ".join(f"{s} ({n})" for s, n in settings.items())
    return [
        f"the {len(candidates)} members come from {len(settings)} settings: {listed}; to ensemble one setting's "
        f"seeds, add 'setting=\"{next(iter(settings))}\"'"
    ]


def _select(cfg: DictConfig) -> tuple[list[Candidate], dict[str, Any]]:
    """The members, ranked on their validation metric (best first), and how they were chosen (results.json)."""
    runs = [cfg.runs] if isinstance(cfg.runs, str) else list(cfg.runs) if cfg.runs else None  # runs=dir: a list of one
    candidates, skipped = collect(cfg.run, runs, cfg.sweep)
    num_candidates = len(candidates)
    setting = cfg.get("setting")
    if setting:
        candidates = within_setting(candidates, str(setting))
    ranked_needed = bool(cfg.sweep) or cfg.top_k is not None
    candidates = rank(candidates, str(cfg.metric), cfg.top_k, str(cfg.metric_mode), required=ranked_needed)
    check_compatible(candidates)
    return candidates, {
        "source": "sweep" if cfg.sweep else "runs" if cfg.runs else "run",
        "metric": str(cfg.metric),
        "top_k": cfg.top_k,
        "mode": str(cfg.metric_mode),
        "candidates": num_candidates,
        "skipped": skipped,
        "setting": setting,
        "settings": settings_of(candidates),
        "tie_break": f"lower {TIE_BREAK}, then run folder (natural order)",
    }


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Select, load and score the members and their ensemble; returns the results.json content (not written)."""
    started = time.time()
    cfg, variants = _check_options(cfg)
    candidates, selection = _select(cfg)
    warnings = _mixed_settings(candidates)
    for message in warnings:
        warn(message)
    for c in candidates:
        if output_dir.resolve().is_relative_to(c.run_dir):
            raise ConfigError(f"the output folder {output_dir} is inside run {c.run_dir}; a run's folder is read only")
    device, cache = _device(str(cfg.device)), {}  # before any model is loaded
    members = [load_member(c, cfg.weights, device, cache) for c in candidates]
    check_same_test_split(members)
    for m in members:
        if MC in variants and not dropout_layers(m.module.model):
            raise ConfigError(f"eval.mc_samples needs dropout layers, run {m.candidate.run_dir} has none (reg=dropout)")
        if TTA in variants and not m.config.get("aug", {}).get("flip"):
            warn(f"eval.tta=flip on {m.candidate.run_dir}, trained without aug.flip: mirrored images may be new to it")

    num_classes = members[0].data.num_classes
    predictions, targets = [], None
    for m in members:
        outputs, targets = member_log_probs(m, cfg, variants)
        predictions.append(outputs)
    pairs = zip(members, predictions, strict=True)
    entries = [_entry(m, cfg, *member_scores(outputs, targets, num_classes)) for m, outputs in pairs]
    space = str(cfg.ensemble.space)
    metrics, per_class, curve = ensemble_scores(predictions, targets, num_classes, space)

    return {
        "kind": "evaluation",
        "schema_version": 1,
        "status": "completed",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "selection": selection,
        "warnings": warnings,
        "ensemble": {"space": space, "size": len(members), "variants": [v or "plain" for v in variants]},
        "metrics": metrics,
        "metrics_per_class": per_class,
        "members": entries,
        "ensemble_size_curve": curve,
        "data": {k: v for k, v in members[0].data.summary().items() if k in ("name", "source", "test", "num_classes")},
        "device": str(device),
        "output_dir": str(output_dir.resolve()),
        "wall_time_s": round(time.time() - started, 3),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }


def _entry(m: Member, cfg: DictConfig, metrics: dict, per_class: dict) -> dict[str, Any]:
    """One member's results.json entry: where it came from, how it was chosen, what it scored then and now."""
    return {
        "run_dir": str(m.candidate.run_dir),
        "label": m.candidate.label,
        "setting": m.candidate.setting,
        "checkpoint": str(m.checkpoint),
        "weights": m.weights,
        "selection": {str(cfg.metric): m.candidate.value},
        "recorded_metrics": {k: v for k, v in m.candidate.results.get("metrics", {}).items()},
        "metrics": metrics,
        "metrics_per_class": per_class,
    }


def write_outputs(results: dict[str, Any], output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, output_dir / "results.md")
    plot_curve(results, output_dir / "ensemble_curve.png")
    os.replace(tmp, output_dir / "results.json")  # last: a results.json means the folder is complete


def main(cfg: DictConfig) -> float | None:
    """Entry point for evaluate.py: the ensemble's test/acc, or a one-line error and a non-zero exit."""
    output_dir = Path(cfg.paths.output_dir)
    try:
        results = evaluate(cfg, output_dir)
    except AblateError as err:
        if output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # Hydra made it; leave nothing half-written behind
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    write_outputs(results, output_dir)
    m = results["metrics"]
    keys = [k for k in ("test/acc", "test/acc_mc", "test/acc_tta", "test/nll", "test/ece") if k in m]
    size = results["ensemble"]["size"]
    print(f"ensemble of {size} ({results['ensemble']['space']} average): " + "  ".join(f"{k}={m[k]:.4f}" for k in keys))
    metric = results["selection"]["metric"]
    for i, member in enumerate(results["members"], 1):
        chosen = member["selection"][metric]
        chosen_text = f"{metric}={chosen:.4f}  " if chosen is not None else ""
        print(
            f"  member {i}: test/acc={member['metrics']['test/acc']:.4f}  {chosen_text}{member['label']}  "
            f"({member['run_dir']})"
        )
    print(f"results: {output_dir / 'results.json'}")
    return m["test/acc"]

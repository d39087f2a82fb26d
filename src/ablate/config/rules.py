"""One validation pass over the composed config, before torch is imported (config errors answer in well under 1 s).

``RULES`` maps each key of the data, model, optimizer, scheduler, trainer and callbacks groups (and the run keys) to a
:class:`Rule`: its type, range, allowed values and an example. ``validate`` resolves the config, coerces numeric
strings (``optimizer.lr=${oc.env:LR}`` arrives as ``'0.01'``), checks every present key against its rule and then the
few contradictions between keys. Keys without a rule are left to the code that consumes them (torch's and
Lightning's own argument checks run in ``config_checks.check_optimization`` before training). The typed ``reg`` /
``aug`` / ``init`` nodes are checked by OmegaConf at composition and by ``regularization.check_reg``.

Errors are :class:`ConfigError` with one line: ``<key> must be <what>, got <value>; e.g. <key>=<example>``.
This module imports no torch (a test checks ``sys.modules``).
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ablate.config import metric_registry
from ablate.config.schema import AugmentConfig
from ablate.errors import ConfigError

SEED_MODULUS = 2**32  # numpy / Lightning / scikit-learn seeds live in [0, 2**32)
# What the module logs per epoch and a scheduler or callback may monitor; extend it with any new logged metric.
METRICS = ("val/loss", "val/acc", "train/loss", "train/acc")
MONITORABLE = (*METRICS, "val/acc_best", "val/loss_best")
LBFGS = "torch.optim.LBFGS"
PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"


@dataclass(frozen=True)
class Rule:
    """What one key accepts. ``kind`` is int, float, bool, str or list (of ``item``); ``low``/``high`` bound numbers
    (``*_open``: strict); ``choices`` lists allowed values; ``extra`` are values allowed outside the range."""

    kind: type
    example: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    extra: tuple[Any, ...] = ()
    nullable: bool = False
    item: Rule | None = None
    length: int | None = None
    why: str = ""

    def describe(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind is list:
            assert self.item is not None
            size = f"{self.length} " if self.length else ""
            return f"a list of {size}{_plural(self.item.describe())}"
        if self.kind is str:
            return "a string" + (" or null" if self.nullable else "")
        noun = "an integer" if self.kind is int else "a number"
        if self.kind is float and self.low == 0 and self.low_open and self.high is None:
            text = "a positive number"
        elif self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{noun} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            text = f"{noun} {'>' if self.low_open else '>='} {_num(self.low)}"
        else:
            text = noun
        for value in self.extra:
            text += f" (or {value})"
        return text + (" or null" if self.nullable else "")


def _plural(description: str) -> str:
    return (
        description.replace("an integer", "integers").replace("a number", "numbers").replace("a positive", "positive")
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def integer(example: int, low: float | None = None, **kw: Any) -> Rule:
    return Rule(int, example, low=low, **kw)


def number(example: float, low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule(float, example, low=low, high=high, **kw)


def positive(example: float, **kw: Any) -> Rule:
    return Rule(float, example, low=0, low_open=True, **kw)


def fraction(example: float, high_open: bool = True, low_open: bool = False, **kw: Any) -> Rule:
    return Rule(float, example, low=0, high=1, low_open=low_open, high_open=high_open, **kw)


def flag(example: bool = True) -> Rule:
    return Rule(bool, str(example).lower())


def choice(*choices: Any, nullable: bool = False) -> Rule:
    return Rule(str, choices[0], choices=choices, nullable=nullable)


# Key (exact, or an fnmatch pattern) -> rule. The first match wins; keys absent from the config are not checked.
RULES: dict[str, Rule] = {
    # run keys (configs/train.yaml)
    "seed": integer(1),  # any integer: folded into [0, 2**32) by effective_seed
    "test": flag(),
    "test_weights": choice("best", "last"),
    "decay_bias_and_norm": flag(False),
    "nan_check_every": integer(25, low=1),
    "channels_last": flag(),
    "flush_denormal": flag(),
    "ckpt_path": Rule(str, "logs/runs/<run>/checkpoints/last.ckpt", nullable=True),
    # data
    "data.batch_size": integer(128, low=1),
    "data.eval_batch_size": integer(1000, low=1),
    "data.val_size": number(0.1, low=0, why="a fraction in [0, 1) or a sample count"),  # see _check_val_size
    "data.num_folds": integer(5, low=2, extra=(0,)),
    "data.fold": integer(0, low=0),
    "data.split_seed": integer(0),
    "data.train_subset": integer(1000, low=0),
    "data.bootstrap_seed": integer(0, low=0, nullable=True),
    "data.download": flag(),
    "data.pad": integer(4, low=0, why="pixels of zeros on every side"),
    "data.root": Rule(str, "path/to/images"),  # data=imagefolder: <root>/<class>/<image>
    "data.name": Rule(str, "fashion_mnist"),
    "data.data_dir": Rule(str, "data"),
    "data.synthetic.num_train": integer(1200, low=1),
    "data.synthetic.num_test": integer(400, low=1),
    "data.synthetic.num_classes": integer(10, low=2, why="a classifier needs two classes or more"),
    "data.synthetic.channels": integer(1, low=1),
    "data.synthetic.size": integer(28, low=4),
    "data.synthetic.noise": number(0.35, low=0),
    "data.synthetic.seed": integer(1234),
    # model
    "model.depth": integer(2, low=1),
    "model.width": integer(256, low=1),
    "model.hidden": integer(256, low=1),
    "model.channels": Rule(list, "[32,64]", item=integer(32, low=1)),
    "model.kernel_sizes": Rule(list, "[5,3]", item=integer(3, low=1)),
    "model.dropout": fraction(0.5),
    "model.input_dropout": fraction(0.2),
    "model.spatial_dropout": fraction(0.1),
    "model.stochastic_depth": fraction(0.5, low_open=True, high_open=False),
    "model.stochastic_depth_mode": choice("row", "batch"),
    "model.widths": Rule(list, "[1024,1024,2048]", item=integer(1024, low=1), nullable=True),
    "model.fmp_ratio": number(1.41, low=1, high=2, low_open=True, high_open=True),
    "model.fmp_mode": choice("random", "pseudorandom"),
    "model.fmp_overlapping": flag(),
    "model.activation": choice("relu", "leaky_relu", "elu", "tanh", "sigmoid", "maxout"),
    "model.batchnorm": flag(),
    "model.downsample": choice("stride", "maxpool", "fmp"),
    # model=transfer (src/ablate/models/transfer.py; the range of unfreeze_last depends on the backbone)
    "model.finetune": choice("full", "head", "last_n", "staged"),
    "model.unfreeze_last": integer(2, low=1, why="how many of the backbone's last blocks train"),
    "model.unfreeze_at_epoch": integer(1, low=1),
    "model.resize_to": integer(224, low=1, nullable=True, why="the side every batch is upsampled to"),
    "model.pretrained": flag(False),
    "model.keep_head": flag(False),
    # optimizer
    "optimizer.lr": positive(0.01),
    "optimizer.momentum": fraction(0.9, why="momentum >= 1 never forgets a gradient and diverges"),
    "optimizer.dampening": fraction(0.0, high_open=False),
    "optimizer.weight_decay": number(0.0005, low=0),
    "optimizer.betas": Rule(list, "[0.9,0.999]", item=fraction(0.9), length=2),
    "optimizer.eps": positive(1e-8),
    "optimizer.rho": fraction(0.9, high_open=False),
    "optimizer.alpha": fraction(0.99, high_open=False),
    "optimizer.nesterov": flag(),
    "optimizer.max_iter": integer(5, low=1),
    "optimizer.history_size": integer(10, low=1),
    "optimizer.line_search_fn": choice("strong_wolfe", nullable=True),
    "optimizer.backbone_lr_scale": positive(0.1, why="the backbone's LR is lr x backbone_lr_scale"),
    # scheduler
    "scheduler.interval": choice("step", "epoch"),
    "scheduler.monitor": choice(*METRICS, nullable=True),
    "scheduler.fn.gamma": positive(0.1, why="the LR is multiplied by gamma"),
    "scheduler.fn.factor": fraction(0.1, low_open=True, why="the LR is multiplied by factor"),
    "scheduler.fn.step_size": integer(2, low=1),
    "scheduler.fn.milestones": Rule(list, "[3,5]", item=integer(3, low=1)),
    "scheduler.fn.fractions": Rule(list, "[0.5,0.75]", item=fraction(0.5, low_open=True)),
    "scheduler.fn.patience": integer(2, low=0),
    # plateau: null = the monitor's direction (ablate.config.metric_registry)
    "scheduler.fn.mode": choice("min", "max", "triangular", "triangular2", "exp_range", nullable=True),
    "scheduler.fn.eta_min": number(0.0, low=0),
    "scheduler.fn.base_lr": number(0.0001, low=0),
    "scheduler.fn.max_lr": positive(0.1),
    "scheduler.fn.step_size_up": integer(800, low=1),
    "scheduler.fn.pct_start": fraction(0.25, low_open=True),
    "scheduler.fn.cycles": integer(3, low=1),
    "scheduler.fn.warmup_fraction": fraction(0.05),
    "scheduler.fn.start_factor": fraction(0.01, low_open=True, high_open=False),
    "scheduler.fn.cycle_momentum": flag(False),
    # trainer (Lightning's names)
    "trainer.max_epochs": integer(6, low=1),
    "trainer.min_epochs": integer(1, low=0, nullable=True),
    "trainer.max_steps": integer(1000, low=1, extra=(-1,)),
    "trainer.gradient_clip_val": number(1.0, low=0, nullable=True),
    "trainer.gradient_clip_algorithm": choice("norm", "value"),
    "trainer.accumulate_grad_batches": integer(2, low=1),
    "trainer.check_val_every_n_epoch": integer(1, low=1, nullable=True),
    "trainer.num_sanity_val_steps": integer(2, low=0, extra=(-1,)),
    "trainer.log_every_n_steps": integer(50, low=1),
    "trainer.limit_train_batches": positive(0.5, nullable=True),  # a fraction (float) or a batch count (int)
    "trainer.limit_*_batches": number(0.5, low=0, nullable=True),  # 0 turns validation / test off
    "trainer.enable_*": flag(),
    "trainer.sync_batchnorm": flag(),
    "trainer.use_distributed_sampler": flag(False),
    "trainer.accelerator": Rule(str, "cpu"),
    # callbacks
    # callbacks (Lightning's names; other callbacks' keys are checked by their constructors)
    "callbacks.early_stopping.monitor": choice(*MONITORABLE),
    "callbacks.model_checkpoint.monitor": choice(*MONITORABLE, nullable=True),
    # null: the monitor's direction (ablate.config.metric_registry), filled in by _derive_modes
    "callbacks.early_stopping.mode": choice("min", "max", nullable=True),
    "callbacks.model_checkpoint.mode": choice("min", "max", nullable=True),
    "callbacks.early_stopping.patience": integer(3, low=0),
    "callbacks.early_stopping.min_delta": number(0.0, low=0),
    "callbacks.model_checkpoint.save_top_k": integer(1, low=0, extra=(-1,)),
    "callbacks.model_checkpoint.save_last": flag(),
    "callbacks.progress_bar.refresh_rate": integer(25, low=0),
    # ensemble (configs/ensemble/*; ensemble.members: _check_ensemble_members)
    "ensemble.name": choice("none", "snapshot", "nocycle", "ema", "swa"),
    "ensemble.cycles": integer(5, low=1),
    "ensemble.decay": fraction(0.999, why="decay 1 never moves the average off the initial weights"),
    "ensemble.warmup": flag(),
    "ensemble.every_n_steps": integer(1, low=1),
    "ensemble.start_step": integer(0, low=0),
    "ensemble.swa_start": number(0.75, low=0, why="a fraction of the epochs in (0, 1) or the first averaged epoch"),
    "ensemble.swa_lr": positive(0.05, nullable=True, why="null = half the optimizer's LR"),
}


def rule_for(key: str) -> Rule | None:
    if key in RULES:
        return RULES[key]
    return next((rule for pattern, rule in RULES.items() if fnmatchcase(key, pattern)), None)


def effective_seed(seed: int) -> int:
    """Any integer is a seed (README): fold it into the range numpy, Lightning and scikit-learn accept.
    Seeds that differ by a multiple of 2**32 (e.g. -1 and 4294967295) therefore give the same run."""
    return int(seed) % SEED_MODULUS


# -- checking one value ------------------------------------------------------------------------------------------
def _fail(key: str, rule: Rule, value: Any) -> ConfigError:
    shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)  # as YAML would: true, null
    why = f" ({rule.why})" if rule.why else ""
    example = str(rule.example).replace(" ", "")
    return ConfigError(f"{key} must be {rule.describe()}{why}, got {shown}; e.g. {key}={example}")


def _coerce_number(value: Any, kind: type) -> Any:
    """A number from an int, float or numeric string (env values arrive as strings); booleans are not numbers."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str):
        value = value.strip()
        value = float(value) if any(c in value.lower() for c in ".en") else int(value)  # ValueError if not numeric
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError
    if kind is int:
        if not float(value).is_integer():
            raise ValueError
        return int(value)
    return value


def check_value(key: str, value: Any, rule: Rule) -> Any:
    """The value, coerced to the rule's type, or a ConfigError naming the key and an example."""
    if value is None:
        if rule.nullable:
            return None
        raise _fail(key, rule, value)
    if rule.kind is list:
        assert rule.item is not None
        if not isinstance(value, list | tuple) or (rule.length and len(value) != rule.length):
            raise _fail(key, rule, value)
        try:
            return [check_value(f"{key}[{i}]", item, rule.item) for i, item in enumerate(value)]
        except ConfigError:
            raise _fail(key, rule, value) from None
    if rule.kind is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise _fail(key, rule, value)
        return value
    if rule.kind is str:
        if not isinstance(value, str) or (rule.choices and value not in rule.choices):
            raise _fail(key, rule, value)
        return value
    try:
        number = _coerce_number(value, rule.kind)
    except (TypeError, ValueError):
        raise _fail(key, rule, value) from None
    if number in rule.extra:
        return number
    if rule.low is not None and (number < rule.low or (rule.low_open and number == rule.low)):
        raise _fail(key, rule, value)
    if rule.high is not None and (number > rule.high or (rule.high_open and number == rule.high)):
        raise _fail(key, rule, value)
    return number


# -- the pass over a composed config -----------------------------------------------------------------------------
def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf; lists with a rule of their own count as leaves."""
    if isinstance(node, dict):
        items: list[tuple[str, Any]] = []
        for name, child in node.items():
            key = f"{prefix}.{name}" if prefix else str(name)
            if rule_for(key) is not None or not isinstance(child, dict | list):
                items.append((key, child))
            elif isinstance(child, dict):
                items.extend(_leaves(child, key))
        return items
    return []


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers; an unresolvable ``${...}`` is a ConfigError naming its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "a value"
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raw = _raw(cfg, key)
        hint = "refer to an existing key, e.g. ${optimizer.lr}, or pass a plain value"
        if "oc.env" in raw:
            hint = "set the variable or give a default, e.g. ${oc.env:LR,0.01}"
        raise ConfigError(f"{key}={raw} cannot be resolved ({message}); {hint}") from None


def _raw(cfg: DictConfig, key: str) -> str:
    """The unresolved text of ``key`` (e.g. '${foo}'), or '' when the key cannot be followed."""
    node: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in re.findall(r"[^.\[\]]+", key):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return ""
    return str(node)


def validate(cfg: DictConfig) -> list[str]:
    """Check the composed config; raise ConfigError for the first problem, return warnings (one line each).

    Numeric strings of numeric keys are coerced in place, so the run sees numbers.
    """
    _check_missing(cfg)
    plain = resolve(cfg)
    for key, value in _leaves(plain):
        rule = rule_for(key)
        if rule is None:
            continue
        try:
            checked = check_value(key, value, rule)
        except ConfigError:
            _blame_source(cfg, key, value)  # scheduler.fn.cycles=${ensemble.cycles}: name the key the user set
            raise
        if checked != value or type(checked) is not type(value):
            _set(cfg, key, checked)
            _set_plain(plain, key, checked)
    _check_finite(plain)
    _check_val_size(cfg, plain.get("data") or {})
    _check_ckpt_path(plain.get("ckpt_path"))
    _check_ensemble_members(plain)
    return _derive_modes(cfg, plain) + _check_combinations(plain)


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???`` (OmegaConf's "missing"), found without resolving anything (resolving an
    interpolation to a missing value raises, and ``OmegaConf.missing_keys`` resolves)."""
    if isinstance(node, dict | list):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        keys = [_missing_keys(child, f"{prefix}.{name}" if prefix else str(name)) for name, child in items]
        return [key for found in keys for key in found]
    return [prefix] if node == "???" else []


def _check_missing(cfg: DictConfig) -> None:
    """A mandatory value left unset (``data=imagefolder`` without ``data.root``) is one line, not OmegaConf's
    MissingMandatoryValue traceback at instantiation."""
    missing = _missing_keys(OmegaConf.to_container(cfg, resolve=False))
    if missing:
        key = missing[0]
        rule = rule_for(key)
        example = f"; e.g. {key}={rule.example}" if rule is not None else ""
        raise ConfigError(f"{key} must be set: it has no default{example}")


def _check_finite(plain: dict[str, Any]) -> None:
    """inf and nan are refused for every number of the config, also where no rule covers the key (the typed
    reg/aug/init knobs, sweeper-free extras): no knob of ablate gives them a meaning, and ``reg.l2=1e400`` would
    otherwise train and 'diverge'. Keys with a rule were checked (finite included) by ``check_value``."""
    for key, value in _numbers(plain):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")


def _numbers(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float in ``node``; list items are ``key[i]``."""
    if isinstance(node, dict):
        pairs = [_numbers(child, f"{prefix}.{name}" if prefix else str(name)) for name, child in node.items()]
        return [pair for found in pairs for pair in found]
    if isinstance(node, list):
        return [pair for i, child in enumerate(node) for pair in _numbers(child, f"{prefix}[{i}]")]
    return [(prefix, node)] if isinstance(node, float) else []


def _blame_source(cfg: DictConfig, key: str, value: Any) -> None:
    """When ``key`` only copies another key (``${other}`` or ``${oc.select:other,...}``), check the value against the
    other key's rule first, so that the error names the key the user set."""
    match = re.fullmatch(r"\$\{(?:oc\.select:)?([\w.]+)(?:,[^}]*)?\}", _raw(cfg, key).strip())
    source = match.group(1) if match else None
    if source and source != key and (rule := rule_for(source)) is not None:
        check_value(source, value, rule)


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def _set_plain(plain: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        plain = plain[part]
    plain[last] = value


def _check_val_size(cfg: DictConfig, data: dict[str, Any]) -> None:
    """A fraction in [0, 1) or a whole count of samples; whether a count fits is known once the data are loaded."""
    value = data.get("val_size")
    if value is None or (data.get("num_folds") or 0) >= 2:
        return
    if isinstance(value, float) and not value.is_integer() and not 0 <= value < 1:
        raise ConfigError(
            f"data.val_size must be a fraction in [0, 1) or a sample count, got {value}; e.g. data.val_size=0.1"
        )
    if isinstance(value, float) and value >= 1:  # 5000.0 -> a count of 5000
        _set_plain(data, "val_size", int(value))
        _set(cfg, "data.val_size", int(value))


def _check_ckpt_path(path: str | None) -> None:
    if not path:
        return
    ckpt = Path(path)
    if ckpt.is_dir():
        inside = next((p for p in (ckpt / "checkpoints" / "last.ckpt", ckpt / "last.ckpt") if p.is_file()), None)
        hint = f"use ckpt_path={inside}" if inside else "pass a checkpoint file, e.g. <run dir>/checkpoints/last.ckpt"
        raise ConfigError(f"ckpt_path={path} is a folder, not a checkpoint; {hint}")
    if not ckpt.exists():
        raise ConfigError(f"ckpt_path={path} does not exist; pass a run's checkpoints/last.ckpt")
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={path} is not a file; pass a run's checkpoints/last.ckpt")
    if not zipfile.is_zipfile(ckpt):  # torch.save writes a zip archive
        raise ConfigError(f"ckpt_path={path} is not a checkpoint (not a torch.save archive); pass a .ckpt file")


def _check_ensemble_members(cfg: dict[str, Any]) -> None:
    """ensemble.members: auto (chosen on validation, so a validation split is needed), null (all M) or 1..M."""
    ensemble = cfg.get("ensemble") or {}
    if "members" not in ensemble:
        return
    members, cycles = ensemble["members"], ensemble.get("cycles")
    if members == "auto":
        if not _has_validation(cfg.get("data") or {}, cfg.get("trainer") or {}):
            raise ConfigError(
                "ensemble.members=auto chooses the ensemble size on validation, but there is no validation split; "
                "set data.val_size > 0 (e.g. data.val_size=0.1), or ensemble.members=null (all snapshots)"
            )
        return
    rule = integer(2, low=1, high=cycles, nullable=True)
    try:
        check_value("ensemble.members", members, rule)
    except ConfigError:
        shown = repr(members) if isinstance(members, str) else json.dumps(members)
        raise ConfigError(
            f"ensemble.members must be auto (chosen on validation), null (all) or an integer in [1, "
            f"ensemble.cycles={cycles}], got {shown}; e.g. ensemble.members=auto"
        ) from None


def _has_validation(data: dict[str, Any], trainer: dict[str, Any]) -> bool:
    if (data.get("num_folds") or 0) >= 2:
        return True
    return bool(data.get("val_size")) and trainer.get("limit_val_batches") != 0


def _derive_modes(cfg: DictConfig, plain: dict[str, Any]) -> list[str]:
    """Every monitor's mode (callbacks' ``mode``, the plateau schedule's ``scheduler.fn.mode``) checked against the
    metric registry. Null means the monitor's direction and stays null here (the config is not mutated; the callbacks
    and run.py ask the registry where they are built). A contradicting mode is refused (the checkpoint's is a
    warning: training is unaffected, only which epoch is called "best"). An unknown monitored metric is an error."""
    callbacks, scheduler = plain.get("callbacks") or {}, plain.get("scheduler") or {}
    fn = scheduler.get("fn") or {}
    pairs = [
        (f"callbacks.{name}", node.get("monitor"), node.get("mode"))
        for name, node in callbacks.items()
        if isinstance(node, dict) and "mode" in node
    ]
    if fn.get("_target_") == PLATEAU:
        pairs.append(("scheduler", scheduler.get("monitor"), fn.get("mode")))
    warnings = []
    for where, monitor, mode in pairs:
        mode_key = f"{where}.mode" if where != "scheduler" else "scheduler.fn.mode"
        if not monitor:
            continue
        try:
            wanted = metric_registry.mode(monitor)
        except ConfigError as err:
            raise ConfigError(f"{where}.monitor={monitor}: {err}") from None
        if mode is None:  # left null in the config (never mutated): the callbacks and run.py ask the registry
            continue
        if mode == wanted:
            continue
        better = "lower" if wanted == "min" else "higher"
        message = (
            f"{mode_key}={mode} contradicts monitor {monitor} ({better} is better, ablate.config.metric_registry); "
            f"use {mode_key}={wanted}, or leave it null to follow the monitor"
        )
        if mode_key != "callbacks.model_checkpoint.mode":
            raise ConfigError(message)
        # Training itself is unaffected; only which checkpoint is called "best" (and tested) is inverted.
        warnings.append(f"{message} (the 'best' checkpoint is the worst epoch)")
    return warnings


def _check_combinations(cfg: dict[str, Any]) -> list[str]:
    """Contradictions between keys (and between groups); returns warnings for combinations that run but mislead."""
    data, trainer = cfg.get("data") or {}, cfg.get("trainer") or {}
    optimizer, reg, callbacks = cfg.get("optimizer") or {}, cfg.get("reg") or {}, cfg.get("callbacks") or {}
    scheduler = cfg.get("scheduler") or {}
    fn = scheduler.get("fn") or {}
    folds, fold = data.get("num_folds") or 0, data.get("fold") or 0
    if folds >= 2 and not fold < folds:
        raise ConfigError(f"data.fold must be in [0, {folds}), got {fold}; e.g. data.fold={folds - 1}")
    no_val = "needs a validation split; set data.val_size > 0 (e.g. data.val_size=0.1)"
    if not _has_validation(data, trainer):
        if reg.get("early_stopping_patience"):
            raise ConfigError(f"reg.early_stopping {no_val}")
        if str(scheduler.get("monitor") or "").startswith("val/"):
            raise ConfigError(f"scheduler.monitor={scheduler['monitor']} {no_val}")
        for name, node in callbacks.items():
            if name != "model_checkpoint" and str((node or {}).get("monitor") or "").startswith("val/"):
                raise ConfigError(f"callbacks.{name}.monitor={node['monitor']} {no_val}, or drop callbacks.{name}")
    warnings: list[str] = []
    for key, value in trainer.items():
        if key.startswith("limit_") and isinstance(value, float) and value > 1:
            raise ConfigError(
                f"trainer.{key} must be a fraction in [0, 1] or a whole number of batches, got {value}; "
                f"e.g. trainer.{key}=0.5"
            )
    if fn.get("base_lr") is not None and fn.get("max_lr") is not None and not fn["base_lr"] < fn["max_lr"]:
        raise ConfigError(
            f"scheduler.fn.base_lr={fn['base_lr']} must be below scheduler.fn.max_lr={fn['max_lr']} (the peak, "
            "optimizer.lr by default); lower scheduler.fn.base_lr or raise optimizer.lr"
        )
    if optimizer.get("nesterov") and not optimizer.get("momentum"):
        raise ConfigError("optimizer.nesterov=true needs optimizer.momentum > 0; e.g. optimizer.momentum=0.9")
    return warnings + _lbfgs_warnings(optimizer, reg, cfg.get("aug") or {}, cfg.get("model") or {})


# reg knobs that make the loss random from one evaluation to the next (value that means "off")
RANDOM_REG = {"dropout": 0, "input_dropout": 0, "spatial_dropout": 0, "dropconnect": 0, "fmp": False,
              "stochastic_depth": 1, "input_noise": 0, "weight_noise": 0, "gradient_noise": 0}  # fmt: skip


def _lbfgs_warnings(optimizer: dict, reg: dict, aug: dict, model: dict) -> list[str]:
    if optimizer.get("_target_") != LBFGS:
        return []
    random_knobs = [f"model.{k}" for k in ("dropout", "input_dropout", "spatial_dropout") if model.get(k)]
    random_knobs += [f"reg.{k}" for k, off in RANDOM_REG.items() if reg.get(k, off) != off]
    defaults = {f.name: f.default for f in fields(AugmentConfig)}
    random_knobs += [f"aug.{k}" for k, v in aug.items() if k in defaults and v != defaults[k]]
    if not random_knobs:
        return []
    return [
        f"optimizer=lbfgs assumes a deterministic loss, but {', '.join(random_knobs)} "
        f"{'make' if len(random_knobs) > 1 else 'makes'} each closure call differ (the line search and curvature "
        "pairs become noise); turn them off for L-BFGS"
    ]


# -- the search (hydra.sweeper.* of hparams_search=..., checked by the Optuna sweeper before its first trial) ------
SEARCH_RULES: dict[str, Rule] = {
    "hydra.sweeper.sampler": choice("random", "tpe", "grid"),
    # null: the grid's size (grid sampler); other samplers need a count
    "hydra.sweeper.n_trials": integer(20, low=1, nullable=True),
    "hydra.sweeper.n_jobs": integer(1, low=1),
    "hydra.sweeper.seed": integer(0, nullable=True),
    "hydra.sweeper.direction": choice("auto", "minimize", "maximize"),
    "hydra.sweeper.pruner": choice("median", nullable=True),
    "hydra.sweeper.repeats": integer(2, low=1, why="seeds per setting"),
}


def validate_search(params: dict[str, Any]) -> dict[str, Any]:
    """The sweeper's settings checked against SEARCH_RULES (coerced: ``n_trials='5'`` -> 5); a ConfigError names the
    key. ``repeats`` is set as ``search.repeats`` and named so in the error."""
    checked = dict(params)
    for key, rule in SEARCH_RULES.items():
        name = key.rsplit(".", 1)[1]
        if name not in params:
            continue
        try:
            checked[name] = check_value(key, params[name], rule)
        except ConfigError as err:
            if name != "repeats":
                raise
            raise ConfigError(str(err).replace("hydra.sweeper.repeats", "search.repeats")) from None
    return checked


# -- evaluate.py (configs/evaluate.yaml; checked before any run is read or model loaded) ---------------------------
EVALUATE_RULES: dict[str, Rule] = {
    "run": Rule(str, "logs/runs/<time>", nullable=True),
    "sweep": Rule(str, "logs/multiruns/<time>", nullable=True),
    "setting": Rule(str, "'reg=none'", nullable=True, why="overrides of one setting of the sweep, space-separated"),
    "top_k": integer(3, low=1, nullable=True, why="how many of the best runs to keep; null keeps all"),
    "metric": Rule(str, "val/acc_best"),
    "metric_mode": choice("auto", "min", "max"),
    "weights": Rule(str, "last", choices=("best", "last"), nullable=True, why="null: the weights each run tested"),
    "ensemble.space": choice("prob", "logit"),
    "eval.mc_samples": integer(20, low=0, why="0 turns MC dropout off"),
    "eval.tta": Rule(str, "flip", choices=("flip",), nullable=True, why="null turns it off"),
    "batch_size": integer(1000, low=1, nullable=True, why="null: each run's data.eval_batch_size"),
    "device": Rule(str, "cpu"),  # and DEVICE's spelling
    "seed": integer(0),
}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def validate_evaluate(cfg: DictConfig) -> None:
    """evaluate.py's keys against EVALUATE_RULES (numeric strings coerced in place), the device's spelling and the
    run list. Whether the device exists is asked of torch by ablate.evaluation.saved_runs, still before any model is
    loaded."""
    plain = resolve(cfg)
    for key, rule in EVALUATE_RULES.items():
        node: Any = plain
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError:
            continue
        checked = check_value(key, node, rule)
        if checked != node or type(checked) is not type(node):
            _set(cfg, key, checked)
    device = plain.get("device")
    if not DEVICE.fullmatch(str(device or "auto")):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:<index> or mps, got {device!r}; e.g. device=cpu")
    _check_run_list(plain.get("runs"))


def _check_run_list(runs: Any) -> None:
    """``runs=dir`` or ``runs='[d1,d2]'``: folders, each named once (a run listed twice would count twice)."""
    if runs is None:
        return
    listed = [runs] if isinstance(runs, str) else runs
    if not isinstance(listed, list) or not all(isinstance(r, str) and r for r in listed):
        raise ConfigError(f"runs must be a run folder or a list of run folders, got {runs!r}; e.g. runs='[dir1,dir2]'")
    seen: dict[Path, str] = {}
    for name in listed:
        folder = Path(name).expanduser().resolve()
        if folder in seen:
            same = f" (as {seen[folder]})" if seen[folder] != name else ""
            raise ConfigError(
                f"runs lists {name} twice{same}; each run is one ensemble member: name it once, "
                "or train more seeds for a larger ensemble"
            )
        seen[folder] = name

"""Regularizers from the ``reg`` group: which model knobs they set, and what they add to each training step.

Model-side knobs (dropout, stochastic depth, batchnorm, fmp) become constructor arguments of the chosen model;
a knob the model cannot honour is an error naming the models that can. Step-side regularizers (penalties,
noise, FGSM, max-norm) live in :class:`StepRegularizers`, whose hooks the ClassifierModule calls; with every
knob off they cost nothing per step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import get_class
from torch import nn
from torch.func import functional_call

from ablate.config.schema import RegConfig
from ablate.errors import ConfigError
from ablate.layers import add_gradient_noise_, apply_max_norm_, convert_to_dropconnect, gradient_noise_std
from ablate.layers.kinds import BATCH_NORMS

_STOCHASTIC_DEPTH_MODELS = "a residual model: resnet (preresnet has no stochastic depth)"
# reg knob -> (model constructor argument, value that means "off", models that accept it)
MODEL_KNOBS: dict[str, tuple[str, Any, str]] = {
    "dropout": ("dropout", 0.0, "mlp, convnet, fmpnet"),
    "input_dropout": ("input_dropout", 0.0, "mlp"),
    "spatial_dropout": ("spatial_dropout", 0.0, "convnet"),
    "stochastic_depth": ("stochastic_depth", 1.0, _STOCHASTIC_DEPTH_MODELS),
    "stochastic_depth_mode": ("stochastic_depth_mode", "row", _STOCHASTIC_DEPTH_MODELS),
    "batchnorm": ("batchnorm", None, "mlp, convnet, resnet"),
}
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def max_norm_weights(model: nn.Module, include_output: bool) -> list[torch.Tensor]:
    """The weights reg.max_norm constrains: every linear/conv layer's, except the output layer's unless asked.

    Srivastava et al. 2014 (Sec. 5.1) bound "the norm of the incoming weight vector at each hidden unit"; the output
    layer is the last linear/conv layer registered, which holds for every model here (mlp, convnet, resnet, fmpnet and
    transfer's head: tests/test_noise_and_maxnorm.py checks it against num_classes).
    """
    layers = [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not include_output:
        layers = layers[:-1]
    return [m.weight for m in layers]


def model_kwargs(model_target: str, reg: RegConfig) -> dict[str, Any]:
    """Constructor arguments that the reg knobs that are on ask of the model; errors for the ones the model's class
    cannot take (read from its signature). A rate set in both ``model.*`` and ``reg.*`` is the rule book's
    (``ablate.config.rules.typed_nodes.check_model_twins``)."""
    accepted = inspect.signature(get_class(model_target)).parameters
    name = model_target.rsplit(".", 1)[-1]
    kwargs: dict[str, Any] = {}
    for knob, (argument, off, supported_by) in MODEL_KNOBS.items():
        value = getattr(reg, knob)
        if value == off:
            continue
        if argument not in accepted:
            raise ConfigError(f"reg.{knob} is not supported by {name}; it needs {supported_by} (model=...)")
        kwargs[argument] = value
    if reg.fmp:
        fmp = {"fmp_ratio": reg.fmp_ratio, "fmp_mode": reg.fmp_mode, "fmp_overlapping": reg.fmp_overlapping}
        if "downsample" in accepted:
            kwargs.update(downsample="fmp", **fmp)
        elif "fmp_ratio" in accepted:
            kwargs.update(fmp)
        else:
            raise ConfigError(f"reg.fmp is not supported by {name}; use model=fmpnet or model=convnet")
    return kwargs


def apply_dropconnect(model: nn.Module, reg: RegConfig) -> None:
    if not reg.dropconnect:
        return
    replaced = convert_to_dropconnect(
        model,
        reg.dropconnect,
        layers=reg.dropconnect_layers,
        per_sample=reg.dropconnect_per_sample,
        inference=reg.dropconnect_inference,
    )
    if replaced == 0:
        raise ConfigError("reg.dropconnect found no hidden linear layer to mask; use model=mlp or model=convnet")


def running_stat_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm running statistic (mean, var, batch count), by buffer name, for ``functional_call``:
    a forward pass given them updates the copies, never the model's own statistics.

    Copies rather than restoring the originals afterwards: an in-place restore would bump the version of tensors the
    clean forward pass saved for its backward. (torch has no switch that keeps batch statistics but stops the running
    update: ``track_running_stats=False`` also changes eval mode, torch.func's ``replace_all_batch_norm_modules_`` is
    permanent.)
    """
    copies = {}
    for name, module in model.named_modules():
        if isinstance(module, BATCH_NORMS) and module.track_running_stats:
            for buffer_name, buffer in module.named_buffers(recurse=False):
                copies[f"{name}.{buffer_name}" if name else buffer_name] = buffer.clone()
    return copies


def fgsm_perturb(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    step: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): x + step * sign(d loss / d x), kept in [low, high].

    ``step`` is eps expressed in the (normalized) input's units, per channel. The paper perturbs along the gradient of
    the training cost J(theta, x, y) itself, so the loss is the training loss (with its label smoothing) and the
    model runs as in the training step (train mode: dropout, batch statistics). The pass is not a training batch,
    though: it updates copies of BatchNorm's running statistics, so evaluation never sees the perturbation pass.
    """
    x = x.detach().requires_grad_(True)
    logits = functional_call(model, running_stat_copies(model), (x,), strict=False)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, targets, label_smoothing=label_smoothing), x)
    return torch.maximum(torch.minimum(x.detach() + step * grad.sign(), high), low)


class StepRegularizers:
    """The per-step side of the ``reg`` group, bound to one model."""

    def __init__(self, reg: RegConfig, model: nn.Module) -> None:
        self.reg = reg
        self.model = model
        self.penalized = [
            p for p in model.parameters() if p.requires_grad and (reg.penalty_params == "all" or p.ndim > 1)
        ]
        self._activations: list[torch.Tensor] = []
        self.max_norm_weights = max_norm_weights(model, reg.max_norm_output) if reg.max_norm else []
        if reg.activation_l1:
            # Hidden activations: the outputs of the activation modules (our models have none after the classifier).
            for module in model.modules():
                if isinstance(module, ACTIVATIONS):
                    module.register_forward_hook(self._record_activation)

    def _record_activation(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if module.training:
            self._activations.append(output)

    def start_step(self) -> None:
        self._activations.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's forward pass, with fresh Gaussian weight noise when reg.weight_noise is on."""
        if not self.reg.weight_noise or not self.model.training:
            return self.model(x)
        sigma = self.reg.weight_noise
        # functional_call keeps the noisy weights out of the module: gradients flow to the clean parameters.
        noisy = {n: p + sigma * torch.randn_like(p) for n, p in self.model.named_parameters() if p.ndim > 1}
        return functional_call(self.model, noisy, (x,), strict=False)

    def penalty(self) -> torch.Tensor | None:
        """L1/L2 weight penalties and the activation L1 penalty, to add to the loss (None when all are off)."""
        terms = []
        if self.reg.l2:
            terms.append(self.reg.l2 / 2 * sum(p.pow(2).sum() for p in self.penalized))
        if self.reg.l1:
            terms.append(self.reg.l1 * sum(p.abs().sum() for p in self.penalized))
        if self._activations:
            terms.append(self.reg.activation_l1 * sum(a.abs().mean() for a in self._activations))
            self._activations.clear()
        return sum(terms) if terms else None

    def adversarial_loss(
        self, x: torch.Tensor, targets: torch.Tensor, clean_loss: torch.Tensor, to_normalized: Callable
    ) -> torch.Tensor:
        if not self.reg.adversarial_eps:
            return clean_loss
        step, low, high = to_normalized(self.reg.adversarial_eps)
        smoothing = self.reg.label_smoothing  # the same loss as the clean term (ClassifierModule's)
        x_adv = fgsm_perturb(self.model, x, targets, step, low, high, smoothing)
        w = self.reg.adversarial_weight
        return (1 - w) * clean_loss + w * F.cross_entropy(self.forward(x_adv), targets, label_smoothing=smoothing)

    def before_optimizer_step(self, step: int) -> None:
        if self.reg.gradient_noise:
            add_gradient_noise_(self.model.parameters(), gradient_noise_std(step, eta=self.reg.gradient_noise))

    def after_optimizer_step(self) -> None:
        if self.reg.max_norm:
            apply_max_norm_(self.max_norm_weights, self.reg.max_norm)

    @property
    def active(self) -> bool:
        """Whether the loss computation needs this object (penalties, weight noise, FGSM)."""
        r = self.reg
        return bool(r.l1 or r.l2 or r.activation_l1 or r.weight_noise or r.adversarial_eps)

    @property
    def has_step_hooks(self) -> bool:
        """Whether the optimizer-step hooks do anything (gradient noise, max-norm)."""
        return bool(self.reg.gradient_noise or self.reg.max_norm)

"""The reg, aug and init groups: every option trains, and each technique shows its defining behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.config.schema import RegConfig
from ablate.errors import ConfigError
from ablate.models import MLP, ConvNet, ResNet
from ablate.models.init import apply_init
from ablate.models.resnet import BasicBlock, survival_probabilities
from ablate.runtime.job import train
from ablate.training.regularization import StepRegularizers, fgsm_perturb, model_kwargs
from tests.conftest import CONFIG_DIR


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


# Options that need another model than the default ConvNet, and those the ConvNet must refuse.
NEEDS_MODEL = {"stochastic_depth": "resnet", "input_dropout": "mlp"}


@pytest.mark.parametrize("option", options("reg"))
def test_every_reg_option_trains_one_epoch(make_cfg, option):
    model = NEEDS_MODEL.get(option, "convnet")
    summary = train(make_cfg(f"reg={option}", f"model={model}", "trainer.max_epochs=1"))
    assert summary["metrics"]["test/acc"] > 0


@pytest.mark.parametrize("option", options("aug"))
def test_every_aug_option_trains_one_epoch(make_cfg, option):
    assert train(make_cfg(f"aug={option}", "model=mlp"))["metrics"]["test/acc"] > 0


@pytest.mark.parametrize("option", options("init"))
def test_every_init_option_trains_one_epoch(make_cfg, option):
    assert train(make_cfg(f"init={option}", "model=mlp"))["metrics"]["test/acc"] > 0


def test_several_regularizers_compose(make_cfg):
    cfg = make_cfg("reg=[dropout,l2,max_norm,label_smoothing]", "aug=[flip,crop]")
    assert cfg.reg.dropout == 0.5 and cfg.reg.l2 > 0 and cfg.reg.max_norm == 3.0 and cfg.aug.crop_padding == 2
    assert train(cfg)["metrics"]["test/acc"] > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["reg=stochastic_depth"], "reg.stochastic_depth is not supported by ConvNet; it needs a residual model"),
        (["reg=fmp", "model=mlp"], "reg.fmp is not supported by MLP"),
        (["reg=dropconnect", "model=resnet"], "reg.dropconnect found no hidden linear layer"),
        (["reg=dropout", "reg.dropout=1.5"], "reg.dropout must be a probability in [0, 1), got 1.5"),
        (["reg=input_noise", "aug=noise"], "reg.input_noise and aug.noise_std are the same technique"),
        (["aug=flip", "aug.flip=2.0"], "aug.flip must be a probability in [0, 1], got 2.0"),
        (["init=orthogonal", "init.scheme=lecun"], "init.scheme 'lecun' is unknown"),
        (["reg=early_stopping", "data.val_size=0"], "reg.early_stopping needs a validation split"),
    ],
)
def test_knobs_a_model_cannot_honour_are_errors(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as info:
        train(make_cfg(*overrides))
    assert message in str(info.value)


def test_misspelled_reg_knob_is_rejected(make_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        make_cfg("reg.dropot=0.5")


# -- penalties ---------------------------------------------------------------------------------------------------
def test_l1_l2_penalty_gradients_equal_closed_form():
    torch.manual_seed(0)
    model = MLP(input_shape=(1, 3, 3), num_classes=4, depth=1, width=5)
    reg = StepRegularizers(RegConfig(l2=0.3, l1=0.05), model)
    assert len(reg.penalized) == 2  # the two weight matrices; biases excluded by default
    reg.penalty().backward()
    for module in (m for m in model if isinstance(m, nn.Linear)):
        w = module.weight
        torch.testing.assert_close(w.grad, 0.3 * w.detach() + 0.05 * w.detach().sign())
        assert module.bias.grad is None
    everything = StepRegularizers(RegConfig(l2=1.0, penalty_params="all"), model)
    assert len(everything.penalized) == 4


def test_activation_l1_penalizes_hidden_activations():
    torch.manual_seed(0)
    model = MLP(input_shape=(1, 3, 3), num_classes=4, depth=2, width=6)
    reg = StepRegularizers(RegConfig(activation_l1=0.5), model)
    x = torch.randn(8, 1, 3, 3)
    with torch.no_grad():  # the hidden activations, recomputed layer by layer
        hidden = [x.flatten(1)]
        for layer in list(model)[1:]:
            hidden.append(layer(hidden[-1]).clone())
    layers = list(model)[1:]
    relu_outputs = [h for layer, h in zip(layers, hidden[1:], strict=True) if isinstance(layer, nn.ReLU)]
    expected = 0.5 * sum(a.abs().mean() for a in relu_outputs)
    reg.start_step()  # forget what the recomputation recorded
    model(x)
    torch.testing.assert_close(reg.penalty(), expected)
    assert reg.penalty() is None  # consumed: the next step starts empty


def test_fgsm_perturbation_is_eps_times_gradient_sign():
    torch.manual_seed(0)
    model = MLP(input_shape=(1, 4, 4), num_classes=3, depth=1, width=8)
    x, y = torch.rand(5, 1, 4, 4), torch.randint(0, 3, (5,))
    big = torch.tensor(1e9)
    x_adv = fgsm_perturb(model, x, y, torch.tensor(0.1), -big, big)
    x_req = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_req), y).backward()
    torch.testing.assert_close(x_adv - x, 0.1 * x_req.grad.sign())
    clipped = fgsm_perturb(model, x, y, torch.tensor(0.1), torch.tensor(0.0), torch.tensor(1.0))
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_fgsm_perturbation_leaves_batchnorm_running_stats_alone():
    """The perturbation pass is not a training batch: BN's running statistics (and batch count) are unchanged, while
    the gradient is still taken through the training-mode model (batch statistics), as for the training loss."""
    torch.manual_seed(0)
    model = ConvNet(input_shape=(1, 8, 8), num_classes=3, channels=(4,), kernel_sizes=(3,), hidden=8).train()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 3, (6,))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    big = torch.tensor(1e9)
    x_adv = fgsm_perturb(model, x, y, torch.tensor(0.1), -big, big)
    for m, saved in zip(norms, before, strict=True):
        for k, v in m.state_dict().items():
            assert torch.equal(v, saved[k]), k
    assert model.training
    x_req = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_req), y).backward()  # a training-mode pass: this one does move the running stats
    torch.testing.assert_close(x_adv - x, 0.1 * x_req.grad.sign())
    assert not torch.equal(norms[0].running_mean, before[0]["running_mean"])


def test_fgsm_follows_the_label_smoothed_training_loss():
    """With reg.label_smoothing the perturbation and the adversarial term use the smoothed loss, like the clean one."""
    torch.manual_seed(2)
    model = MLP(input_shape=(1, 4, 4), num_classes=3, depth=1, width=8)
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 3, (6,))
    big = torch.tensor(1e9)
    x_req = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_req), y, label_smoothing=0.6).backward()
    x_adv = fgsm_perturb(model, x, y, torch.tensor(0.1), -big, big, label_smoothing=0.6)
    torch.testing.assert_close(x_adv - x, 0.1 * x_req.grad.sign())
    assert not torch.equal(x_adv, fgsm_perturb(model, x, y, torch.tensor(0.1), -big, big))  # smoothing matters here

    reg = StepRegularizers(RegConfig(adversarial_eps=0.1, adversarial_weight=1.0, label_smoothing=0.6), model)
    scale = torch.tensor(0.1)  # identity normalization: eps 0.1 in pixel units is 0.1 in input units

    def to_normalized(eps):
        return scale * eps / 0.1, -big, big

    loss = reg.adversarial_loss(x, y, torch.tensor(0.0), to_normalized)
    torch.testing.assert_close(loss, F.cross_entropy(model(x_adv), y, label_smoothing=0.6))


def test_weight_noise_perturbs_forward_but_trains_clean_weights():
    torch.manual_seed(0)
    model = MLP(input_shape=(1, 2, 2), num_classes=3, depth=1, width=4)
    before = [p.detach().clone() for p in model.parameters()]
    reg = StepRegularizers(RegConfig(weight_noise=0.5), model)
    x = torch.randn(6, 1, 2, 2)
    a, b = reg.forward(x), reg.forward(x)
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    model.eval()
    torch.testing.assert_close(reg.forward(x), model(x))


def test_gradient_noise_changes_only_gradients():
    torch.manual_seed(0)
    model = MLP(input_shape=(1, 2, 2), num_classes=3, depth=1, width=4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    StepRegularizers(RegConfig(gradient_noise=1.0), model).before_optimizer_step(step=0)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grads.std() == pytest.approx(1.0, rel=0.35)  # variance eta / (1 + 0)^0.55 = 1


def test_max_norm_is_enforced_after_every_step_in_training(make_cfg, tmp_path):
    summary = train(make_cfg("model=mlp", "reg=max_norm", "reg.max_norm=0.5", "optimizer.lr=0.05"))
    state = torch.load(summary["checkpoint_last"], weights_only=True)["state_dict"]
    for name in ("model.1.weight", "model.3.weight"):  # the hidden units; the output layer (model.5) is free
        assert state[name].norm(dim=1).max() <= 0.5 + 1e-5, name


# -- model-side knobs ----------------------------------------------------------------------------------------------
def test_reg_knobs_reach_the_model():
    kwargs = model_kwargs("ablate.models.ConvNet", RegConfig(dropout=0.3, spatial_dropout=0.1, fmp=True))
    assert kwargs["dropout"] == 0.3 and kwargs["downsample"] == "fmp"
    model = ConvNet(input_shape=(1, 28, 28), num_classes=10, **kwargs)
    assert sum(isinstance(m, nn.Dropout2d) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in MLP((1, 4, 4), 2, batchnorm=False).modules())
    kwargs = model_kwargs("ablate.models.MLP", RegConfig(batchnorm=True))
    assert sum(isinstance(m, nn.BatchNorm1d) for m in MLP((1, 4, 4), 2, **kwargs).modules()) == 2


def test_stochastic_depth_uses_linear_decay_and_drops_the_branch_not_the_skip():
    assert survival_probabilities(4, 0.5) == [0.875, 0.75, 0.625, 0.5]
    model = ResNet(input_shape=(3, 16, 16), num_classes=10, depth=20, stochastic_depth=0.5)
    drops = [block.drop_branch.p for block in model.blocks]
    expected = [1 - p for p in survival_probabilities(9, 0.5)]
    assert drops == pytest.approx(expected)

    torch.manual_seed(0)
    block = BasicBlock(4, 4, stride=1, activation="relu", batchnorm=False, drop=0.5)
    with torch.no_grad():
        for p in block.branch.parameters():
            p.fill_(0.1)
    x = torch.rand(400, 4, 5, 5)
    branch = block.branch(x)
    out = block(x)
    kept = torch.isclose(out, torch.relu(x + branch / 0.5)).flatten(1).all(1)
    skipped = torch.isclose(out, torch.relu(x)).flatten(1).all(1)
    assert bool((kept | skipped).all())  # every sample: the whole branch (rescaled) or none of it
    assert 0.4 < kept.float().mean() < 0.6
    block.eval()
    torch.testing.assert_close(block(x), torch.relu(x + branch))  # identity scaling at eval


def test_dropout_masks_at_rate_p_with_inverted_scaling_and_is_identity_at_eval():
    model = MLP(input_shape=(1, 50, 50), num_classes=2, depth=1, width=4000, dropout=0.3)
    dropout = next(m for m in model if isinstance(m, nn.Dropout))
    torch.manual_seed(0)
    x = torch.ones(2, 4000)
    y = dropout(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))  # kept units scaled by 1 / (1 - p)
    dropout.eval()
    assert torch.equal(dropout(x), x)


def test_eval_batches_are_never_augmented(make_cfg):
    cfg = make_cfg("aug=[flip,crop,noise]", "model=mlp")
    from ablate.training.module import ClassifierModule

    seen = {}
    original = ClassifierModule.on_after_batch_transfer

    def spy(self, batch, idx):
        out = original(self, batch, idx)
        expected = (batch[0].float() / 255 - self.mean) / self.std
        seen.setdefault(self.trainer.state.stage.value, []).append(torch.allclose(out[0], expected))
        return out

    ClassifierModule.on_after_batch_transfer = spy
    try:
        train(cfg)
    finally:
        ClassifierModule.on_after_batch_transfer = original
    assert not any(seen["train"])  # training batches changed
    assert all(seen["validate"]) and all(seen["test"])  # evaluation batches untouched


@pytest.mark.parametrize(
    ("scheme", "expected_std"),
    [
        ("xavier_uniform", math.sqrt(2 / (400 + 300))),
        ("xavier_normal", math.sqrt(2 / (400 + 300))),
        ("he_uniform", math.sqrt(2 / 400)),
        ("he_normal", math.sqrt(2 / 400)),
        ("orthogonal", math.sqrt(1 / 400)),
    ],
)
def test_init_std_matches_formula(scheme, expected_std):
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(400, 300))
    assert apply_init(layer, scheme) == 1
    assert layer[0].weight.std().item() == pytest.approx(expected_std, rel=0.03)
    assert torch.count_nonzero(layer[0].bias) == 0
    if scheme == "orthogonal":
        w = layer[0].weight
        torch.testing.assert_close(w @ w.T, torch.eye(300), atol=1e-4, rtol=0)


def _branch_survival(model: ResNet, x: torch.Tensor, passes: int) -> torch.Tensor:
    """Per block and pass, the fraction of samples whose residual branch survived (read from StochasticDepth)."""
    kept: list[list[float]] = [[] for _ in model.blocks]

    def record(index: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            kept[index].append((output.flatten(1) != 0).any(1).float().mean().item())

        return hook

    for i, block in enumerate(model.blocks):
        block.drop_branch.register_forward_hook(record(i))
    with torch.no_grad():
        for _ in range(passes):
            model(x)
    return torch.tensor(kept)  # (blocks, passes)


def test_stochastic_depth_batch_mode_drops_a_whole_block_for_the_whole_minibatch_with_linear_decay():
    torch.manual_seed(0)
    model = ResNet(input_shape=(1, 8, 8), num_classes=3, depth=20, width=4, stochastic_depth=0.5, batchnorm=False)
    batch_model = ResNet(
        input_shape=(1, 8, 8),
        num_classes=3,
        depth=20,
        width=4,
        stochastic_depth=0.5,
        batchnorm=False,
        stochastic_depth_mode="batch",
    )
    x = torch.rand(16, 1, 8, 8) + 0.5
    survival = survival_probabilities(9, 0.5)
    batch = _branch_survival(batch_model.train(), x, passes=400)
    assert set(batch.unique().tolist()) <= {0.0, 1.0}  # all samples of a mini-batch share the draw
    assert batch.mean(1).tolist() == pytest.approx(survival, abs=0.08)  # p_l = 1 - l / L * (1 - p_L)
    assert batch.mean(1)[0] > batch.mean(1)[-1] + 0.25  # early blocks survive more often than late ones
    row = _branch_survival(model.train(), x, passes=100)
    assert ((row > 0) & (row < 1)).float().mean() > 0.5  # per-sample draws: most passes keep some, drop others
    assert row.mean(1).tolist() == pytest.approx(survival, abs=0.08)
    # Kept branches are scaled by 1 / p_l in training (torchvision), so evaluation is the plain sum.
    assert not _branch_survival(batch_model.eval(), x, passes=3).eq(0).any()


def test_stochastic_depth_mode_is_a_reg_knob_for_resnet_only(make_cfg):
    kwargs = model_kwargs("ablate.models.ResNet", RegConfig(stochastic_depth=0.5, stochastic_depth_mode="batch"))
    assert kwargs == {"stochastic_depth": 0.5, "stochastic_depth_mode": "batch"}
    assert "stochastic_depth_mode" not in model_kwargs("ablate.models.ResNet", RegConfig(stochastic_depth=0.5))
    with pytest.raises(ConfigError, match=r"reg\.stochastic_depth_mode is not supported by MLP"):
        model_kwargs("ablate.models.MLP", RegConfig(stochastic_depth_mode="batch"))
    with pytest.raises(ConfigError, match=r"reg\.stochastic_depth_mode must be one of \['row', 'batch'\]"):
        train(make_cfg("model=resnet", "reg=stochastic_depth", "reg.stochastic_depth_mode=layer"))


@pytest.mark.parametrize(
    "override", ["reg.l2=1e400", "reg.l2=nan", "reg.max_norm=inf", "reg.adversarial_eps=-inf", "aug.rotate=inf"]
)
def test_non_finite_numbers_are_refused_naming_the_key(override, tmp_path):
    """Issue 16 item 15: reg.l2=1e400 (inf) trained and 'diverged' with advice about the LR; inf and nan are refused
    for every number of the config, the typed reg/aug knobs included."""
    from ablate.config.rules import validate
    from tests.conftest import compose_config

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')} must be a finite number, got") as err:
        validate(compose_config([override], tmp_path))
    assert err.value.exit_code == 2 and "\n" not in str(err.value)

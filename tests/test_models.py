"""Models: any input shape and class count, the documented sizes, and their knobs."""

from __future__ import annotations

import math

import pytest
import torch
import torchmetrics.functional as tmf
from torch import nn

from ablate.errors import ConfigError
from ablate.models import MLP, ConvNet, PreResNet, ResNet
from ablate.models.activations import Maxout
from ablate.optim import param_groups
from ablate.training.step_metrics import ClassificationStats


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
@pytest.mark.parametrize("factory", [MLP, ConvNet, ResNet, PreResNet])
def test_any_model_fits_any_input(factory, shape):
    model = factory(input_shape=shape, num_classes=7)
    assert model(torch.rand(4, *shape)).shape == (4, 7)


@pytest.mark.parametrize(("depth", "params_k"), [(20, 272), (32, 467), (56, 856), (110, 1730)])
def test_cifar_resnet_sizes_match_he_et_al(depth, params_k):
    model = ResNet(input_shape=(3, 32, 32), num_classes=10, depth=depth)
    blocks = len(model.blocks)
    assert blocks == 3 * (depth - 2) // 6
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs + 1 == depth  # 6n+1 conv layers + the classifier
    assert sum(p.numel() for p in model.parameters()) / 1000 == pytest.approx(params_k, rel=0.02)


def test_resnet_rejects_depth_that_is_not_6n_plus_2():
    with pytest.raises(ConfigError, match="6n\\+2"):
        ResNet(input_shape=(3, 32, 32), num_classes=10, depth=21)


@pytest.mark.parametrize(("depth", "blocks", "params_k"), [(164, 54, 1700), (110, 36, None), (20, 9, 270)])
def test_preresnet_is_the_swa_papers_network(depth, blocks, params_k):
    """PreResNet as the SWA authors' code builds it: bottleneck blocks (9n+2) from depth 44, basic (6n+2) below.
    Parameters where a paper gives them: PreResNet-164 1.7 M (He et al. 2016b), ResNet-20 0.27 M (He et al. 2016a)."""
    model = PreResNet(input_shape=(3, 32, 32), num_classes=10, depth=depth)
    assert len(model.blocks) == blocks
    branch_convs = sum(isinstance(m, nn.Conv2d) for block in model.blocks for m in block.branch.modules())
    assert 1 + branch_convs + 1 == depth  # the stem, the branches, the classifier; projection shortcuts not counted
    if params_k is not None:
        assert sum(p.numel() for p in model.parameters()) / 1000 == pytest.approx(params_k, rel=0.01)


def test_preresnet_blocks_are_pre_activation_with_identity_shortcuts():
    """Each branch opens with BN and the activation and nothing follows the addition: a block whose branch outputs 0
    passes its input through unchanged (the post-activation ResNet would apply its relu)."""
    model = PreResNet(input_shape=(3, 32, 32), num_classes=10, depth=20).eval()
    block = model.blocks[1]  # same shape in and out: identity shortcut
    assert isinstance(block.branch[0], nn.BatchNorm2d) and isinstance(block.branch[1], nn.ReLU)
    nn.init.zeros_(block.branch[-1].weight)
    x = torch.randn(2, 16, 8, 8)  # negative entries survive: no relu after the sum
    assert torch.equal(block(x), x)
    first_of_stage = model.blocks[3]
    assert isinstance(first_of_stage.shortcut, nn.Conv2d) and first_of_stage.shortcut.stride == (2, 2)


def test_deep_preresnet_starts_near_uniform_where_the_post_activation_resnet_does_not():
    """Why model=preresnet exists (experiment=swa): at depth 164 the post-activation ResNet's initial loss is far above
    ln 10, and SGD at the paper's lr 0.1 blew up from there; the pre-activation net starts near ln 10."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    losses = {}
    for factory in (PreResNet, ResNet):
        torch.manual_seed(1)
        model = factory(input_shape=(3, 32, 32), num_classes=10, depth=164).train()
        with torch.no_grad():
            losses[factory.__name__] = nn.functional.cross_entropy(model(x), y).item()
    assert abs(losses["PreResNet"] - math.log(10)) < 0.3
    assert losses["ResNet"] > math.log(10) + 0.8, losses


def test_preresnet_rejects_depths_of_neither_form():
    with pytest.raises(ConfigError, match="9n\\+2"):
        PreResNet(input_shape=(3, 32, 32), num_classes=10, depth=50)  # 6n+2 but >= 44: needs 9n+2


def test_maxout_takes_max_over_pieces():
    x = torch.tensor([[1.0, 5.0, -2.0, -3.0]])
    assert Maxout(2)(x).tolist() == [[5.0, -2.0]]
    mlp = MLP(input_shape=(1, 4, 4), num_classes=3, depth=2, width=8, activation="maxout")
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    assert [lin.out_features for lin in linears] == [16, 16, 3]
    assert [lin.in_features for lin in linears] == [16, 8, 8]


def test_mlp_batchnorm_and_dropout_switches():
    mlp = MLP(input_shape=(1, 4, 4), num_classes=3, depth=2, width=8, batchnorm=True, dropout=0.5)
    kinds = [type(m).__name__ for m in mlp]
    assert kinds.count("BatchNorm1d") == 2 and kinds.count("Dropout") == 2
    assert all(m.bias is None for m in mlp if isinstance(m, nn.Linear) and m.out_features == 8)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "elu", "leaky_relu"])
def test_activation_is_used(activation):
    mlp = MLP(input_shape=(1, 2, 2), num_classes=2, depth=1, width=4, activation=activation)
    expected = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}[activation]
    assert any(isinstance(m, expected) for m in mlp)


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.activation 'swish' is unknown"):
        MLP(input_shape=(1, 2, 2), num_classes=2, activation="swish")


def test_weight_decay_skips_biases_and_norms_unless_asked():
    model = ConvNet(input_shape=(1, 28, 28), num_classes=10)
    decay, no_decay = param_groups(model, decay_bias_and_norm=False)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0
    n_norm = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert sum(p.numel() for p in no_decay["params"]) >= n_norm
    optimizer = torch.optim.AdamW(param_groups(model, False), lr=0.1, weight_decay=0.5)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.5, 0.0]
    (single,) = param_groups(model, decay_bias_and_norm=True)
    assert len(single["params"]) == len(list(model.parameters()))


def test_classification_stats_match_torchmetrics():
    torch.manual_seed(0)
    stats = ClassificationStats()
    all_logits, all_labels, losses = [], [], []
    for n in (7, 13, 5):
        logits, labels = torch.randn(n, 4), torch.randint(0, 4, (n,))
        loss = nn.functional.cross_entropy(logits, labels)
        stats.accumulate(logits, labels, loss)
        all_logits.append(logits), all_labels.append(labels), losses.append(loss * n)
    result = stats.compute()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    assert result["acc"] == pytest.approx(tmf.accuracy(logits, labels, task="multiclass", num_classes=4).item())
    assert result["loss"] == pytest.approx((sum(losses) / 25).item(), rel=1e-6)
    soft = nn.functional.one_hot(labels, 4).float() * 0.7 + 0.075
    stats.reset()
    stats.accumulate(logits, soft, torch.tensor(0.0))
    assert stats.compute()["acc"] == pytest.approx(result["acc"])


def test_mlp_widths_give_each_hidden_layer_its_size():
    mlp = MLP(input_shape=(1, 28, 28), num_classes=10, depth=7, width=3, widths=[1024, 1024, 2048])
    shapes = [tuple(m.weight.shape) for m in mlp if isinstance(m, torch.nn.Linear)]
    assert shapes == [(1024, 784), (1024, 1024), (2048, 1024), (10, 2048)]
    with pytest.raises(ConfigError, match=r"model\.widths"):
        MLP(input_shape=(1, 2, 2), num_classes=2, widths=[4, 0])


# Graham 2014 (arXiv:1412.6071), Sec. 4: the MNIST net (32nC2 - FMP sqrt2)^6 - C2 - C1 - output on 36x36 inputs
# and the CIFAR-100 net (64nC2 - FMP 2^(1/3))^12 - C2 - C1 - output on 94x94, both ending at 1x1. The per-layer sizes
# are those of Graham's code, which sizes the layers from the output backwards with N_in = round(N_out * alpha).
PAPER_MNIST_SIZES = [36, 35, 25, 24, 17, 16, 11, 10, 7, 6, 4, 3, 2, 1, 1]
PAPER_CIFAR100_SIZES = [94, 93, 74, 73, 58, 57, 45, 44, 35, 34, 27, 26, 21, 20, 16, 15, 12, 11, 9, 8, 6, 5, 4, 3]
PAPER_CIFAR100_SIZES += [2, 1, 1]


@pytest.mark.parametrize(
    ("side", "ratio", "layers", "sizes"),
    [(36, 2**0.5, 6, PAPER_MNIST_SIZES), (94, 2 ** (1 / 3), 12, PAPER_CIFAR100_SIZES)],
)
@pytest.mark.parametrize("overlapping", [True, False])
def test_fmpnet_layer_sizes_match_the_paper(side, ratio, layers, sizes, overlapping):
    from ablate.models import FMPNet

    torch.manual_seed(0)
    model = FMPNet((1, side, side), 10, width=2, fmp_ratio=ratio, fmp_overlapping=overlapping)
    assert model.num_fmp_layers == layers
    assert model.spatial_sizes == sizes
    seen = [side]  # the sizes the layers really produce, C2 and FMP alternating, then the final C2 and C1
    x = torch.zeros(1, 1, side, side)
    for layer in model.features:
        x = layer(x)
        if not isinstance(layer, nn.LeakyReLU):
            seen.append(x.shape[-1])
    assert seen == sizes
    assert model(torch.zeros(2, 1, side, side)).shape == (2, 10)


def test_fmpnet_on_unpadded_mnist_stops_one_layer_earlier():
    from ablate.models import FMPNet

    model = FMPNet((1, 28, 28), 10, width=2)
    assert model.num_fmp_layers == 5 and model.spatial_sizes[-1] == 2  # hence data.pad=4 for the paper's net


def test_adadelta_uses_zeilers_rho(tmp_path):
    """Zeiler 2012 (Sec. 4.1): rho = 0.95, eps = 1e-6 (main at 151a8ea had torch's rho = 0.9)."""
    from hydra.utils import instantiate

    from ablate.build.finetune import pop_backbone_lr_scale
    from tests.conftest import compose_config

    node, _ = pop_backbone_lr_scale(compose_config(["optimizer=adadelta"], tmp_path).optimizer)
    optimizer = instantiate(node)([nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.Adadelta)
    assert optimizer.defaults["rho"] == 0.95 and optimizer.defaults["eps"] == 1e-6 and optimizer.defaults["lr"] == 1.0

"""Transfer learning: model=transfer, fine-tuning strategies, init_from, pretrained weights, class subsets."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ablate.build.init_from import read_source, resolve_checkpoint, source_architecture
from ablate.errors import ConfigError
from ablate.models.backbones import adapt_input_conv
from ablate.models.init import apply_init
from ablate.models.transfer import TransferNet
from ablate.optim import build_scheduler, param_groups, scale_group_lrs
from ablate.runtime.job import train
from ablate.runtime.results import RunRecord
from tests.conftest import compose_config, read_results, run_cli

SMALL_CONVNET = ["model.backbone=convnet", "+model.backbone_args.channels=[8,16]", "+model.backbone_args.hidden=32"]


class Snapshots(L.Callback):
    """The model's tensors (parameters and buffers) at the start and the end of fit, plus the optimizer."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.model = pl_module.model

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.optimizer = trainer.optimizers[0]

    def changed(self, prefix: str) -> dict[str, bool]:
        return {k: not torch.equal(v, self.end[k]) for k, v in self.start.items() if k.startswith(prefix)}


def fit(tmp_path: Path, *overrides: str, name: str = "run", record: bool = False) -> tuple[dict, Snapshots]:
    out = tmp_path / name
    cfg = compose_config([*overrides], out)
    snaps = Snapshots()
    rec = RunRecord(out, OmegaConf.to_container(cfg, resolve=True), list(overrides), seed=0) if record else None
    summary = train(cfg, rec, extra_callbacks=[snaps])
    if rec is not None:
        rec.finish("completed")
    return summary, snaps


def test_head_only_keeps_backbone_weights_and_bn_statistics(tmp_path: Path) -> None:
    _, snaps = fit(tmp_path, "model=transfer", *SMALL_CONVNET, "model.finetune=head")
    backbone, head = snaps.changed("backbone."), snaps.changed("head.")
    assert any(k.endswith("running_mean") for k in backbone)  # BN statistics are among what is compared
    assert not any(backbone.values()), [k for k, v in backbone.items() if v]
    assert all(head.values())
    bns = [m for m in snaps.model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)  # eval mode, although the model was in training mode
    optimized = {id(p) for g in snaps.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in snaps.model.head.parameters()}


def test_last_n_trains_only_the_last_blocks(tmp_path: Path) -> None:
    _, snaps = fit(tmp_path, "model=transfer", *SMALL_CONVNET, "model.finetune=last_n", "model.unfreeze_last=1")
    # convnet's blocks: conv1 (+bn), conv2 (+bn), hidden Linear (classifier.1): only the last one trains
    changed = snaps.changed("backbone.")
    assert all(v for k, v in changed.items() if k.startswith("backbone.classifier.1."))
    assert not any(v for k, v in changed.items() if k.startswith("backbone.features."))
    with pytest.raises(ConfigError, match="unfreeze_last must be in"):
        TransferNet((1, 16, 16), 3, backbone="convnet", finetune="last_n", unfreeze_last=3)


def test_backbone_lr_scale_gives_backbone_groups_scaled_lr() -> None:
    model = TransferNet((1, 16, 16), 4, backbone="mlp", backbone_args={"width": 8})
    optimizer = torch.optim.AdamW(param_groups(model, decay_bias_and_norm=False, backbone_lr_scale=0.1), lr=0.01)
    scale_group_lrs(optimizer)
    backbone = {id(p) for p in model.backbone.parameters()}
    for group in optimizer.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all head
        assert group["lr"] == pytest.approx(0.001 if in_backbone.pop() else 0.01)
    # A schedule in absolute LRs (OneCycleLR's max_lr) keeps the ratio: one max_lr per group, scaled.
    onecycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01)
    build_scheduler(onecycle, optimizer, "step", steps=20, epochs=1)
    for _ in range(7):
        optimizer.step()
    lrs = {round(g["lr"] / g["lr_scale"], 12) for g in optimizer.param_groups}
    assert len(lrs) == 1


def test_staged_unfreezes_at_the_epoch_with_a_lower_lr(tmp_path: Path) -> None:
    overrides = ["model=transfer", *SMALL_CONVNET, "model.finetune=staged", "model.unfreeze_at_epoch=1"]
    with pytest.raises(ConfigError, match="staged adds the backbone's parameter group"):
        fit(tmp_path, *overrides, "trainer.max_epochs=2", name="onecycle")  # the default scheduler=onecycle
    with pytest.raises(ConfigError, match="unfreeze_at_epoch must be in"):
        fit(tmp_path, *overrides, "scheduler=none", "trainer.max_epochs=1", name="never")
    with pytest.raises(ConfigError, match="backbone_lr_scale needs a model with a backbone"):
        fit(tmp_path, "optimizer.backbone_lr_scale=0.1", name="plain")
    summary, snaps = fit(tmp_path, *overrides, "scheduler=none", "trainer.max_epochs=2")
    groups = snaps.optimizer.param_groups
    assert len(groups) == 3  # head (decay, no decay), then the backbone added by BackboneFinetuning
    assert groups[-1]["lr"] == pytest.approx(groups[0]["lr"] * 0.1)  # Lightning's initial ratio at epoch 1
    assert any(snaps.changed("backbone.").values())
    ckpt = torch.load(summary["checkpoint_last"], map_location="cpu", weights_only=True)
    assert any(k.startswith("model.backbone.") for k in ckpt["state_dict"])


def test_init_from_loads_backbone_and_new_head(tmp_path: Path) -> None:
    pre, _ = fit(
        tmp_path,
        "model=convnet",
        "model.channels=[8,16]",
        "model.hidden=32",
        "data.classes=[0,1,2,3,4]",
        name="pre",
        record=True,
    )
    source = torch.load(pre["checkpoint_best"], map_location="cpu", weights_only=True)["state_dict"]
    assert resolve_checkpoint(tmp_path / "pre") == Path(pre["checkpoint_best"])
    # Same architecture taken from the source run (no backbone_args), new classes 5-9, head only.
    _, snaps = fit(
        tmp_path,
        "model=transfer",
        "model.backbone=convnet",
        f"model.init_from={tmp_path / 'pre'}",
        "model.finetune=head",
        "data.classes=[5,6,7,8,9]",
        "data.train_per_class=12",
        name="ft",
        record=True,
    )
    for key, value in snaps.start.items():
        if key.startswith("backbone."):
            assert torch.equal(value, source["model." + key.removeprefix("backbone.")]), key
    assert not torch.equal(snaps.start["head.weight"], source["model.classifier.4.weight"])
    results = read_results(tmp_path / "ft")
    assert results["transfer"]["head"] == "reinitialized" and results["data"]["train"] == 60
    # The fine-tuned run's checkpoint alone rebuilds it (architecture recorded, no source run needed): evaluate.py
    # re-tests it to the same accuracy after the source run is gone.
    from ablate.evaluation.saved_runs import evaluate
    from tests.test_evaluate import _cfg

    shutil.move(tmp_path / "pre", tmp_path / "pre-moved")
    retest = evaluate(_cfg(tmp_path / "eval", f"run={tmp_path / 'ft'}"), tmp_path / "eval")
    assert retest["metrics"]["test/acc"] == pytest.approx(results["metrics"]["test/acc"])
    shutil.move(tmp_path / "pre-moved", tmp_path / "pre")
    # init=... re-initializes only the new head of a model holding loaded weights.
    run = read_source(pre["checkpoint_best"])
    model = TransferNet((1, 28, 28), 5, backbone="convnet", backbone_args=source_architecture(run.config, "convnet"))
    model.load_run_weights(run.state_dict, run.path)
    head_before = model.head.weight.clone()
    assert apply_init(model, "orthogonal") == 1 and not torch.equal(model.head.weight, head_before)
    assert torch.equal(model.backbone.features[0].weight, source["model.features.0.weight"])
    # An incompatible architecture: one line naming the shapes.
    with pytest.raises(ConfigError, match=r"of another shape .*checkpoint \[8, 1, 5, 5\] vs model \[16, 1, 5, 5\]"):
        other = TransferNet((1, 28, 28), 5, backbone="convnet", backbone_args={"channels": [16, 16], "hidden": 32})
        other.load_run_weights(run.state_dict, run.path)
    with pytest.raises(ConfigError, match="missing"):
        TransferNet((1, 28, 28), 5, backbone="mlp").load_run_weights(run.state_dict, str(tmp_path / "pre"))


def test_torchvision_backbone_pretrained_from_cache_and_clear_error_without(tmp_path, monkeypatch) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError) as err:
        TransferNet((1, 32, 32), 3, backbone="mobilenet_v3_small", pretrained=True)
    message = str(err.value)
    assert "\n" not in message and "mobilenet_v3_small-047dcff4.pth" in message and "model.pretrained=false" in message
    # A file in the cache (as a download leaves it) is used: stem adapted to 1 channel, new 3-class head.
    weights = torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(weights, cache / "mobilenet_v3_small-047dcff4.pth")
    model = TransferNet((1, 32, 32), 3, backbone="mobilenet_v3_small", pretrained=True)
    assert torch.equal(model.backbone.features[0][0].weight, weights["features.0.0.weight"].sum(1, keepdim=True))
    assert torch.equal(model.backbone.features[12][0].weight, weights["features.12.0.weight"])
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)


def test_stem_adaptation_matches_repeated_grey_input() -> None:
    conv = nn.Conv2d(3, 4, 3)
    grey = torch.rand(2, 1, 8, 8)
    one = nn.functional.conv2d(grey, adapt_input_conv(conv.weight, 1))
    assert torch.allclose(one, nn.functional.conv2d(grey.expand(-1, 3, -1, -1), conv.weight), atol=1e-5)


def test_class_subset_relabels_and_samples_per_class(make_cfg) -> None:
    from hydra.utils import instantiate

    cfg = make_cfg("data.classes=[7,2,5]", "data.train_per_class=10")
    dm = instantiate(cfg.data)
    dm.prepare()
    assert dm.num_classes == 3 and torch.bincount(dm.y_train).tolist() == [10, 10, 10]
    assert set(dm.y_val.tolist()) == {0, 1, 2} and set(dm.y_test.tolist()) == {0, 1, 2}
    raw = instantiate(make_cfg().data)
    raw.prepare()
    assert (dm.raw.y_test == 0).sum() == (raw.raw.y_test == 7).sum()  # class 7 became label 0
    with pytest.raises(ConfigError, match="not classes of"):
        instantiate(make_cfg("data.classes=[3,10]").data).prepare()


@pytest.mark.slow
def test_cli_pretrained_without_weights_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache, and no way out (also in CI):
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    proc = run_cli(
        [
            "model=transfer",
            "model.backbone=mobilenet_v3_small",
            "model.pretrained=true",
            "data=synthetic",
            "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "pretrained weights" in error_lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.backbone_lr_scale=abc", "optimizer.backbone_lr_scale must be a positive number"),
        ("optimizer.backbone_lr_scale=0", "optimizer.backbone_lr_scale must be a positive number"),
        ("model.unfreeze_last=abc", "model.unfreeze_last must be an integer >= 1"),
        ("model.unfreeze_last=1.5", "model.unfreeze_last must be an integer >= 1"),
        ("model.resize_to=abc", "model.resize_to must be an integer >= 1 or null"),
        ("model.unfreeze_at_epoch=x", "model.unfreeze_at_epoch must be an integer >= 1"),
        ("model.finetune=some", "model.finetune must be one of full, head, last_n, staged"),
    ],
)
def test_transfer_knobs_name_the_key_and_what_it_takes(override, expected, tmp_path):
    """Issue 16 item 15: these gave a traceback (backbone_lr_scale) or "cannot build model ... check `model`"."""
    from ablate.config.rules import validate

    cfg = compose_config(["model=transfer", "model.backbone=mlp", override], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(expected) and "\n" not in message and f"e.g. {override.split('=')[0]}=" in message
    assert err.value.exit_code == 2

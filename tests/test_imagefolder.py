"""data=imagefolder: the user's own images (in memory or streamed), with model=transfer end to end; bad folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from ablate.data.imagefolder import ImageFolderDataModule
from ablate.errors import ConfigError
from ablate.runtime.job import train
from tests.conftest import compose_config, run_cli

CLASSES = ("cat", "dog", "fox")


def write_folder(root: Path, per_class: int = 12, size: tuple[int, int] = (20, 24)) -> Path:
    """Learnable tiny PNGs: each class has its own mean colour."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((*size, 3)) * 80 + c * 80).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def module(root: Path, **kwargs) -> ImageFolderDataModule:
    args = {"root": str(root), "val_size": 6, "batch_size": 8, "num_workers": 0, **kwargs}
    dm = ImageFolderDataModule(**args)
    dm.prepare()
    return dm


def test_transfer_on_imagefolder_end_to_end(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "images")
    overrides = ["model=transfer", "model.backbone=resnet18", "data=imagefolder", f"data.root={root}"]
    overrides += ["data.image_size=32", "data.val_size=6", "data.batch_size=8", "data.num_workers=0"]
    overrides += ["trainer.max_epochs=2"]
    summary = train(compose_config(overrides, tmp_path / "run"))
    assert summary["metrics"]["test/acc"] > 0.5  # 3 well-separated colours; chance is 1/3
    assert summary["epochs"] == 2 and torch.load(summary["checkpoint_last"], weights_only=True)


def test_streaming_serves_the_same_batches_as_memory(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "images")
    memory = module(root, image_size=16)
    stream = module(root, image_size=16, memory_budget_mb=0, num_workers=1)
    assert not memory.streaming and stream.streaming
    assert memory.summary()["class_names"] == list(CLASSES) and stream.summary()["storage"] == "streaming"
    assert torch.allclose(memory.mean, stream.mean) and torch.allclose(memory.std, stream.std)
    for a, b in (
        (memory.train_dataloader(), stream.train_dataloader()),
        (memory.val_dataloader(), stream.val_dataloader()),
    ):
        a.sampler.set_epoch(1)
        b.batch_sampler.sampler.set_epoch(1)
        pairs = list(zip(a, b, strict=True))
        assert pairs and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in pairs)
        assert pairs[0][1][0].dtype == torch.uint8 and pairs[0][1][0].shape[1:] == (3, 16, 16)


def test_streaming_run_trains(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "images", per_class=8)
    overrides = ["model=convnet", "data=imagefolder", f"data.root={root}", "data.memory_budget_mb=0"]
    overrides += ["data.val_size=3", "data.batch_size=8", "data.num_workers=1", "data.channels=1"]
    summary = train(compose_config(overrides, tmp_path / "run"))
    assert np.isfinite(summary["metrics"]["train/loss"]) and summary["metrics"]["test/acc"] >= 0


def test_train_and_test_subfolders(tmp_path: Path) -> None:
    write_folder(tmp_path / "images" / "train", per_class=10)
    write_folder(tmp_path / "images" / "test", per_class=2)
    dm = module(tmp_path / "images")
    assert len(dm.y_test) == 6 and len(dm.y_train) + len(dm.y_val) == 30 and dm.input_shape == (3, 20, 24)
    # no test/ folder: a stratified held-out split that does not depend on the run's seeds
    held_out = module(write_folder(tmp_path / "flat", per_class=10), split_seed=3)
    assert torch.bincount(held_out.y_test).tolist() == [2, 2, 2]


def test_bad_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no class folders"):
        module(tmp_path)
    root = write_folder(tmp_path / "empty_class", per_class=5)
    (root / "zebra").mkdir()
    with pytest.raises(ConfigError, match=r"class folder .*zebra holds no images"):
        module(root)
    root = write_folder(tmp_path / "broken", per_class=5)
    (root / "dog" / "3.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read image .*dog/3\.png"):
        module(root, image_size=16)
    with pytest.raises(ConfigError, match=r"cannot read image .*dog/3\.png"):  # found by a worker while streaming
        dm = module(root, image_size=16, memory_budget_mb=0, num_workers=1)
        list(dm.train_dataloader())
        list(dm.test_dataloader())
    root = write_folder(tmp_path / "mixed", per_class=5)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "fox" / "odd.png")
    with pytest.raises(
        ConfigError, match=r"images differ in size: .* is 24x20, .*odd\.png is 9x9; set data.image_size"
    ):
        module(root)
    assert module(root, image_size=12).input_shape == (3, 12, 12)


@pytest.mark.slow
def test_cli_bad_folder_is_one_line(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "images", per_class=3)
    (root / "zebra").mkdir()
    proc = run_cli(["data=imagefolder", f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith("error: class folder") and "zebra" in proc.stderr.splitlines()[0]


def test_imagefolder_config_composes(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("data=imagefolder", f"data.root={write_folder(tmp_path / 'images', per_class=4)}", "data.val_size=0")
    dm = instantiate(cfg.data)
    dm.prepare()
    assert dm.num_classes == 3 and dm.summary()["storage"] == "memory"


def test_imagefolder_without_root_is_one_line_naming_data_root(tmp_path):
    """Issue 16 item 15: data=imagefolder without data.root was OmegaConf's MissingMandatoryValue traceback."""
    from ablate.config.rules import validate

    with pytest.raises(ConfigError, match=r"^data\.root must be set: it has no default; e\.g\. data\.root=") as err:
        validate(compose_config(["data=imagefolder"], tmp_path))
    assert err.value.exit_code == 2


def test_pad_applies_to_streamed_images_too(tmp_path):
    """data.pad on images decoded lazily (streaming): the same zero border as in memory."""
    root = write_folder(tmp_path / "images", per_class=4, size=(10, 12))
    kwargs = {"root": str(root), "channels": 3, "val_size": 0, "test_size": 0.25, "pad": 2, "num_workers": 0}
    memory = ImageFolderDataModule(**kwargs)
    streamed = ImageFolderDataModule(**kwargs, memory_budget_mb=0)
    assert memory.input_shape == streamed.input_shape == (3, 14, 16)
    assert streamed.streaming and not memory.streaming
    first = streamed.x_train[0]
    assert torch.equal(first, memory.x_train[0])
    assert not first[:, :2].any() and not first[:, :, -2:].any() and first[:, 2:-2, 2:-2].any()

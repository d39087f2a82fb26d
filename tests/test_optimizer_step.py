"""The module's own optimizer step (manual optimization): clipping, accumulation and their order with the rest."""

from __future__ import annotations

import lightning as L
import torch

from ablate.runtime.job import train

PLAIN_SGD = ["model=mlp", "optimizer=sgd", "optimizer.lr=1.0"]


class ParameterRecorder(L.Callback):
    """The flat parameter vector before and after every training batch."""

    def __init__(self) -> None:
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []

    @staticmethod
    def flat(module: L.LightningModule) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in module.model.parameters()])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before.append(self.flat(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(self.flat(pl_module))


def record(make_cfg, *overrides: str, subdir: str = "run", scheduler: str = "none") -> tuple[ParameterRecorder, dict]:
    recorder = ParameterRecorder()
    cfg = make_cfg(*PLAIN_SGD, f"scheduler={scheduler}", *overrides, subdir=subdir)
    summary = train(cfg, extra_callbacks=[recorder])
    return recorder, summary


def test_gradient_clipping_bounds_every_update(make_cfg):
    clip = 0.05
    clipped, _ = record(make_cfg, f"trainer.gradient_clip_val={clip}", "trainer.limit_train_batches=4", subdir="a")
    free, _ = record(make_cfg, "trainer.limit_train_batches=4", subdir="b")
    # Plain SGD with lr=1: the update is the gradient, so its norm is the clipped gradient's norm.
    clipped_norms = [float((a - b).norm()) for a, b in zip(clipped.after, clipped.before, strict=True)]
    free_norms = [float((a - b).norm()) for a, b in zip(free.after, free.before, strict=True)]
    assert len(clipped_norms) == len(free_norms) == 4
    assert all(n <= clip * 1.001 for n in clipped_norms), clipped_norms
    assert all(n > clip * 2 for n in free_norms), free_norms  # so clipping was active, not vacuous


def test_gradient_clipping_by_value(make_cfg):
    clip = 1e-3
    rec, _ = record(
        make_cfg,
        f"trainer.gradient_clip_val={clip}",
        "trainer.gradient_clip_algorithm=value",
        "trainer.limit_train_batches=2",
    )
    assert len(rec.after) == 2
    for after, before in zip(rec.after, rec.before, strict=True):
        assert float((after - before).abs().max()) <= clip * 1.001


def test_accumulating_two_batches_equals_one_twice_as_large(make_cfg):
    # The same 64 images (the shuffle depends only on seed and epoch): as one batch, or as two halves accumulated.
    halves, summary = record(
        make_cfg, "data.batch_size=32", "trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=2", subdir="a"
    )
    whole, _ = record(make_cfg, "data.batch_size=64", "trainer.limit_train_batches=1", subdir="b")
    assert summary["global_step"] == 1
    assert torch.equal(halves.after[0], halves.before[0])  # no step after the first half
    torch.testing.assert_close(halves.after[-1], whole.after[-1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(whole.after[-1], whole.before[0])


def test_accumulation_steps_once_per_window_and_on_the_last_partial_one(make_cfg):
    # 256 training images / batch 32 = 8 batches per epoch; windows of 3 -> 3, 3, 2 -> 3 steps per epoch. One-cycle
    # fails if stepped more often than the run length it was built for, so this also checks that length.
    _, summary = record(
        make_cfg, "trainer.accumulate_grad_batches=3", "trainer.max_epochs=2", "optimizer.lr=0.1", scheduler="onecycle"
    )
    assert summary["global_step"] == 3 * 2


class BackwardHookCounter(ParameterRecorder):
    """Records parameters like ParameterRecorder and counts the backward hooks Lightning dispatches to it."""

    def __init__(self) -> None:
        super().__init__()
        self.before_backward = self.after_backward = 0

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.before_backward += 1

    def on_after_backward(self, trainer, pl_module) -> None:
        self.after_backward += 1


def count_lightning_backward_calls(monkeypatch) -> list[int]:
    from ablate.training.module import ClassifierModule

    calls: list[int] = []
    original = ClassifierModule.manual_backward

    def counting_manual_backward(self, loss, *args, **kwargs):
        calls.append(1)
        return original(self, loss, *args, **kwargs)

    monkeypatch.setattr(ClassifierModule, "manual_backward", counting_manual_backward)
    return calls


def test_backward_shortcut_is_taken_only_where_it_is_exact_and_changes_nothing(make_cfg, monkeypatch):
    lightning_backward_calls = count_lightning_backward_calls(monkeypatch)
    overrides = ["trainer.limit_train_batches=3", "trainer.accumulate_grad_batches=2"]

    # Default run: no callback or module hook listens, one device, 32-bit: plain loss.backward().
    plain, plain_summary = record(make_cfg, *overrides, subdir="plain")
    assert lightning_backward_calls == []

    # A callback that listens to the backward hooks gets every call, through Lightning's manual_backward.
    hooked = BackwardHookCounter()
    cfg = make_cfg(*PLAIN_SGD, "scheduler=none", *overrides, subdir="hooked")
    hooked_summary = train(cfg, extra_callbacks=[hooked])
    assert len(lightning_backward_calls) == hooked.before_backward == hooked.after_backward == 3

    # Both paths give the same gradients, hence the same parameters after every step and the same metrics.
    assert len(plain.after) == len(hooked.after) == 3
    for a, b in zip(plain.after, hooked.after, strict=True):
        assert torch.equal(a, b)
    assert plain_summary["metrics"] == hooked_summary["metrics"]


def test_mixed_precision_keeps_lightnings_backward(make_cfg, monkeypatch):
    lightning_backward_calls = count_lightning_backward_calls(monkeypatch)
    record(make_cfg, "trainer.precision=bf16-mixed", "trainer.limit_train_batches=2")
    assert len(lightning_backward_calls) == 2  # the precision plugin's backward (loss scaling) is not skipped

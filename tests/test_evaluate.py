"""evaluate.py: re-testing saved runs, ensembles of runs and sweeps, test-time averaging, bagging, test-loop metrics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ablate.errors import ConfigError
from ablate.evaluation.member_scores import ensemble_probs
from ablate.evaluation.members import Candidate, collect, rank
from ablate.evaluation.saved_runs import evaluate, write_outputs
from ablate.training.scoring import averaged_log_probs, mc_dropout
from tests.conftest import CONFIG_DIR, compose_config, read_results, run_cli


def _train(run_dir: Path, *overrides: str) -> Path:
    from ablate.runtime.job import main

    main(compose_config(["model=mlp", "model.width=32", "model.depth=1", *overrides], run_dir))
    assert read_results(run_dir)["status"] == "completed"
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two dropout MLPs in a sweep folder (seeds 0, 1), a failed run beside them, and a 4-class run elsewhere."""
    root = tmp_path_factory.mktemp("runs")
    a = _train(root / "sweep" / "0", "reg=dropout", "seed=0")
    b = _train(root / "sweep" / "1", "reg=dropout", "seed=1", "trainer.max_epochs=2")
    failed = root / "sweep" / "2"
    failed.mkdir()
    (failed / "results.json").write_text(json.dumps({"status": "failed", "metrics": {}, "error": "boom"}))
    other = _train(root / "four_classes", "data.synthetic.num_classes=4")
    return {"a": a, "b": b, "sweep": root / "sweep", "other": other}


def _cfg(output_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=[f"paths.output_dir={output_dir}", *overrides])


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


# -- the test loop's metrics (module.on_test_epoch_end) ------------------------------------------------------------
def test_training_reports_torchmetrics_test_metrics_and_per_class_accuracy(runs):
    results = read_results(runs["a"])
    m = results["metrics"]
    for key in ("test/acc", "test/loss", "test/acc_top5", "test/nll", "test/ece"):
        assert key in m
    assert m["test/nll"] == pytest.approx(m["test/loss"], rel=1e-4)  # no label smoothing: NLL = cross-entropy
    per_class = results["metrics_per_class"]["test/acc"]
    assert len(per_class) == 10
    assert min(per_class) <= m["test/acc"] <= max(per_class)
    assert "val/ece" not in m  # validation stays on the lean counters


# -- end to end through evaluate.py -------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluating_one_run_reproduces_its_test_and_leaves_it_untouched(runs, tmp_path):
    before = _hashes(runs["a"])
    out = tmp_path / "eval"
    proc = run_cli([f"runs=[{runs['a']}]", f"hydra.run.dir={out}"], tmp_path, script="evaluate.py")
    assert proc.returncode == 0, proc.stderr
    assert _hashes(runs["a"]) == before  # byte-identical, no file added or removed
    results = json.loads((out / "results.json").read_text())
    member = results["members"][0]
    assert results["metrics"] == member["metrics"]  # one member: the ensemble is the member
    assert results["metrics_per_class"] == member["metrics_per_class"]
    # Re-testing from the checkpoint reproduces the run's own test.
    assert member["metrics"]["test/acc"] == pytest.approx(read_results(runs["a"])["metrics"]["test/acc"], abs=1e-6)
    assert member["weights"] == "best" and member["checkpoint"].startswith(str(runs["a"]))
    assert [p["members"] for p in results["ensemble_size_curve"]] == [1]
    assert "| **ensemble** |" in (out / "results.md").read_text()
    assert (out / "ensemble_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_top_k_picks_by_validation_skips_failed_runs_and_writes_outputs(runs, tmp_path):
    before = {name: _hashes(runs[name]) for name in ("a", "b")}
    out = tmp_path / "eval"
    results = evaluate(_cfg(out, f"sweep={runs['sweep']}", "top_k=1", "metric=val/acc_best"), out)
    write_outputs(results, out)
    vals = {name: read_results(runs[name])["metrics"]["val/acc_best"] for name in ("a", "b")}
    best = max(vals, key=vals.get)  # type: ignore[arg-type]
    assert [m["run_dir"] for m in results["members"]] == [str(runs[best])]
    assert results["selection"]["skipped"] == [{"run_dir": str(runs["sweep"] / "2"), "status": "failed"}]
    assert results["selection"]["candidates"] == 2
    assert {p.name for p in out.iterdir()} == {"results.json", "results.md", "ensemble_curve.png"}
    assert {name: _hashes(runs[name]) for name in ("a", "b")} == before


def test_softmax_averaging_is_the_default_and_differs_from_logit_averaging(runs, tmp_path):
    assert _cfg(tmp_path).ensemble.space == "prob"
    pair = f"runs=[{runs['a']},{runs['b']}]"
    prob = evaluate(_cfg(tmp_path / "p", pair), tmp_path / "p")
    logit = evaluate(_cfg(tmp_path / "l", pair, "ensemble.space=logit"), tmp_path / "l")
    assert prob["ensemble"]["space"] == "prob" and logit["ensemble"]["space"] == "logit"
    assert prob["members"] == logit["members"]
    assert prob["metrics"]["test/nll"] != pytest.approx(logit["metrics"]["test/nll"], rel=1e-6)
    # The same combination rule on known outputs: mean of probabilities vs softmax of mean logits.
    lp = [torch.tensor([[4.0, 0.0]]).log_softmax(1), torch.tensor([[0.0, 1.0]]).log_softmax(1)]
    assert torch.allclose(ensemble_probs(lp, "prob"), (lp[0].exp() + lp[1].exp()) / 2)
    assert torch.allclose(ensemble_probs(lp, "logit"), torch.tensor([[2.0, 0.5]]).softmax(1))


# -- selection and refusals ---------------------------------------------------------------------------------------
def _fake(tmp_path: Path, name: str, val: float, test: float, status: str = "completed") -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True)
    metrics = {"val/acc_best": val, "val/loss": 1 - val, "test/acc": test}
    (run_dir / "results.json").write_text(json.dumps({"status": status, "metrics": metrics}))
    return run_dir


def test_top_k_ranks_by_the_validation_metric_not_by_test(tmp_path):
    # val order: b > c > a; test order: a > c > b.
    for name, val, test in (("a", 0.70, 0.95), ("b", 0.90, 0.50), ("c", 0.80, 0.60)):
        _fake(tmp_path / "sweep", name, val, test)
    _fake(tmp_path / "sweep", "d", 0.99, 0.99, status="diverged")
    candidates, skipped = collect(None, None, str(tmp_path / "sweep"))
    assert [s["status"] for s in skipped] == ["diverged"]
    assert [c.run_dir.name for c in rank(candidates, "val/acc_best", top_k=2)] == ["b", "c"]
    assert [c.run_dir.name for c in rank(candidates, "val/loss", top_k=None)] == ["b", "c", "a"]  # lower is better
    assert len(rank(candidates, "val/acc_best", top_k=10)) == 3  # fewer runs than k: all of them (and a warning)
    with pytest.raises(ConfigError, match="not a validation metric"):
        rank(candidates, "test/acc", top_k=2)
    with pytest.raises(ConfigError, match="status 'diverged'"):
        collect(None, [str(tmp_path / "sweep" / "d")], None)


def test_a_test_metric_for_selection_is_a_one_line_error(runs, tmp_path, capsys):
    from ablate.evaluation.saved_runs import main

    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as exit_info:
        main(_cfg(out, f"sweep={runs['sweep']}", "top_k=2", "metric=test/acc"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: metric=test/acc") and "\n" not in err
    assert not out.exists()


def test_incompatible_members_are_a_one_line_error_naming_both_runs(runs, tmp_path):
    with pytest.raises(ConfigError) as err:
        evaluate(_cfg(tmp_path, f"runs=[{runs['a']},{runs['other']}]"), tmp_path)
    message = str(err.value)
    assert str(runs["a"]) in message and str(runs["other"]) in message and "\n" not in message
    assert "4 classes" in message


def test_checkpoint_choice_follows_the_run_or_the_weights_key(runs):
    from ablate.evaluation.members import checkpoint_for, load_candidate

    candidate = load_candidate(runs["a"])
    assert checkpoint_for(candidate, None)[1] == "best"  # the run's test_weights
    path, which = checkpoint_for(candidate, "last")
    assert which == "last" and path.name == "last.ckpt"
    with pytest.raises(ConfigError, match="weights must be"):
        checkpoint_for(Candidate(runs["a"], candidate.results), "newest")


# -- test-time averaging ------------------------------------------------------------------------------------------
def _dropout_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.5),
        torch.nn.Linear(16, 3),
    )  # fmt: skip
    with torch.no_grad():
        net(torch.randn(32, 1, 3, 4))  # non-trivial BN running statistics
    return net.eval()


def test_mc_dropout_averages_stochastic_passes_with_batch_norm_in_eval_mode():
    net, x = _dropout_net(), torch.randn(8, 1, 3, 4)
    plain = averaged_log_probs(net, x)
    bn_stats = net[2].running_mean.clone()
    with torch.no_grad(), mc_dropout(net) as layers:
        assert layers == [net[3]] and net[3].training and not net[2].training
        torch.manual_seed(1)
        one = averaged_log_probs(net, x, passes=1)
        torch.manual_seed(1)
        many = averaged_log_probs(net, x, passes=5)
        torch.manual_seed(1)
        by_hand = torch.stack([net(x).softmax(1) for _ in range(5)]).mean(0).log()
    assert not net.training and not net[3].training  # mode restored
    assert torch.equal(net[2].running_mean, bn_stats)  # BN statistics untouched
    assert torch.allclose(many, by_hand, atol=1e-6)
    assert not torch.allclose(one, plain) and not torch.allclose(many, plain) and not torch.allclose(one, many)


def test_flip_tta_of_a_mirror_symmetric_input_equals_the_plain_prediction():
    net = _dropout_net()
    x = torch.randn(8, 1, 3, 4)
    symmetric = torch.cat([x[..., :2], x[..., :2].flip(-1)], dim=-1)
    with torch.no_grad():
        assert torch.allclose(averaged_log_probs(net, symmetric, flip=True), averaged_log_probs(net, symmetric))
        assert not torch.allclose(averaged_log_probs(net, x, flip=True), averaged_log_probs(net, x))


def test_evaluate_reports_mc_and_tta_beside_plain_and_refuses_mc_without_dropout(runs, tmp_path):
    results = evaluate(_cfg(tmp_path, f"runs={runs['a']}", "eval.mc_samples=3", "eval.tta=flip"), tmp_path)
    for key in ("test/acc", "test/acc_mc", "test/acc_tta", "test/nll_mc", "test/ece_tta"):
        assert key in results["metrics"]
    assert results["metrics"] == results["members"][0]["metrics"]  # one member: the ensemble is the member
    with pytest.raises(ConfigError, match="needs dropout layers"):
        evaluate(_cfg(tmp_path, f"run={runs['other']}", "eval.mc_samples=2"), tmp_path)


# -- bagging ------------------------------------------------------------------------------------------------------
def test_bootstrap_resample_draws_with_replacement_at_the_split_size():
    from ablate.data import DataModule

    def data(seed: int | None) -> DataModule:
        synthetic = {"num_train": 320, "num_test": 80}
        dm = DataModule(name="synthetic", val_size=64, synthetic=synthetic, bootstrap_seed=seed)
        dm.prepare()
        return dm

    plain, boot, again, other = data(None), data(0), data(0), data(1)
    assert len(boot.y_train) == len(plain.y_train) == 256  # same size as the split
    rows = {tuple(r.flatten().tolist()) for r in boot.x_train}
    assert len(rows) < len(boot.x_train)  # with replacement: some images repeat (~63% unique)
    assert torch.equal(boot.x_train, again.x_train) and not torch.equal(boot.x_train, other.x_train)
    assert torch.equal(boot.x_val, plain.x_val) and torch.equal(boot.x_test, plain.x_test)
    assert boot.summary()["bootstrap_seed"] == 0
    with pytest.raises(ConfigError, match="bootstrap_seed"):
        DataModule(name="synthetic", bootstrap_seed=-1)


def test_help_lists_the_keys(tmp_path):
    proc = run_cli(["--help"], tmp_path, check=True, script="evaluate.py")
    for key in ("run:", "runs:", "sweep:", "top_k:", "metric: val/acc_best", "space: prob", "mc_samples:", "tta:"):
        assert key in proc.stdout, key


# -- bad input: each class one line, exit 2, before any model is loaded ---------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["top_k=abc"], "top_k must be an integer >= 1 or null (how many of the best runs to keep; null keeps all), "
                        "got 'abc'; e.g. top_k=3"),
        (["top_k=1.5"], "top_k must be an integer >= 1 or null"),
        (["top_k=0"], "top_k must be an integer >= 1 or null"),
        (["batch_size=-8"], "batch_size must be an integer >= 1 or null (null: each run's data.eval_batch_size)"),
        (["batch_size=0"], "batch_size must be an integer >= 1 or null"),
        (["eval.mc_samples=abc"], "eval.mc_samples must be an integer >= 0"),
        (["device=gpu"], "device must be auto, cpu, cuda, cuda:<index> or mps, got 'gpu'; e.g. device=cpu"),
        (["device=cuda"], "device=cuda but torch finds no CUDA GPU on this machine; use device=auto or device=cpu"),
        (["runs=[{a},{b},{a}/]"], "runs lists {a}/ twice (as {a}); each run is one ensemble member"),
    ],
)  # fmt: skip
def test_bad_evaluate_keys_are_one_line_errors_before_any_model_loads(overrides, message, runs, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    import ablate.evaluation.saved_runs as evaluation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine "has no GPU", whatever it has
    monkeypatch.setattr(evaluation, "load_member", lambda *a, **k: pytest.fail("a model was loaded"))
    given = [o.format(**runs) for o in overrides]
    source = [] if any(o.startswith("runs=") for o in given) else [f"runs=[{runs['a']},{runs['b']}]"]
    out = tmp_path / "eval"
    out.mkdir()  # as Hydra makes it
    with pytest.raises(SystemExit) as exit_info:
        evaluation.main(_cfg(out, *source, *given))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {err.removeprefix('error: ')}" and "\n" not in err
    assert message.format(**runs) in err
    assert not out.exists()


def test_a_bad_key_is_refused_before_torch_is_imported(tmp_path):
    proc = run_cli(["runs=[x]", "top_k=1.5", f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path, script="evaluate.py")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: top_k must be an integer >= 1")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "eval").exists()


# -- members from a sweep: labels, one setting, ties -----------------------------------------------------------------
def _job(sweep: Path, job: str, overrides: list[str], **metrics: float) -> Path:
    run_dir = sweep / job
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"status": "completed", "overrides": overrides,
                                                      "metrics": metrics}))  # fmt: skip
    return run_dir


def test_members_are_labelled_by_their_overrides_as_typed_and_one_setting_can_be_chosen(tmp_path):
    from ablate.evaluation.members import settings_of, within_setting

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - optimizer.lr=1e-3,1e-2\n"
                                         "    - seed=0,1\n")  # fmt: skip
    for job, (lr, seed) in enumerate([("0.001", 0), ("0.001", 1), ("0.01", 0), ("0.01", 1)]):
        overrides = ["data=digits", f"optimizer.lr={lr}", f"seed={seed}", "paths.log_dir=x"]  # data=: all runs share it
        _job(sweep, str(job), overrides, **{"val/acc_best": 0.5})
    candidates, _ = collect(None, None, str(sweep))
    assert [c.label for c in candidates] == ["optimizer.lr=1e-3 seed=0", "optimizer.lr=1e-3 seed=1",
                                             "optimizer.lr=1e-2 seed=0", "optimizer.lr=1e-2 seed=1"]  # fmt: skip
    assert settings_of(candidates) == {"optimizer.lr=1e-3": 2, "optimizer.lr=1e-2": 2}
    chosen = within_setting(candidates, "optimizer.lr=0.01")  # compared by value, as Hydra reads it
    assert [c.run_dir.name for c in chosen] == ["2", "3"]
    with pytest.raises(ConfigError, match=r"matches no completed run; settings there: optimizer\.lr=1e-2; optimizer"):
        within_setting(candidates, "optimizer.lr=0.1")


def test_a_setting_named_in_part_that_matches_several_is_refused(tmp_path):
    from ablate.evaluation.members import within_setting

    for job, overrides in enumerate([["reg=none", "seed=0"], ["reg=none", "aug=flip"], ["reg=dropout"]]):
        _job(tmp_path / "sweep", str(job), overrides, **{"val/acc_best": 0.5})
    candidates, _ = collect(None, None, str(tmp_path / "sweep"))
    assert [c.run_dir.name for c in within_setting(candidates, "reg=none")] == ["0"]  # the one named in full
    with pytest.raises(ConfigError, match="setting='aug=flip reg=dropout' matches no completed run"):
        within_setting(candidates, "aug=flip reg=dropout")
    _job(tmp_path / "sweep", "3", ["reg=dropout", "aug=flip"], **{"val/acc_best": 0.5})
    candidates, _ = collect(None, None, str(tmp_path / "sweep"))
    with pytest.raises(ConfigError, match=r"setting='aug=flip' matches 2 settings \(reg=dropout aug=flip; reg=none"):
        within_setting(candidates, "aug=flip")


def test_top_k_ties_are_broken_by_lower_val_loss_then_by_job_number(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for job, acc, loss in (("10", 0.9, 0.3), ("2", 0.9, 0.3), ("3", 0.9, 0.2), ("1", 0.8, 0.1), ("4", 0.9, None)):
        _job(sweep, job, [f"seed={job}"], **{"val/acc_best": acc, **({"val/loss": loss} if loss else {})})
    candidates, _ = collect(None, None, str(sweep))
    assert [c.run_dir.name for c in rank(candidates, "val/acc_best", top_k=None)] == ["3", "2", "10", "4", "1"]
    assert [c.run_dir.name for c in rank(list(reversed(candidates)), "val/acc_best", top_k=2)] == ["3", "2"]
    assert "top_k=2 cuts through 4 runs tied at val/acc_best=0.9" in capsys.readouterr().err


def test_a_top_k_from_several_settings_says_so_and_labels_members(runs, tmp_path):
    """Copies of the two trained runs as a sweep of two settings (their checkpoints stay where they are)."""
    sweep = tmp_path / "sweep"
    for job, name, overrides in (("0", "a", ["reg=dropout", "seed=0"]), ("1", "b", ["reg=none", "seed=1"])):
        (sweep / job).mkdir(parents=True)
        results = {**read_results(runs[name]), "overrides": overrides}
        (sweep / job / "results.json").write_text(json.dumps(results))
    mixed = evaluate(_cfg(tmp_path / "e1", f"sweep={sweep}", "top_k=2"), tmp_path / "e1")
    assert sorted(m["label"] for m in mixed["members"]) == ["reg=dropout seed=0", "reg=none seed=1"]
    assert mixed["selection"]["settings"] == {m["setting"]: 1 for m in mixed["members"]}
    (warning,) = mixed["warnings"]
    assert "the 2 members come from 2 settings" in warning and "add 'setting=\"reg=none\"'" in warning
    one = evaluate(_cfg(tmp_path / "e2", f"sweep={sweep}", "setting='reg=none'"), tmp_path / "e2")
    assert [m["label"] for m in one["members"]] == ["reg=none seed=1"] and one["warnings"] == []
    assert one["selection"]["setting"] == "reg=none"


def test_a_sweep_without_runs_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    for sweep in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(ConfigError, match=f"no runs found at {sweep}"):
            collect(None, None, str(sweep))

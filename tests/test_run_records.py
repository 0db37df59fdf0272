"""Runs are records to trust: their own folder, one record across resumes, a best over the whole
run, no figures from untrained or broken weights, and configs that import only what they may."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.__main__ import main
from mnist_lit.cli import make_cli
from mnist_lit.tracking.runs import claim_version
from mnist_lit.training.checkpoint_io import CheckpointError, read_checkpoint
from tests.helpers import REPO, tiny_args

EXACT = ["--trainer.deterministic=true", "--test_after_fit=false"]
SEVERAL_RUNS = pytest.mark.slow  # training runs one after another: seconds each


def scalars(run: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def exit_status(args: list[str], callbacks: list | None = None) -> int:
    """Run the CLI as `mnist-lit` does and return its exit status."""
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores Ctrl-C once it has had one
    try:
        main(args, callbacks)
    except SystemExit as exit_:
        return exit_.code
    finally:
        signal.signal(signal.SIGINT, handler)
    return 0


def test_versions_claimed_together_are_all_different(tmp_path):
    claimed = []
    threads = [
        threading.Thread(target=lambda: claimed.append(claim_version(tmp_path))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(8))


@pytest.mark.slow  # real subprocesses, started together
def test_runs_started_together_in_one_folder_keep_their_own_records(tiny_mnist, workdir):
    rates = ["1e-3", "2e-3", "3e-3", "4e-3"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "mnist_lit", "fit", *tiny_args(tiny_mnist)]
    base += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    runs = [
        subprocess.Popen(
            [*base, f"--model.lr={rate}"], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True
        )
        for rate in rates
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()[-2000:]
    folders = sorted((workdir / "lightning_logs").iterdir())
    assert len(folders) == len(rates)
    seen = []
    for folder in folders:
        lr = yaml.safe_load((folder / "config.yaml").read_text())["model"]["lr"]
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
            "best.ckpt",
            "last.ckpt",
        ]
        for checkpoint in (folder / "checkpoints").iterdir():
            assert read_checkpoint(checkpoint)["hyper_parameters"]["lr"] == lr, checkpoint
        metrics = json.loads((folder / "metrics.json").read_text())
        assert Path(metrics["best_checkpoint"]).parent == (folder / "checkpoints").resolve()
        assert metrics["test_checkpoint"] == metrics["best_checkpoint"]
        seen.append(lr)
    assert sorted(seen) == sorted(float(rate) for rate in rates)


@SEVERAL_RUNS
def test_resumed_run_keeps_the_best_of_the_epochs_before(tiny_mnist, workdir):
    # lr 3e-2 with this seed peaks in epoch 0 and gets worse: the best lies before the resume
    run = ["fit", *tiny_args(tiny_mnist), *EXACT[:1], "--model.lr=3e-2", "--seed_everything=2"]
    main([*run, "--trainer.max_epochs=3"])  # version_0: unbroken
    main([*run, "--trainer.max_epochs=1", "--test_after_fit=false"])  # version_1: stopped
    resumed = main([*run, "--trainer.max_epochs=3", "--ckpt_path=last"])  # continues version_1
    logs = workdir / "lightning_logs"
    unbroken, continued = logs / "version_0", logs / "version_1"
    accuracy = scalars(unbroken, "accuracy/val")
    assert len(accuracy) == 3 and accuracy[0] > max(accuracy[1:])  # the premise
    assert scalars(continued, "accuracy/val") == accuracy
    assert scalars(continued, "accuracy/val_best") == scalars(unbroken, "accuracy/val_best")
    first, second = (
        json.loads((run / "metrics.json").read_text()) for run in (unbroken, continued)
    )
    assert second["best_val/acc"] == first["best_val/acc"] == pytest.approx(accuracy[0])
    assert second["test/acc"] == first["test/acc"]  # the same, best, epoch was tested
    assert torch.load(second["best_checkpoint"], weights_only=True)["epoch"] == 0
    assert resumed.trainer.checkpoint_callback.best_model_score == pytest.approx(accuracy[0])


class StopInValidation(L.Callback):
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1 and not trainer.sanity_checking:
            raise KeyboardInterrupt  # as Ctrl-C would, after epoch 1's training


@SEVERAL_RUNS
def test_stop_in_validation_keeps_the_epoch_before_and_resume_validates(
    tiny_mnist, workdir, capsys
):
    run = ["fit", *tiny_args(tiny_mnist), *EXACT, "--trainer.max_epochs=2"]
    assert exit_status(run, callbacks=[StopInValidation()]) == 130
    folder = workdir / "lightning_logs" / "version_0"
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 8
    assert "Interrupted during validation" in capsys.readouterr().out
    main([*run, "--ckpt_path=last"])
    assert len(scalars(folder, "accuracy/val")) == 2  # epoch 1 was trained again, then validated
    losses = scalars(folder, "loss/train")
    assert len(losses) >= 2 and all(loss == loss for loss in losses)  # no NaN


@SEVERAL_RUNS
def test_max_time_stop_is_saved_where_it_stopped_and_said_so(tiny_mnist, workdir):
    class SlowBatches(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 12:  # 4 steps into epoch 1
                trainer.should_stop = True  # what --trainer.max_time's timer does

    run = ["fit", *tiny_args(tiny_mnist), *EXACT, "--trainer.max_epochs=3"]
    make_cli(run, callbacks=[SlowBatches()])
    folder = workdir / "lightning_logs" / "version_0"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["global_step"], metrics["stopped_mid_epoch"]) == (
        1,
        12,
        True,
    )
    assert torch.load(folder / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 12
    main([*run, "--ckpt_path=last"])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["global_step"], metrics["stopped_mid_epoch"]) == (
        3,
        24,
        False,
    )
    assert metrics["train_images"] == 3 * 256  # the rest of epoch 1 was trained, not skipped


class AllocationFails(L.Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        raise self.error  # what torch raises when a batch does not fit in memory


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: "
                     "not enough memory: you tried to allocate 6553600000 bytes."),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
    ],
    ids=["CPU", "GPU", "Python"],
)  # fmt: skip
def test_running_out_of_memory_is_one_line_that_says_what_to_lower(
    tiny_mnist, workdir, error, capsys
):
    assert exit_status(["fit", *tiny_args(tiny_mnist)], [AllocationFails(error)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and "lower --data.batch_size" in err
    assert "Traceback" not in err


class SigtermInSanityCheck(L.Callback):
    def on_sanity_check_start(self, trainer, pl_module) -> None:
        raise SIGTERMException  # what Lightning raises when SIGTERM arrives


class SignalWhilePredicting(L.Callback):
    def __init__(self, signum: int) -> None:
        self.signum = signum

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        if batch_idx == 1:
            os.kill(os.getpid(), self.signum)  # a real signal, to Lightning's handler or Python's


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_predict_with_its_status_and_writes_nothing(
    tiny_run, tiny_run_copy, signum, status, capsys
):
    data = tiny_run[0].parents[1] / "data"
    checkpoint = tiny_run_copy / "checkpoints" / "best.ckpt"
    args = ["predict", *tiny_args(data), f"--ckpt_path={checkpoint}", "--data.batch_size=16"]
    assert exit_status(args, [SignalWhilePredicting(signum)]) == status
    said = {signal.SIGTERM: "Stopped by SIGTERM", signal.SIGINT: "Stopped by Ctrl-C"}[signum]
    assert said in capsys.readouterr().err
    assert not (tiny_run_copy / "predict" / "predictions.csv").exists()  # nothing half-done


def test_sigterm_before_any_checkpoint_says_there_is_nothing_to_resume(tiny_mnist, workdir, capsys):
    assert exit_status(["fit", *tiny_args(tiny_mnist)], [SigtermInSanityCheck()]) == 143
    printed = capsys.readouterr()
    assert "Interrupted before the first checkpoint: there is nothing to resume" in printed.out
    assert "--ckpt_path last" not in printed.out + printed.err
    assert not list(workdir.rglob("*.ckpt"))


@SEVERAL_RUNS
def test_ckpt_path_last_refuses_another_runs_model(tiny_mnist, workdir, capsys):
    main(["fit", *tiny_args(tiny_mnist), *EXACT, "--trainer.max_epochs=1", "--model.lr=2e-3"])
    resume = ["fit", *tiny_args(tiny_mnist), *EXACT, "--trainer.max_epochs=2", "--ckpt_path=last"]
    assert exit_status([*resume, "--model.lr=5e-3", "--model.hidden=64"]) == 1
    err = capsys.readouterr().err
    assert "was trained with other model settings" in err
    assert "--model.lr 0.005 (the checkpoint's is 0.002)" in err and "--model.hidden 64" in err
    main(resume)  # the run's own settings, or none given: it continues
    last = workdir / "lightning_logs/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 16


@SEVERAL_RUNS
@pytest.mark.parametrize(
    ("place", "checkpoints"),
    [
        (["--checkpoint.dirpath=mine"], "mine"),
        (["--trainer.logger=false", "--trainer.default_root_dir=root"], "root/checkpoints"),
    ],
    ids=["checkpoint dirpath", "no logger"],
)
def test_ckpt_path_last_is_found_where_the_checkpoints_go(tiny_mnist, workdir, place, checkpoints):
    run = ["fit", *tiny_args(tiny_mnist), *EXACT, *place]
    main([*run, "--trainer.max_epochs=1"])
    main([*run, "--trainer.max_epochs=2", "--ckpt_path=last"])
    last = torch.load(workdir / checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] == 16  # resumed, not started over


@SEVERAL_RUNS
def test_default_root_dir_holds_the_whole_run(tiny_mnist, workdir):
    main(["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=1", "--trainer.default_root_dir=r"])
    assert sorted(p.name for p in workdir.iterdir()) == ["data", "r"]
    run = workdir / "r" / "lightning_logs" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]) == (run / "checkpoints" / "best.ckpt").resolve()


@SEVERAL_RUNS
@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_needs_a_checkpoint_unless_asked_for_untrained(
    tiny_mnist, workdir, subcommand, capsys
):
    assert exit_status([subcommand, *tiny_args(tiny_mnist)]) == 2
    assert "error: no --ckpt_path" in capsys.readouterr().err
    main([subcommand, *tiny_args(tiny_mnist), "--untrained=true"])


@SEVERAL_RUNS
def test_test_ckpt_path_last_is_the_newest_runs(tiny_mnist, workdir):
    quick = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--test_after_fit=false"]
    main(["fit", *tiny_args(tiny_mnist), *quick])
    tested = main(["test", *tiny_args(tiny_mnist), "--ckpt_path=last"])
    last = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert Path(tested.trainer.ckpt_path).resolve() == last.resolve()


def test_non_finite_weights_are_refused_naming_the_tensor(tiny_run, workdir, capsys):
    checkpoint = torch.load(tiny_run[0] / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["state_dict"]["model.fc2.bias"][3] = float("nan")
    torch.save(checkpoint, workdir / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"non-finite weights \(model.fc2.bias"):
        read_checkpoint(workdir / "nan.ckpt")
    data = tiny_run[0].parents[1] / "data"
    assert exit_status(["test", *tiny_args(data), "--ckpt_path=nan.ckpt"]) == 1
    assert exit_status(["export", "--ckpt_path=nan.ckpt"]) == 1
    assert capsys.readouterr().err.count("non-finite weights") == 2
    assert not (workdir / "model.onnx").exists()


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("--model.hidden=0", "error: --model.hidden 0: must be a positive width"),
        ("--model.channels=[8,0,8]", "error: --model.channels [8, 0, 8]"),
        ("--model.dropout=1.5", "error: --model.dropout 1.5: must be in [0, 1)"),
        ("--model.lr=-1", "error: --model.lr -1.0: must be a finite positive number"),
        ("--model.lr=nan", 'error: Parser key "model.lr"'),  # jsonargparse's own check
        ("--data.batch_size=0", "error: --data.batch_size 0: must be at least 1"),
        ("--data.num_workers=-1", "error: --data.num_workers -1"),
        ("--data.augment_degrees=-5", "error: --data.augment_degrees -5.0"),
    ],
)
def test_arguments_that_cannot_work_are_one_line_naming_the_flag(
    tiny_mnist, workdir, flag, named, capsys
):
    assert exit_status(["fit", *tiny_args(tiny_mnist), flag]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (workdir / "lightning_logs").exists()  # refused before anything ran


MARKER_MODULE = """
import pathlib
import lightning

pathlib.Path({marker!r}).touch()


class Marker(lightning.Callback):
    pass
"""


@pytest.fixture
def marker_module(tmp_path, monkeypatch, request):
    """A module that leaves a file behind when imported: what a config must never import."""
    name = f"marker_{request.node.name.split('[')[-1].strip(']').replace(' ', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_a_config_cannot_import_outside_the_allowlist(tiny_mnist, workdir, marker_module, capsys):
    name, marker = marker_module
    config = workdir / "shared.yaml"
    config.write_text(f"trainer:\n  callbacks:\n    - class_path: {name}.Marker\n")
    assert exit_status(["fit", "--config", str(config), *tiny_args(tiny_mnist)]) == 2
    err = capsys.readouterr().err
    assert f"Importing '{name}.Marker' is not allowed" in err and "MNIST_LIT_ALLOW_IMPORTS" in err
    assert not marker.exists()


def test_an_environment_variable_cannot_import_outside_the_allowlist(
    tiny_mnist, workdir, marker_module, monkeypatch
):
    name, marker = marker_module
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")
    monkeypatch.setenv("PL_FIT__TRAINER__LOGGER", json.dumps({"class_path": f"{name}.Marker"}))
    assert exit_status(["fit", *tiny_args(tiny_mnist)]) == 2
    assert not marker.exists()


def test_more_imports_are_allowed_by_name(tiny_mnist, workdir, marker_module, monkeypatch):
    name, marker = marker_module
    monkeypatch.setenv("MNIST_LIT_ALLOW_IMPORTS", name)
    config = workdir / "mine.yaml"
    config.write_text(f"trainer:\n  callbacks:\n    - class_path: {name}.Marker\n")
    assert (
        exit_status(["fit", "--config", str(config), *tiny_args(tiny_mnist), "--print_config"]) == 0
    )
    assert marker.exists()  # the allowlist, not a broken config, kept it out above

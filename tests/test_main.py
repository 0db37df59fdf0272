"""`mnist-lit` itself: bad arguments, out of memory and signals end as one line with an exit
status a scheduler understands, and configs import only what they may."""

import json
import os
import signal
import sys

import lightning as L
import pytest
import torch

from tests.helpers import (
    exit_status,
    tiny_args,
)


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
        ("--seed_everything=-1", "error: --seed_everything -1: a seed is from 0 to 4294967295"),
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

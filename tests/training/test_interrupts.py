"""Ctrl-C stops training even when Python loses the KeyboardInterrupt it raised."""

import os
import signal
import time

import lightning as L
import pytest

from mnist_lit.training import checkpoint_io
from tests.helpers import exit_status, tiny_args


class SwallowedCtrlC:
    """Ctrl-C arriving while the garbage collector runs a `__del__`: Python prints the
    KeyboardInterrupt as "Exception ignored" and carries on."""

    raised = False

    def __del__(self) -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs here, inside __del__
        except KeyboardInterrupt:
            SwallowedCtrlC.raised = True
            raise  # printed as "Exception ignored", and lost


class CtrlCInGarbageCollection(L.Callback):
    def __init__(self) -> None:
        self.steps_after = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 3:
            SwallowedCtrlC()  # collected at once: its __del__ gets the signal
        elif trainer.global_step > 3:
            self.steps_after += 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_lost_in_garbage_collection_still_stops_training(tiny_mnist, workdir, capsys):
    late = CtrlCInGarbageCollection()
    args = ["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=3", "--test_after_fit=false"]
    # Python's own Ctrl-C, as `mnist-lit` has it (servers started by other tests set theirs)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert exit_status(args, [late]) == 130
    finally:
        signal.signal(signal.SIGINT, before)
    assert late.steps_after == 0  # stopped at the end of the very step it came in
    assert SwallowedCtrlC.raised  # the premise: KeyboardInterrupt was raised, and lost
    assert "Interrupted at step 4" in capsys.readouterr().out  # last.ckpt holds that step


class CtrlCWhileWriting:
    """A checkpoint file whose first write after step 3 gets Ctrl-C: the handler runs inside
    torch's zip writer. Raised there, the KeyboardInterrupt cuts the write short (and when it
    lands inside torch's own file position bookkeeping, it comes out as a failed write: exit 1,
    "could not write checkpoint ... unexpected pos", seen once in CI)."""

    armed = False

    def __init__(self, path, mode):
        self.file = open(path, mode)  # noqa: SIM115 (closed through __exit__)

    def write(self, data):
        written = self.file.write(data)
        if CtrlCWhileWriting.armed:
            CtrlCWhileWriting.armed = False
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before this returns
        return written

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


class ArmAfterStep3(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        CtrlCWhileWriting.armed = trainer.global_step == 3 or CtrlCWhileWriting.armed


def test_a_ctrl_c_during_a_checkpoint_write_stops_after_it(
    tiny_mnist, workdir, monkeypatch, capsys
):
    monkeypatch.setattr(checkpoint_io, "open", CtrlCWhileWriting, raising=False)
    args = ["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=3", "--test_after_fit=false"]
    args += ["--checkpoint.every_n_train_steps=4"]  # a checkpoint written at step 4
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert exit_status(args, [ArmAfterStep3()]) == 130
    finally:
        signal.signal(signal.SIGINT, before)
    out, err = capsys.readouterr()
    assert "could not write checkpoint" not in err
    assert "Interrupted at step 5" in out  # step 4's write finished; the next step stopped

"""Ctrl-C stops a run every time. Python raises KeyboardInterrupt in whatever code runs when the
signal arrives; inside a weakref callback or a `__del__` (the garbage collector runs them between
any two steps) it is printed as "Exception ignored" and lost, and training would go on; inside
torch's writer of a checkpoint it would come out as a failed write."""

import signal
import threading
from types import FrameType

import lightning as L

from mnist_lit.training.checkpoint_io import WRITING


class CtrlCStops(L.Callback):
    """Records SIGINT as it raises KeyboardInterrupt, and raises it again at the next batch's end
    if it was lost. A SIGINT that the process ignores (a shell's background job) stays ignored."""

    def __init__(self) -> None:
        self.received = False
        self.previous = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.received = False
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self.interrupt)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.previous is not None and signal.getsignal(signal.SIGINT) == self.interrupt:
            signal.signal(signal.SIGINT, self.previous)
        self.previous = None

    def interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if not WRITING.is_set():  # else at the next batch's end, the checkpoint whole
            raise KeyboardInterrupt

    def raise_if_lost(self, *args) -> None:
        if self.received:
            raise KeyboardInterrupt

    on_train_batch_end = on_validation_batch_end = raise_if_lost
    on_test_batch_end = on_predict_batch_end = raise_if_lost

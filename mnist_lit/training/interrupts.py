"""Ctrl-C stops a run every time, and SIGTERM stops every process of a DDP run at one step.

Ctrl-C: Python raises KeyboardInterrupt in whatever code runs when the signal arrives; inside a
weakref callback or a `__del__` (the garbage collector runs them between any two steps) it is
printed as "Exception ignored" and lost, and training would go on; inside torch's writer of a
checkpoint it would come out as a failed write."""

import signal
import threading
from types import FrameType

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

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


class SigtermStopsTogether(L.Callback):
    """Under DDP, every process stops on SIGTERM at the same batch's end. Lightning's own handler
    starts a broadcast inside the signal handler, wherever each process happens to be, and each
    process then stops on its own flag: processes that get the signal a step apart (srun and
    torchrun signal each of them) stop a step apart, and wait for each other until gloo's
    30-minute timeout. Here the handler only records the signal; at each batch's end the
    processes add up what they recorded, and where one has, all hand it to Lightning's handler
    there together, which stops them the way it stops one process."""

    def __init__(self) -> None:
        self.received = False
        self.lightning_handler = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.received = False
        self.lightning_handler = None

    def hold(self, trainer: L.Trainer, *args) -> None:
        """Replace Lightning's SIGTERM handler, registered when a run starts (and put back by
        Lightning at its end), with one that records."""
        if trainer.world_size == 1 or self.lightning_handler is not None:
            return
        if threading.current_thread() is threading.main_thread():
            lightning = signal.getsignal(signal.SIGTERM)
            if callable(lightning):
                self.lightning_handler = lightning
                signal.signal(signal.SIGTERM, self.record)

    def record(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def stop_if_any(self, trainer: L.Trainer, *args) -> None:
        if self.lightning_handler is None or trainer.received_sigterm:
            return
        if trainer.strategy.reduce_boolean_decision(self.received, all=False):
            self.lightning_handler(signal.SIGTERM, None)  # in every process, at this batch

    def stop_after_evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluation gives every image to one process, so the processes may run different
        numbers of batches: they agree once its loop is over, not at each batch."""
        self.stop_if_any(trainer)
        if trainer.received_sigterm and trainer.state.fn != TrainerFn.FITTING:
            raise SIGTERMException  # a validate or test command stops as it does alone

    on_sanity_check_start = on_train_start = on_validation_start = on_test_start = hold
    on_train_batch_end = stop_if_any
    on_validation_end = on_test_end = stop_after_evaluation

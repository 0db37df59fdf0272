"""One seed's fit as a sweep runs it: its own process, stopped as a preempted run is (SIGTERM)
whichever signal stops the sweep, the sweep's own handlers restored after it."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from mnist_lit.sweeps.trial import run_fit

# stands in for a fit: says it is ready once it handles SIGTERM, records the signal it gets
FIT = """
import pathlib, signal, sys, time
got = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda signum, frame: (got.write_text(str(signum)), sys.exit(143)))
got.with_suffix(".ready").touch()
time.sleep(120)
"""


class Storage:
    def record_heartbeat(self, trial_id: int) -> None:
        pass


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_to_the_sweep_stops_its_fit_as_a_preempted_run(stop, tmp_path):
    got = tmp_path / "got.txt"
    before = signal.getsignal(stop)

    def stop_the_sweep_once_both_listen() -> None:
        deadline = time.monotonic() + 60
        while not got.with_suffix(".ready").exists() or signal.getsignal(stop) is before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(os.getpid(), stop)

    threading.Thread(target=stop_the_sweep_once_both_listen, daemon=True).start()
    outcome = run_fit([sys.executable, "-c", FIT, str(got)], tmp_path / "seed_1", Storage(), 0)
    assert outcome.signal == stop and outcome.result is None and outcome.error is None
    assert got.read_text() == str(int(signal.SIGTERM))  # Lightning saves last.ckpt on SIGTERM
    assert signal.getsignal(stop) is before
    log = Path(tmp_path / "seed_1" / "fit.log").read_text()
    assert log.startswith(f"$ {sys.executable} -c")  # the command, for the record

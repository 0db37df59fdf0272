"""Interrupted runs continue exactly; same seeds give the same run; divergence stops cleanly."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.__main__ import main
from mnist_lit.module import MNISTClassifier
from mnist_lit.training.checkpointing import FiniteLossGuard, NonFiniteLossError
from tests.helpers import REPO, tiny_args

EXACT = ["--trainer.deterministic=true", "--seed_everything=11", "--trainer.log_every_n_steps=1"]


def fit(data, *extra: str) -> None:
    main(["fit", *tiny_args(data), *EXACT, "--test_after_fit=false", *extra])


def step_losses(run) -> dict[int, float]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("loss/train_step")}


def assert_same_training_state(a, b) -> None:
    first, second = (torch.load(p, weights_only=True) for p in (a, b))
    assert first["global_step"] == second["global_step"]
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name
    moments = [s["optimizer_states"][0]["state"] for s in (first, second)]
    for index, state in moments[0].items():
        for key, value in state.items():
            assert torch.equal(value, moments[1][index][key]), (index, key)


@pytest.mark.slow  # a real subprocess
def test_resume_in_a_new_process_continues_exactly(tiny_mnist, workdir):
    fit(tiny_mnist, "--trainer.max_epochs=2")  # version_0: straight through
    fit(tiny_mnist, "--trainer.max_epochs=1")  # version_1: stopped after one epoch
    stopped = workdir / "lightning_logs/version_1/checkpoints/last.ckpt"
    command = [sys.executable, "-m", "mnist_lit", "fit", *tiny_args(tiny_mnist), *EXACT]
    command += ["--test_after_fit=false", "--trainer.max_epochs=2", f"--ckpt_path={stopped}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    logs = workdir / "lightning_logs"
    assert sorted(p.name for p in logs.iterdir()) == ["version_0", "version_1"]  # in its folder
    assert_same_training_state(
        logs / "version_0/checkpoints/last.ckpt", logs / "version_1/checkpoints/last.ckpt"
    )
    straight, resumed = step_losses(logs / "version_0"), step_losses(logs / "version_1")
    assert len(straight) == 16 and resumed == straight  # both epochs, one record


def test_same_seed_same_run(tiny_mnist, workdir):
    fit(tiny_mnist, "--trainer.max_epochs=1")
    fit(tiny_mnist, "--trainer.max_epochs=1")
    logs = workdir / "lightning_logs"
    assert_same_training_state(
        logs / "version_0/checkpoints/last.ckpt", logs / "version_1/checkpoints/last.ckpt"
    )
    losses = step_losses(logs / "version_0")
    assert len(losses) == 8 and losses == step_losses(logs / "version_1")  # every step logged


def test_diverging_run_stops_naming_the_step(tiny_mnist, workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        fit(tiny_mnist, "--trainer.max_epochs=3", "--model.lr=1e6")
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert re.search(r"error: training loss became NaN or infinite at step \d+ \(epoch 0", err)
    for checkpoint in workdir.rglob("*.ckpt"):
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values()), checkpoint


def test_broken_weights_are_never_saved(tmp_path):
    model = MNISTClassifier()
    guard = FiniteLossGuard()
    guard.on_save_checkpoint(SimpleNamespace(global_step=3), model, {})  # finite: no complaint
    with torch.no_grad():
        model.model.fc2.bias[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="weights are not finite at step 3"):
        guard.on_save_checkpoint(SimpleNamespace(global_step=3), model, {})


def test_ckpt_path_last_resumes_the_newest_run_in_its_own_folder(tiny_mnist, workdir):
    fit(tiny_mnist, "--trainer.max_epochs=1")
    fit(tiny_mnist, "--trainer.max_epochs=2", "--ckpt_path=last")
    logs = workdir / "lightning_logs"
    assert [p.name for p in logs.iterdir()] == ["version_0"]
    last = torch.load(logs / "version_0/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 8
    summary = json.loads((logs / "version_0/metrics.json").read_text())
    assert summary["train_images"] == 2 * 256  # both epochs: the record covers the whole run
    assert summary["epochs"] == 2


def test_ckpt_path_last_without_a_run_says_so(tiny_mnist, workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        fit(tiny_mnist, "--trainer.max_epochs=1", "--ckpt_path=last")
    assert exit_.value.code == 1
    assert (
        "--ckpt_path last: no lightning_logs/version_*/checkpoints/last.ckpt"
        in capsys.readouterr().err
    )
    assert not (workdir / "lightning_logs").exists()  # nothing started


@pytest.mark.slow  # a real subprocess
@pytest.mark.parametrize(("sent", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_last_checkpoint_and_resume_continues(tiny_mnist, tmp_path, sent, status):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mnist_lit", "fit", *tiny_args(tiny_mnist)]
    command += ["--data.batch_size=8", "--test_after_fit=false", "--trainer.max_epochs=1000"]
    training = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell without job control starts background jobs with SIGINT ignored, and Python
        # then never raises KeyboardInterrupt: give the child the default a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and time.monotonic() < deadline:  # a first epoch is done
            time.sleep(0.2)
        time.sleep(1.0)  # now inside a later epoch
        training.send_signal(sent)
        stdout, stderr = training.communicate(timeout=120)
    finally:
        training.kill()  # never leave a 1000-epoch run behind
    assert training.returncode == status, stderr[-2000:]
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    reported = re.search(r"Interrupted at step (\d+)", stdout)
    if reported:  # stopped in training: saved at that very step
        assert int(reported.group(1)) == stopped_at >= 32
    else:  # stopped in an epoch's validation: the epoch before it is kept, to be repeated
        assert "Interrupted during validation" in stdout, stdout[-2000:]
        assert stopped_at % 32 == 0 and stopped_at >= 32
    resume = [*command[:-1], f"--trainer.max_epochs={stopped_at // 32 + 2}", "--ckpt_path=last"]
    done = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(last, weights_only=True)["global_step"] > stopped_at  # in its own folder


def test_non_finite_loss_is_read_back_late_but_named_exactly():
    guard = FiniteLossGuard(check_every=5)
    losses = [1.0] * 6 + [float("nan")] * 4  # steps 1-6 finite, step 7 on broken
    with pytest.raises(NonFiniteLossError, match="at step 7 "):
        for step, loss in enumerate(losses, start=1):
            trainer = SimpleNamespace(global_step=step, current_epoch=0)
            guard.on_train_batch_end(trainer, None, torch.tensor(loss), None, step - 1)
    assert step == 10  # read back once per 5 steps, not at every step

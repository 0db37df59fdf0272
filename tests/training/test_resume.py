"""Interrupted runs continue exactly; same seeds give the same run; divergence stops cleanly."""

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.__main__ import main
from mnist_lit.module import MNISTClassifier
from mnist_lit.training.checkpointing import FiniteLossGuard, NonFiniteLossError
from tests.helpers import (
    DETERMINISTIC,
    NO_TEST,
    REPO,
    SEVERAL_RUNS,
    exit_status,
    module_command,
    module_env,
    run_module,
    tiny_args,
)

EXACT = [DETERMINISTIC, "--seed_everything=11", "--trainer.log_every_n_steps=1"]


def fit(data, *extra: str) -> None:
    main(["fit", *tiny_args(data), *EXACT, NO_TEST, *extra])


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
    args = ["fit", *tiny_args(tiny_mnist), *EXACT, NO_TEST, "--trainer.max_epochs=2"]
    done = run_module([*args, f"--ckpt_path={stopped}"], cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    logs = workdir / "lightning_logs"
    assert sorted(p.name for p in logs.iterdir()) == ["version_0", "version_1"]  # in its folder
    assert_same_training_state(
        logs / "version_0/checkpoints/last.ckpt", logs / "version_1/checkpoints/last.ckpt"
    )
    straight, resumed = step_losses(logs / "version_0"), step_losses(logs / "version_1")
    assert len(straight) == 16 and resumed == straight  # both epochs, one record


@SEVERAL_RUNS
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


@SEVERAL_RUNS
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
    command = module_command("fit", *tiny_args(tiny_mnist))
    command += ["--data.batch_size=8", NO_TEST, "--trainer.max_epochs=1000"]
    training = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=module_env(),
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
    resume = [*command[3:-1], f"--trainer.max_epochs={stopped_at // 32 + 2}", "--ckpt_path=last"]
    done = run_module(resume, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(last, weights_only=True)["global_step"] > stopped_at  # in its own folder
    assert json.loads((last.parents[1] / "metrics.json").read_text())["resumes"] == 1


def test_non_finite_loss_is_read_back_late_but_named_exactly():
    guard = FiniteLossGuard(check_every=5)
    losses = [1.0] * 6 + [float("nan")] * 4  # steps 1-6 finite, step 7 on broken
    with pytest.raises(NonFiniteLossError, match="at step 7 "):
        for step, loss in enumerate(losses, start=1):
            trainer = SimpleNamespace(global_step=step, current_epoch=0)
            guard.on_train_batch_end(trainer, None, torch.tensor(loss), None, step - 1)
    assert step == 10  # read back once per 5 steps, not at every step


@SEVERAL_RUNS
def test_ckpt_path_last_refuses_another_runs_model(tiny_mnist, workdir, capsys):
    main(
        [
            "fit",
            *tiny_args(tiny_mnist),
            DETERMINISTIC,
            NO_TEST,
            "--trainer.max_epochs=1",
            "--model.lr=2e-3",
        ]
    )
    resume = [
        "fit",
        *tiny_args(tiny_mnist),
        DETERMINISTIC,
        NO_TEST,
        "--trainer.max_epochs=2",
        "--ckpt_path=last",
    ]
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
    run = ["fit", *tiny_args(tiny_mnist), DETERMINISTIC, NO_TEST, *place]
    main([*run, "--trainer.max_epochs=1"])
    main([*run, "--trainer.max_epochs=2", "--ckpt_path=last"])
    last = torch.load(workdir / checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] == 16  # resumed, not started over


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


@SEVERAL_RUNS
def test_a_run_of_an_earlier_version_resumes_from_its_config(tiny_mnist, workdir):
    """config.yaml and checkpoints written before the package had its wings name the logger
    `mnist_lit.runs.RunLogger` and keep metrics.json's counts under `RunSummary`."""
    fit(tiny_mnist, "--trainer.max_epochs=1")
    run = workdir / "lightning_logs" / "version_0"
    config = run / "config.yaml"
    text = config.read_text()
    assert "class_path: mnist_lit.tracking.runs.RunLogger" in text
    config.write_text(text.replace("mnist_lit.tracking.runs.RunLogger", "mnist_lit.runs.RunLogger"))
    last = run / "checkpoints" / "last.ckpt"
    assert "RunSummary" in torch.load(last, weights_only=True)["callbacks"]
    first = json.loads((run / "metrics.json").read_text())
    main(["fit", f"--config={config}", "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # on in its folder
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["epochs"] == 2 and resumed["train_images"] == 2 * first["train_images"]


@SEVERAL_RUNS
def test_model_settings_given_at_their_defaults_are_compared_too(tiny_mnist, workdir, capsys):
    """A flag or config file that sets a model setting to its default value is compared with
    the checkpoint's: fit refuses to resume with it; evaluations say they do not use it."""
    fit(tiny_mnist, "--trainer.max_epochs=1", "--model.hidden=64")
    resume = ["fit", *tiny_args(tiny_mnist), *EXACT, NO_TEST, "--trainer.max_epochs=2"]
    assert exit_status([*resume, "--model.hidden=625", "--ckpt_path=last"]) == 1  # the default
    assert "--model.hidden 625 (the checkpoint's is 64)" in capsys.readouterr().err
    base = str(REPO / "configs" / "base.yaml")  # states hidden: 625
    assert exit_status(["fit", f"--config={base}", *resume[1:], "--ckpt_path=last"]) == 1
    assert "--model.hidden 625 (the checkpoint's is 64)" in capsys.readouterr().err
    for subcommand in ("validate", "test", "predict"):  # the checkpoint's model, said so
        args = [subcommand, *tiny_args(tiny_mnist), "--model.hidden", "625", "--ckpt_path=last"]
        assert exit_status(args) == 0
        said = "with the model settings it was trained with; not used: --model.hidden 625"
        assert said in capsys.readouterr().err
    assert (
        exit_status(["test", *tiny_args(tiny_mnist), "--model.hidden=64", "--ckpt_path=last"]) == 0
    )
    assert "not used" not in capsys.readouterr().err
    assert exit_status([*resume, "--ckpt_path=last"]) == 0  # no flag: the checkpoint's model
    last = torch.load(workdir / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["hidden"] == 64 and last["epoch"] == 1


@SEVERAL_RUNS
def test_a_one_cycle_run_resumed_for_more_epochs_is_one_line(tiny_mnist, workdir, capsys):
    fit(tiny_mnist, "--trainer.max_epochs=1", "--model.schedule=one_cycle")
    last = workdir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    resume = ["fit", *tiny_args(tiny_mnist), "--model.schedule=one_cycle", "--ckpt_path=last"]
    assert exit_status([*resume, "--trainer.max_epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "one-cycle schedule was planned for 8 steps and this run takes 16" in err, err
    assert "Traceback" not in err and last.read_bytes() == before  # the run as it was

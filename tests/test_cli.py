import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.datasets import MNIST

from mnist_lit.__main__ import main
from mnist_lit.cli import make_cli
from tests.helpers import REPO, exit_status, module_env, read_csv, tiny_args, write_mnist

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def run_dir(root: Path, version: int) -> Path:
    return root / "lightning_logs" / f"version_{version}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_and_round_trips(config, workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    (workdir / "printed.yaml").write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", "printed.yaml", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)


def test_help_documents_arguments_from_docstrings(workdir, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Adam learning rate" in help_text
    assert "Training images held out for validation" in help_text
    assert "--test_after_fit" in help_text


def test_help_lists_every_subcommand_and_each_its_own_flags(workdir, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for subcommand in ("fit", "validate", "test", "predict", "report", "export", "sweep"):
        assert f"    {subcommand} " in listed, subcommand
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    predict_help = capsys.readouterr().out
    assert "--predictions_file" in predict_help and "--test_after_fit" not in predict_help
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "--output" in capsys.readouterr().out


def test_fit_tests_best_checkpoint_and_writes_metrics(tiny_run):
    run, _ = tiny_run  # 3 epochs of 256 images at batch 16
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]) == (run / "checkpoints" / "best.ckpt").resolve()
    assert metrics["test_checkpoint"] == metrics["best_checkpoint"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 * 256 // 16  # the end of training, even without a new best
    assert metrics["train_images"] == 3 * 256
    assert metrics["train_seconds"] > 0 and metrics["train_images_per_second"] > 0
    assert metrics["epochs"] == 3
    # the fake digits are easy: well above chance (0.1) after 3 short epochs
    assert metrics["val/acc_best"] > 0.5 and metrics["test/acc"] > 0.5
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["batch_size"] == 16 and config["trainer"]["max_epochs"] == 3


def test_test_after_fit_can_be_switched_off(tiny_mnist, workdir, capsys):
    main(["fit", *tiny_args(tiny_mnist), "--trainer.max_epochs=1", "--test_after_fit=false"])
    metrics = json.loads((run_dir(workdir, 0) / "metrics.json").read_text())
    assert "val/acc_best" in metrics and "test/acc" not in metrics
    # fit ends by saying where its results are and how to see them
    printed = capsys.readouterr().out
    files = "config.yaml, hparams.yaml, metrics.json, TensorBoard events"
    assert f"Run: lightning_logs/version_0/ ({files})" in printed
    best = "lightning_logs/version_0/checkpoints/best.ckpt"
    assert f"Best checkpoint: {best} (val/acc {metrics['val/acc_best']:.4f})" in printed
    curves = "tensorboard --logdir lightning_logs, then http://localhost:6006/#custom_scalars\n"
    assert f"Curves: {curves}" in printed


def test_another_logger_is_named_by_its_files_and_no_tensorboard_is_offered(
    tiny_mnist, workdir, capsys
):
    csv_logger = [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir=.",
    ]
    quick = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--test_after_fit=false"]
    main(["fit", *tiny_args(tiny_mnist), *quick, *csv_logger])
    printed = capsys.readouterr().out
    files = "config.yaml, hparams.yaml, metrics.csv, metrics.json"
    assert f"Run: lightning_logs/version_0/ ({files})" in printed
    assert "tensorboard" not in printed.lower() and "report" not in printed


def test_validate_test_predict_from_a_checkpoint(tiny_run, tiny_run_copy, workdir, capsys):
    run = tiny_run_copy
    ckpt = str(run / "checkpoints" / "best.ckpt")
    tiny_mnist = tiny_run[0].parents[1] / "data"

    validate = main(["validate", *tiny_args(tiny_mnist), f"--ckpt_path={ckpt}"])
    assert 0 <= validate.trainer.callback_metrics["val/acc"] <= 1

    main(["test", *tiny_args(tiny_mnist), f"--ckpt_path={ckpt}"])
    test_metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert test_metrics["test_checkpoint"] == str(Path(ckpt).resolve())
    printed = capsys.readouterr().out
    files = "config.yaml, hparams.yaml, metrics.json, TensorBoard events"
    assert f"Results: lightning_logs/version_0/test/ ({files})" in printed

    main(["predict", *tiny_args(tiny_mnist), f"--ckpt_path={ckpt}"])
    # each evaluation wrote into the run it evaluated, none posing as a run of its own
    assert [p.name for p in (workdir / "lightning_logs").iterdir()] == ["version_0"]
    rows = read_csv(run / "predict" / "predictions.csv")
    expected = [f"t10k-images-idx3-ubyte[{i}]" for i in range(100)]
    assert [row["path"] for row in rows] == expected  # every test image, once, in order
    assert not any(row["error"] for row in rows)
    probs = torch.tensor([[float(row[f"p{k}"]) for k in range(10)] for row in rows])
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(100), atol=1e-5, rtol=0)
    labels = torch.tensor([int(row["label"]) for row in rows])
    assert torch.equal(labels, probs.argmax(dim=1))
    # predict and test agree: the accuracy of the written labels is the test figure
    from torchvision.datasets import MNIST

    targets = MNIST(str(tiny_mnist), train=False).targets
    accuracy = (labels == targets).float().mean().item()
    assert accuracy == pytest.approx(test_metrics["test/acc"], abs=1e-6)


def test_tta_results_go_beside_the_plain_test(tiny_run, tiny_run_copy, capsys):
    run = tiny_run_copy
    ckpt = f"--ckpt_path={run / 'checkpoints' / 'best.ckpt'}"
    tiny_mnist = tiny_run[0].parents[1] / "data"
    plain = main(["test", *tiny_args(tiny_mnist), ckpt]).trainer.callback_metrics["test/acc"]
    tested = main(["test", *tiny_args(tiny_mnist), ckpt, "--tta=true"])
    assert tested.model.test_time_augmentation
    assert "Results: lightning_logs/version_0/test_tta/" in capsys.readouterr().out
    tta = json.loads((run / "test_tta" / "metrics.json").read_text())
    assert 0 <= tta["test/acc"] <= 1
    # the plain figure is the one `test` wrote, untouched by the augmented evaluation
    assert json.loads((run / "test" / "metrics.json").read_text())["test/acc"] == float(plain)


def test_the_optimizer_is_the_models_alone(workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--optimizer=SGD"])
    assert exit_.value.code == 2 and "--optimizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--lr_scheduler" not in capsys.readouterr().out


def test_commands_on_a_runs_checkpoint_read_the_data_the_run_recorded(
    tiny_run, tiny_run_copy, workdir, capsys, caplog
):
    quiet = ["--trainer.enable_progress_bar=false", "--data.verify_checksums=false"]
    best = f"--ckpt_path={tiny_run_copy / 'checkpoints' / 'best.ckpt'}"
    with caplog.at_level("INFO"):
        tested = main(["test", *quiet, best])  # no --data.data_dir: there is no ./data here
    assert not [r for r in caplog.records if "Seed set" in r.getMessage()]  # nothing to seed
    assert tested.datamodule.hparams.data_dir == str(tiny_run[0].parents[1] / "data")
    assert tested.datamodule.hparams.val_size == 64  # the run's split: the same validation images
    assert tested.trainer.callback_metrics["test/images"] == 100  # every test image of the run's
    with pytest.raises(SystemExit):  # given now: the flag wins
        main(["test", *quiet, best, "--data.data_dir=elsewhere", "--data.download=false"])
    assert "elsewhere" in capsys.readouterr().err


def test_a_users_defaults_file_sits_below_every_config_and_flag(tmp_path, monkeypatch, capsys):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("data:\n  data_dir: /my/mnist\n  batch_size: 256\n")
    monkeypatch.setenv("MNIST_LIT_DEFAULTS", str(defaults))
    for command in ("fit", "validate", "test", "predict"):
        with pytest.raises(SystemExit):
            main([command, f"--config={REPO / 'configs' / 'fast.yaml'}", "--print_config"])
        data = yaml.safe_load(capsys.readouterr().out)["data"]
        assert data["data_dir"] == "/my/mnist" and data["batch_size"] == 64  # fast.yaml's


def test_checkpointing_off_trains_and_tests_without_checkpoints(tiny_mnist, workdir):
    quick = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    main(["fit", *tiny_args(tiny_mnist), *quick, "--trainer.enable_checkpointing=false"])
    run = run_dir(workdir, 0)
    assert not (run / "checkpoints").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_checkpoint"] is None and metrics["epochs"] == 1
    assert 0 <= metrics["test/acc"] <= 1  # the final weights, tested


def test_fast_dev_run_writes_nothing(tiny_mnist, workdir):
    main(["fit", *tiny_args(tiny_mnist), "--trainer.fast_dev_run=true"])
    assert sorted(p.name for p in workdir.iterdir()) == ["data"]  # no checkpoint, no metrics


def test_the_debug_overlay_runs_one_batch_of_each_and_writes_nothing(tiny_mnist, workdir):
    configs = [f"--config={REPO / 'configs' / name}" for name in ("base.yaml", "debug.yaml")]
    cli = main(["fit", *configs, *tiny_args(tiny_mnist)])
    assert cli.trainer.fast_dev_run == 1 and cli.trainer._detect_anomaly
    assert cli.trainer.global_step == 1
    assert sorted(p.name for p in workdir.iterdir()) == ["data"]


def test_a_failed_first_fit_leaves_nothing_and_the_next_is_version_0(workdir, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # offline, refused at once
    assert exit_status(["fit", "--data.data_dir=data", "--trainer.max_epochs=1"]) == 1
    assert list(workdir.iterdir()) == []  # no empty lightning_logs/version_0, no data/MNIST/raw
    quick = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--test_after_fit=false"]
    fitted = main(["fit", *tiny_args(write_mnist(workdir / "data")), *quick])
    assert Path(fitted.trainer.log_dir).resolve() == workdir / "lightning_logs" / "version_0"


def test_missing_data_is_one_clear_error(workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--data.data_dir=absent", "--data.download=false"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST files train-images-idx3-ubyte")
    assert "Traceback" not in err


@pytest.mark.slow  # a real subprocess
def test_python_dash_m_runs_in_a_subprocess_and_says_what_matters(tiny_mnist, tmp_path):
    command = [sys.executable, "-m", "mnist_lit", "fit", *tiny_args(tiny_mnist)]
    command += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    command += ["--trainer.enable_model_summary=true", "--trainer.precision=bf16-mixed"]
    command += ["--trainer.enable_progress_bar=true"]
    done = subprocess.run(command, cwd=tmp_path, env=module_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir(tmp_path, 0) / "metrics.json").read_text())
    assert metrics["train_images"] == 2 * 32
    assert 0 <= metrics["test/acc"] <= 1
    console = done.stdout + done.stderr
    for noise in ("Tip:", "TPU available", "No seed found", "not supported by the model summary",
                  "weights_only", "| train_acc", "| MulticlassAccuracy", "v_num"):  # fmt: skip
        assert noise not in console
    assert "| model.layer1 | Sequential" in console  # the network's summary
    assert "Epoch 0/0" in console  # the progress bar
    assert "Seed set to 0" in console
    assert "smaller than the logging interval" in console  # a real problem is still said


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["fit", "--model.nonsense=1"], "nonsense"),
        (["fit", "--data.batch_size=many"], "batch_size"),
        (["fitt"], "fitt"),
        (["fit", "--config=missing.yaml"], "missing.yaml"),
        (["fit", "--trainer.max_epochs=-5"], "max_epochs"),
        (["fit", "--trainer.max_epochs=0"], "max_epochs 0 trains nothing"),
        (["fit", "--trainer.accelerator=mps"], "MPSAccelerator"),  # no Apple GPU on Linux
    ],
    ids=[
        "unknown key",
        "wrong type",
        "unknown subcommand",
        "missing config file",
        "negative epochs",
        "zero epochs",
        "absent accelerator",
    ],  # fmt: skip
)
def test_bad_configuration_is_exit_2_naming_it(args, named, workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err
    assert "usage:" not in err  # the error, not pages of usage text
    assert not (workdir / "lightning_logs").exists()


@pytest.fixture(scope="module")
def parser(tmp_path_factory):
    return make_cli(["--data.data_dir", str(tmp_path_factory.mktemp("unused"))], run=False).parser


folder_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), min_size=1
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    model=st.fixed_dictionaries(
        {
            "channels": st.lists(st.integers(1, 256), min_size=3, max_size=3),
            "hidden": st.integers(1, 4096),
            "dropout": st.floats(0.0, 0.99),
            "lr": st.floats(1e-8, 10.0),
            "schedule": st.sampled_from(["constant", "one_cycle"]),
            "channels_last": st.booleans(),
        }
    ),
    data=st.fixed_dictionaries(
        {
            "data_dir": folder_names,
            "batch_size": st.integers(1, 65536),
            "augment_degrees": st.floats(0.0, 180.0),
            "predict_path": st.one_of(st.none(), folder_names, st.lists(folder_names, max_size=3)),
        }
    ),
    max_epochs=st.integers(1, 10_000),
)
def test_configs_survive_dump_and_parse(parser, model, data, max_epochs):
    config = parser.parse_object(
        {"model": model, "data": data, "trainer": {"max_epochs": max_epochs}}
    )
    again = parser.parse_string(parser.dump(config))
    assert again.model == config.model
    assert again.data == config.data
    assert again.trainer.max_epochs == max_epochs

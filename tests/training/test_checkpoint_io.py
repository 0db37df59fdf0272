"""Checkpoints from elsewhere: never run their code, and say clearly what is wrong with them."""

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from mnist_lit.__main__ import main
from mnist_lit.training.checkpoint_io import CheckpointError, load_classifier, read_checkpoint
from tests.helpers import tiny_args


class WritesMarker:
    """Unpickling this calls Path.touch: the payload of a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def checkpoint(tiny_run):
    return tiny_run[0] / "checkpoints" / "best.ckpt"


def test_pickle_payload_is_refused_and_never_runs(tmp_path, checkpoint, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    crafted = torch.load(checkpoint, weights_only=True)
    crafted["hyper_parameters"]["payload"] = WritesMarker(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(crafted, evil)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(evil)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["test", "--data.data_dir=x", f"--ckpt_path={evil}"])
    assert exit_.value.code == 1 and "refused" in capsys.readouterr().err
    assert not marker.exists()
    pickle.loads(pickle.dumps(WritesMarker(marker)))  # the payload is real: plain pickle runs it
    assert marker.exists()


def test_damaged_missing_and_foreign_checkpoints(tmp_path, checkpoint):
    whole = checkpoint.read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "random.ckpt").write_bytes(bytes(range(256)) * 40)
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, tmp_path / "other.ckpt")
    foreign = torch.load(checkpoint, weights_only=True)
    foreign["hyper_parameters"]["class_path"] = "os.system"
    torch.save(foreign, tmp_path / "class_path.ckpt")
    cases = {
        "missing.ckpt": "does not exist",
        "truncated.ckpt": "not a readable checkpoint",
        "random.ckpt": "not a readable checkpoint",
        "other.ckpt": "different model",
        "class_path.ckpt": r"different model \(unknown settings \['class_path'\]\)",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(tmp_path / name)


def test_checkpoints_whose_weights_do_not_fit_or_that_are_not_files(tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    variants = {
        "extra_key.ckpt": (lambda s: s["state_dict"].update(extra=torch.zeros(1)), "extra"),
        "settings_differ.ckpt": (
            lambda s: s["hyper_parameters"].update(hidden=64),
            "do not match its settings \\(model.fc1.bias, model.fc1.weight, model.fc2.weight",
        ),
        "bad_setting.ckpt": (lambda s: s["hyper_parameters"].update(dropout=1.5), "cannot build"),
    }
    for name, (change, message) in variants.items():
        changed = torch.load(checkpoint, weights_only=True)
        change(changed)
        torch.save(changed, tmp_path / name)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(tmp_path / name)
    state["hyper_parameters"] = None  # no settings: the defaults, which these weights fit
    torch.save(state, tmp_path / "no_settings.ckpt")
    read_checkpoint(tmp_path / "no_settings.ckpt")
    assert load_classifier(tmp_path / "no_settings.ckpt").hparams.hidden == 625  # the default
    os.mkfifo(tmp_path / "pipe.ckpt")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_checkpoint(tmp_path / "pipe.ckpt")


def test_an_archive_declaring_more_than_it_holds_is_refused_unread(tmp_path):
    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (200 << 20))  # 200 MiB of zeros
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="declares 200 MiB of contents"):
        read_checkpoint(bomb)


@pytest.mark.parametrize(
    ("subcommand", "name"),
    [("fit", "best"), ("test", "hpc"), ("predict", "registry"), ("test", "Registry:mnist:v2")],
)
def test_lightnings_other_checkpoint_names_are_refused(
    tiny_mnist, workdir, subcommand, name, capsys
):
    with pytest.raises(SystemExit) as exit_:
        main([subcommand, *tiny_args(tiny_mnist), f"--ckpt_path={name}"])
    assert exit_.value.code == 2
    assert (
        f"error: --ckpt_path {name}: {subcommand} takes a checkpoint file"
        in capsys.readouterr().err
    )


def test_a_checkpoint_file_named_like_lightnings_other_names_is_read(tiny_run, workdir):
    for name in ("registry-copy.ckpt",):  # starts like Lightning's name, is a file
        shutil.copy(tiny_run[0] / "checkpoints" / "best.ckpt", workdir / name)
        data = tiny_run[0].parents[1] / "data"
        tested = main(["test", *tiny_args(data), f"--ckpt_path={name}"]).trainer
        assert tested.ckpt_path == name and "test/acc" in tested.callback_metrics


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, tiny_mnist, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 100)
    with pytest.raises(SystemExit) as exit_:
        main(["predict", *tiny_args(tiny_mnist), "--ckpt_path=junk.ckpt"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: junk.ckpt is not a readable checkpoint") and "Traceback" not in err
    )


def test_load_classifier_rebuilds_the_trained_model(checkpoint):
    model = load_classifier(checkpoint)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.model.fc2.weight, state["model.fc2.weight"])
    assert not model.training

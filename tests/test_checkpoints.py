"""Checkpoints from elsewhere: never run their code, and say clearly what is wrong with them."""

import pickle
from pathlib import Path

import pytest
import torch

from mnist_lit.checkpoints import CheckpointError, load_classifier, read_checkpoint
from mnist_lit.cli import main
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

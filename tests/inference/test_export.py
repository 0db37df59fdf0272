"""The exported network, run by onnxruntime and torch.export, agrees with PyTorch."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torchvision.datasets import MNIST

from mnist_lit.__main__ import main
from mnist_lit.data import normalize
from mnist_lit.inference.reader import checkpoint_file
from mnist_lit.training.checkpoint_io import load_classifier


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    folder, _ = tiny_run
    checkpoint = folder / "checkpoints" / "best.ckpt"
    output = tmp_path_factory.mktemp("export") / "model.onnx"
    assert main(["export", f"--ckpt_path={checkpoint}", f"--output={output}"]) == output
    digits = normalize(MNIST(str(folder.parents[1] / "data"), train=False).data[:7])
    with torch.no_grad():
        expected = load_classifier(checkpoint)(digits)
    return folder, checkpoint, output, digits, expected


def test_onnx_matches_pytorch_at_any_batch_size(exported):
    _, _, output, digits, expected = exported
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    for batch in (digits, digits[:1]):
        (logits,) = session.run(["logits"], {"images": batch.numpy()})
        reference = expected[: len(batch)].numpy()
        assert logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 1e-4
        assert np.array_equal(logits.argmax(1), reference.argmax(1))


def test_sidecar_has_preprocessing_and_the_runs_test_accuracy(exported):
    folder, checkpoint, output, *_ = exported
    sidecar = json.loads(output.with_suffix(".json").read_text())
    assert sidecar["preprocessing"]["mean"] == 0.1307 and sidecar["preprocessing"]["std"] == 0.3081
    assert sidecar["input"]["shape"] == ["batch", 1, 28, 28]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert sidecar["test_acc"] == metrics["test/acc"]
    assert sidecar["checkpoint"] == str(checkpoint.resolve())


def test_torch_export_program_matches(exported, tmp_path):
    _, checkpoint, _, digits, expected = exported
    output = tmp_path / "model.pt2"
    main(["export", f"--ckpt_path={checkpoint}", "--format=torch", f"--output={output}"])
    program = torch.export.load(output).module()
    torch.testing.assert_close(program(digits[:3]), expected[:3])


def test_existing_output_needs_overwrite(exported, capsys):
    _, checkpoint, output, *_ = exported
    with pytest.raises(SystemExit) as exit_:
        main(["export", f"--ckpt_path={checkpoint}", f"--output={output}"])
    assert exit_.value.code == 1 and "exists; pass --overwrite true" in capsys.readouterr().err
    main(["export", f"--ckpt_path={checkpoint}", f"--output={output}", "--overwrite=true"])


def test_the_json_beside_the_model_is_never_overwritten_or_the_model(exported, tmp_path, capsys):
    checkpoint = exported[1]
    notes = tmp_path / "notes.json"
    notes.write_text("my notes\n")
    for output in (notes, tmp_path / "notes.pt2"):  # the model itself, or its JSON, is notes.json
        with pytest.raises(SystemExit) as exit_:
            main(["export", f"--ckpt_path={checkpoint}", f"--output={output}"])
        assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "choose a name that does not end in .json" in err
    assert f"{notes} exists; pass --overwrite" in err
    assert notes.read_text() == "my notes\n" and not (tmp_path / "notes.pt2").exists()


def test_export_creates_the_output_folder_or_says_why_it_cannot(exported, tmp_path, capsys):
    checkpoint = exported[1]
    output = tmp_path / "new" / "deeper" / "model.pt2"
    main(["export", f"--ckpt_path={checkpoint}", "--format=torch", f"--output={output}"])
    assert output.is_file() and output.with_suffix(".json").is_file()
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["export", f"--ckpt_path={checkpoint}", f"--output={tmp_path}/afile/model.onnx"])
    error = capsys.readouterr().err
    assert exit_.value.code == 1 and "afile is a file. Choose another with --output" in error


def test_a_damaged_metrics_file_beside_the_checkpoint_leaves_the_accuracy_unknown(
    exported, tmp_path
):
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(exported[1], checkpoint)
    (tmp_path / "run" / "metrics.json").write_text("{not json")
    output = tmp_path / "out" / "model.onnx"
    main(["export", f"--ckpt_path={checkpoint}", f"--output={output}"])
    assert json.loads(output.with_suffix(".json").read_text())["test_acc"] is None


def test_best_last_and_a_run_folder_name_a_checkpoint_as_elsewhere(tiny_run_copy, workdir, capsys):
    checkpoints = tiny_run_copy.resolve() / "checkpoints"
    main(["export", "--ckpt_path=best", "--format=torch"])  # the newest run's best.ckpt
    sidecar = json.loads((workdir / "model.json").read_text())
    assert sidecar["checkpoint"] == str(checkpoints / "best.ckpt")
    runs = Path("lightning_logs")  # as export resolves --ckpt_path, like demo and DigitReader
    assert checkpoint_file("last", runs).resolve() == checkpoints / "last.ckpt"
    assert checkpoint_file(str(tiny_run_copy), runs).resolve() == checkpoints / "best.ckpt"
    shutil.rmtree(workdir / "lightning_logs")  # no runs: `best` names what it looked for
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--ckpt_path=best", "--output=other.onnx"])
    assert exit_.value.code == 1
    assert "no lightning_logs/version_*/checkpoints/best.ckpt was found" in capsys.readouterr().err

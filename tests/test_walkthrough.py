"""A newcomer's first hour on the real MNIST, word for word: a first `fit` that fails offline, the
data folder said once (docs/install.md's defaults file), then the README's quick start and the
commands of docs/using-a-model.md and docs/sweeps.md as written, in order, and the Python
examples on the model they trained. Each command is taken from its page, never retyped here.

Not run here, and where they are: `fit --config configs/base.yaml` (11 minutes of training; its
flags are parsed in test_documented_commands.py), `tensorboard` (tracking/test_tensorboard.py),
`demo` (inference/test_demo.py), the full sweeps (their recipe runs on tiny data in
sweeps/test_command.py)."""

import csv
import json
import re
import subprocess

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import MNIST

from mnist_lit.__main__ import main
from tests.helpers import REAL_DATA, REPO
from tests.test_documented_commands import documented_commands
from tests.test_readme import python_blocks, scan_like_seven

pytestmark = [
    pytest.mark.slow,  # an epoch of MNIST, its test, a dry-run sweep of 9 fits: 2-3 minutes
    pytest.mark.skipif(
        not (REAL_DATA / "MNIST" / "raw").is_dir(), reason=f"no MNIST at {REAL_DATA}"
    ),
]

# (page, command) in the order a newcomer meets them
WALK = [
    ("README.md", "fit --config configs/fast.yaml"),
    ("README.md", "report lightning_logs"),
    ("README.md", "predict --ckpt_path best --data.predict_path my_digit.png"),
    ("README.md", "test --ckpt_path best"),
    ("README.md", "test --ckpt_path RUN/checkpoints/last.ckpt"),
    ("using-a-model.md", "predict --ckpt_path best --data.predict_path my_digits/"),
    ("using-a-model.md", "export --ckpt_path best --format onnx --output model.onnx"),
    (
        "sweeps.md",
        "sweep configs/sweeps/seeds.yaml --data.data_dir ../shared/data "
        "--config configs/dry_run.yaml --name seeds_dry",
    ),
]


def defaults_file_line() -> str:
    """docs/install.md's one line that writes the defaults file."""
    text = (REPO / "docs" / "install.md").read_text()
    [line] = [line for line in text.splitlines() if "defaults.yaml" in line and "printf" in line]
    return line


def run(command: str, capsys) -> str:
    """`python -m mnist_lit COMMAND` in this process; what it printed."""
    try:
        main(command.split())
    except SystemExit as exit_:
        pytest.fail(f"`{command}` exited with {exit_.code}: {capsys.readouterr().err[-2000:]}")
    return capsys.readouterr().out


def test_the_first_hour_word_for_word(tmp_path, monkeypatch, capsys):
    documented = {(page, " ".join(arguments)) for page, arguments in documented_commands()}
    assert set(WALK) <= documented, set(WALK) - documented  # the pages still say these

    project = tmp_path / "project"  # a clone, with MNIST beside it as the README has it
    project.mkdir()
    (project / "configs").symlink_to(REPO / "configs")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(REAL_DATA)
    scan_like_seven().save(project / "my_digit.png")
    (project / "my_digits").mkdir()
    test_set = MNIST(str(REAL_DATA), train=False)
    for index in range(10):
        Image.fromarray(test_set.data[index].numpy()).save(project / "my_digits" / f"{index}.png")
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MNIST_LIT_DEFAULTS")  # the user's own defaults file, as documented

    # offline, with no data folder said: fails in one line and leaves nothing
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(SystemExit) as failed:
        main(WALK[0][1].split())
    assert failed.value.code == 1
    assert "no network?" in capsys.readouterr().err
    assert sorted(path.name for path in project.iterdir()) == [
        "configs",
        "my_digit.png",
        "my_digits",
    ]

    # the data folder said once, for every later command
    subprocess.run(["bash", "-c", defaults_file_line()], check=True)

    printed = run(WALK[0][1], capsys)  # fit
    folder = re.search(r"^Run: (\S+)/ \(", printed, re.M).group(1)
    assert folder.endswith("lightning_logs/version_0")  # the failed start took no number
    metrics = json.loads((project / folder / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.985 and metrics["train_images"] == 55_000

    assert run(WALK[1][1], capsys) == f"Wrote {folder}/report.png\n"
    run(WALK[2][1], capsys)  # predict my_digit.png
    [seven] = read_rows(project / folder / "predict" / "predictions.csv")
    assert seven["label"] == "7"
    for _, command in WALK[3:5]:  # test best, test RUN/.../last.ckpt
        printed = run(command.replace("RUN", folder), capsys)
        assert f"Results: {folder}/test" in printed, printed[-2000:]
    run(WALK[5][1], capsys)  # predict my_digits/: a second file beside the first
    rows = read_rows(project / folder / "predict" / "predictions_2.csv")
    assert [row["label"] for row in rows] == [str(int(y)) for y in test_set.targets[:10]]
    run(WALK[6][1], capsys)  # export
    assert json.loads((project / "model.json").read_text())["test_acc"] == metrics["test/acc"]

    expected = np.array([float(seven[f"p{k}"]) for k in range(10)])
    for block in python_blocks():  # DigitReader("best"), then onnxruntime on model.onnx
        namespace: dict = {}
        exec(compile(block, "docs", "exec"), namespace)
        np.testing.assert_allclose(namespace["probs"], expected, atol=1e-5)
        assert capsys.readouterr().out == f"7 ({float(seven['confidence']):.1%})\n"

    printed = run(WALK[7][1], capsys)  # the dry run of the Results sweep
    summary = project / "sweeps" / "seeds_dry" / "summary.csv"
    assert summary.is_file(), printed[-2000:]
    assert [row["seeds"] for row in read_rows(summary)] == ["3"] * 3  # base, fast, best
    assert sorted(path.name for path in (project / "lightning_logs").iterdir()) == ["version_0"]


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))

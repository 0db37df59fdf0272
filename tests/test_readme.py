"""The Python examples of the README and the docs pages run as written and agree with predict."""

import csv
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_lit.__main__ import main
from mnist_lit.images import load_digit
from mnist_lit.mnist import MEAN, STD
from tests.helpers import REPO, tiny_args, write_mnist

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def python_blocks(training: bool = False) -> list[str]:
    """The examples that read digits (each ends with `probs`), or those that train."""
    pages = "".join(page.read_text() for page in PAGES)
    blocks = re.findall(r"```python\n(.*?)```", pages, flags=re.S)
    return [block for block in blocks if ("probs" not in block) == training]


@pytest.mark.slow  # an epoch of 100 steps validating 5,000 images, then the rate finder's 100
def test_the_training_examples_train_test_and_find_a_rate(workdir, monkeypatch):
    # 5,000 of them validate, as in MNIST; 6,400 train: the rate finder's 100 steps in one epoch
    write_mnist(workdir / "data", train_count=11_400)
    monkeypatch.setattr("mnist_lit.data.verify_checksums", lambda data_dir: None)  # not MNIST's
    blocks = python_blocks(training=True)
    assert len(blocks) == 2
    namespace: dict = {}
    exec(compile(blocks[0], "docs", "exec"), namespace)
    (results,) = namespace["results"]
    assert 0.5 < results["test/acc"] <= 1  # fake digits, easy after one epoch
    exec(compile(blocks[1], "docs", "exec"), namespace)
    assert 1e-8 < namespace["finder"].suggestion() < 1


def scan_like_seven() -> Image.Image:
    """A handwritten-looking 7 in dark ink on light paper, off the page's centre."""
    page = Image.new("L", (130, 110), 235)
    pen = ImageDraw.Draw(page)
    pen.line([(38, 22), (96, 20), (70, 60), (58, 96)], fill=30, width=9, joint="curve")
    pen.line([(62, 58), (88, 56)], fill=30, width=6)
    return page


def test_the_python_examples_predict_like_the_cli(tiny_run, tiny_run_copy, workdir, capsys):
    blocks = python_blocks()
    assert len(blocks) == 2  # with this package; onnxruntime alone
    data = tiny_run[0].parents[1] / "data"
    scan_like_seven().save(workdir / "my_digit.png")
    checkpoint = tiny_run_copy / "checkpoints" / "best.ckpt"
    main(["export", f"--ckpt_path={checkpoint}", "--output=model.onnx"])
    predict = ["predict", *tiny_args(data), f"--ckpt_path={checkpoint}"]
    main([*predict, "--data.predict_path=my_digit.png"])
    with (tiny_run_copy / "predict" / "predictions.csv").open() as file:
        (row,) = csv.DictReader(file)
    expected = np.array([float(row[f"p{k}"]) for k in range(10)])
    package_input = (load_digit(workdir / "my_digit.png") / 255 - MEAN) / STD
    capsys.readouterr()
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "docs", "exec"), namespace)
        probs = np.asarray(namespace["probs"], dtype=np.float64)
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        if "x" in namespace:  # without this package: its own copy of the preprocessing
            np.testing.assert_allclose(namespace["x"][0, 0], package_input, atol=1e-6)
        assert capsys.readouterr().out == f"{row['label']} ({float(row['confidence']):.1%})\n"

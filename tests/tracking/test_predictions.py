"""`predict` on a user's image files, through the CLI, with good and bad files mixed."""

import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.datasets import MNIST

from mnist_lit.__main__ import main
from mnist_lit.tracking.predictions import csv_rows, write_atomically
from tests.helpers import read_csv, tiny_args


@pytest.fixture
def checkpoint_and_data(tiny_run, tiny_run_copy):
    return tiny_run_copy / "checkpoints" / "best.ckpt", tiny_run[0].parents[1] / "data"


def predict(checkpoint, data, *extra: str) -> None:
    main(["predict", *tiny_args(data), f"--ckpt_path={checkpoint}", *extra])


def test_folder_of_images_with_bad_files(checkpoint_and_data, tmp_path):
    checkpoint, data = checkpoint_and_data
    digits = MNIST(str(data), train=False).data[:5].numpy()
    inputs = tmp_path / "my_digits"
    (inputs / "more").mkdir(parents=True)
    for index, digit in enumerate(digits):
        Image.fromarray(digit).save(inputs / ("more" if index > 2 else ".") / f"d{index}.png")
    good = (inputs / "d0.png").read_bytes()
    (inputs / "broken.png").write_bytes(good[: len(good) // 2])
    (inputs / "not_an_image.png").write_text("hello")
    Image.new("RGB", (40, 40), "white").save(inputs / "blank.jpg")

    predict(checkpoint, data, f"--data.predict_path={inputs}", "--predictions_file=out.csv")
    rows = read_csv(tmp_path / "out.csv")
    names = [row["path"].removeprefix(str(inputs) + "/") for row in rows]
    assert names == [
        "blank.jpg", "broken.png", "d0.png", "d1.png", "d2.png", "more/d3.png", "more/d4.png",
        "not_an_image.png",
    ]  # fmt: skip
    failed = {name: row["error"] for name, row in zip(names, rows) if row["error"]}
    assert set(failed) == {"blank.jpg", "broken.png", "not_an_image.png"}
    assert "blank" in failed["blank.jpg"] and "truncated" in failed["broken.png"]
    assert all(row["label"] == "" for row in rows if row["error"])

    # the same digits predicted from the test set itself: identical labels and probabilities
    predict(checkpoint, data, "--predictions_file=test_set.csv")
    reference = read_csv(tmp_path / "test_set.csv")[:5]
    ours = [
        row for name, row in zip(names, rows) if name.endswith(tuple(f"d{i}.png" for i in range(5)))
    ]
    for mine, theirs in zip(ours, reference):
        assert mine["label"] == theirs["label"]
        probs = [float(mine[f"p{k}"]) for k in range(10)]
        assert probs == pytest.approx([float(theirs[f"p{k}"]) for k in range(10)], abs=1e-6)
        assert sum(probs) == pytest.approx(1, abs=1e-5)


def test_odd_inputs_get_their_own_rows_and_names_that_are_not_utf8_are_escaped(
    checkpoint_and_data, tmp_path
):
    checkpoint, data = checkpoint_and_data
    inputs = tmp_path / "odd"
    inputs.mkdir()
    digit = MNIST(str(data), train=False).data[0].numpy()
    Image.fromarray(digit).save(inputs / "a.png")
    Image.fromarray(digit).save(inputs / os.fsdecode(b"b\xff.png"))  # a Latin-1 file name
    nan = digit.astype(np.float32)
    nan[0, 0] = np.nan
    Image.fromarray(nan).save(inputs / "c.tif")
    os.mkfifo(inputs / "d.png")
    predict(checkpoint, data, f"--data.predict_path={inputs}", "--predictions_file=out.csv")
    rows = read_csv(tmp_path / "out.csv")
    names = [row["path"].removeprefix(f"{inputs}/") for row in rows]
    assert names == ["a.png", "b\\xff.png", "c.tif", "d.png"]
    assert [row["error"] != "" for row in rows] == [False, False, True, True]
    assert rows[0]["label"] == rows[1]["label"] and rows[0]["p3"] == rows[1]["p3"]
    assert "NaN" in rows[2]["error"] and "not a regular file" in rows[3]["error"]
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_existing_output_is_kept_unless_overwrite(checkpoint_and_data, tmp_path, capsys):
    checkpoint, data = checkpoint_and_data
    image = tmp_path / "seven.png"
    Image.fromarray(MNIST(str(data), train=False).data[0].numpy()).save(image)
    (tmp_path / "out.csv").write_text("precious\n")
    with pytest.raises(SystemExit) as exit_:
        predict(checkpoint, data, f"--data.predict_path={image}", "--predictions_file=out.csv")
    assert exit_.value.code == 1
    assert "out.csv exists; pass --overwrite true" in capsys.readouterr().err
    assert (tmp_path / "out.csv").read_text() == "precious\n"

    predict(checkpoint, data, f"--data.predict_path={image}", "--predictions_file=out.csv",
            "--overwrite=true")  # fmt: skip
    assert [row["path"] for row in read_csv(tmp_path / "out.csv")] == [str(image)]
    assert not list(tmp_path.glob(".*partial"))


def test_a_second_predict_into_the_run_keeps_the_first_file(checkpoint_and_data, capsys):
    checkpoint, data = checkpoint_and_data
    folder = checkpoint.parents[1] / "predict"
    for _ in range(2):
        predict(checkpoint, data)
    names = sorted(path.name for path in folder.glob("*.csv"))
    assert names == ["predictions.csv", "predictions_2.csv"]
    wrote = [line.split("wrote ")[-1] for line in capsys.readouterr().out.splitlines()]
    assert [Path(line).name for line in wrote if line.endswith(".csv")] == names  # each says so
    (folder / "predictions.csv").write_text("precious\n")
    predict(checkpoint, data, "--overwrite=true")  # replaces the default name itself
    assert len(read_csv(folder / "predictions.csv")) == 100
    assert len(list(folder.glob("*.csv"))) == 2


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_missing_or_empty_input_is_one_error_before_work(
    checkpoint_and_data, tmp_path, capsys, where
):
    checkpoint, data = checkpoint_and_data
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        predict(checkpoint, data, f"--data.predict_path={tmp_path / where}")
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("does not exist" in err or "no image files" in err)
    assert not list(tmp_path.rglob("predictions.csv"))


def test_no_readable_image_still_reports_every_input(checkpoint_and_data, tmp_path):
    checkpoint, data = checkpoint_and_data
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_text("not an image")
    predict(checkpoint, data, f"--data.predict_path={tmp_path / 'in'}", "--predictions_file=o.csv")
    rows = read_csv(tmp_path / "o.csv")
    assert [row["path"] for row in rows] == [str(tmp_path / "in" / "a.png")]
    assert "not a readable image" in rows[0]["error"] and rows[0]["label"] == ""


file_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(file_names, min_size=1, max_size=8),
    unreadable=st.sets(st.integers(0, 7)),
    folders=st.lists(file_names.filter(lambda n: n not in (".", "..")), max_size=3),
)
def test_prediction_rows_round_trip_for_any_file_names(names, unreadable, folders):
    errors = {i: f"could not read: {names[i]}" for i in unreadable if i < len(names)}
    probs = {i: [0.05] * 9 + [0.55] for i in range(len(names)) if i not in errors}
    with tempfile.TemporaryDirectory() as root:
        output = Path(root).joinpath(*folders, "predictions.csv")
        write_atomically(output, csv_rows(names, probs, errors))
        assert [p.name for p in output.parent.iterdir()] == ["predictions.csv"]  # nothing partial
        with output.open(newline="") as file:  # no newline translation: names may hold \r
            rows = list(csv.reader(file))
    assert rows[0][:3] == ["path", "label", "confidence"]
    assert [row[0] for row in rows[1:]] == names  # every input, in order, whatever its name
    for position, row in enumerate(rows[1:]):
        assert (row[-1] != "") == (position in errors)
        assert row[1] == ("" if position in errors else "9")


def test_what_predict_wrote_is_said_after_its_progress_bar(checkpoint_and_data, capsys):
    checkpoint, data = checkpoint_and_data
    predict(checkpoint, data, "--trainer.enable_progress_bar=true")
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert any("Predicting" in line for line in printed)  # the bar drew here
    assert printed[-1].startswith("Predicted 100 images (0 could not be read); wrote ")

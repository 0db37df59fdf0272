import os
import shutil

import matplotlib.image
import numpy as np
import pytest

from mnist_lit.cli import main


def read_png(path) -> np.ndarray:
    return matplotlib.image.imread(path)


def assert_not_blank(pixels: np.ndarray) -> None:
    gray = pixels[..., :3].mean(axis=2)
    assert gray.std() > 0.05
    assert (gray < 0.5).mean() > 0.01  # a fair amount of ink: curves, digits, matrix


def test_report_of_one_run(tiny_run):
    folder, _ = tiny_run
    path = main(["report", str(folder)])
    assert path == folder / "report.png"
    pixels = read_png(path)
    assert pixels.shape[:2] == (880, 1040)  # 13 x 11 inches at 80 dpi
    assert_not_blank(pixels)


def test_parent_folder_picks_the_newest_run(tiny_run, tmp_path):
    folder, _ = tiny_run
    logs = tmp_path / "lightning_logs"
    older, newer = logs / "version_0", logs / "version_1"
    shutil.copytree(folder, older)
    shutil.copytree(folder, newer)
    for event in older.glob("events.*"):
        os.utime(event, (1, 1))  # make version_0 the older one
    assert main(["report", str(logs)]) == newer / "report.png"


def test_several_runs_share_one_plot(tiny_run, tmp_path):
    folder, _ = tiny_run
    other = tmp_path / "other_run"
    shutil.copytree(folder, other)
    output = tmp_path / "comparison.png"
    assert main(["report", str(folder), str(other), "--output", str(output)]) == output
    pixels = read_png(output)
    assert pixels.shape[:2] == (440, 1040)
    assert_not_blank(pixels)


def test_folder_without_events_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path)])
    assert exit_.value.code == 1
    assert "holds no TensorBoard event files" in capsys.readouterr().err

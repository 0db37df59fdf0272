import os
import shutil

import matplotlib.image
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from mnist_lit.__main__ import main
from mnist_lit.tracking.report import Run, comparison_figure, name_runs, single_run_figure


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
    assert pixels.shape[:2] == (1650, 1950)  # 13 x 11 inches at 150 dpi
    assert_not_blank(pixels)


def test_parent_folder_picks_the_newest_training_run(tiny_run, tmp_path):
    folder, _ = tiny_run
    logs = tmp_path / "lightning_logs"
    older, newer, evaluation = logs / "version_0", logs / "version_1", logs / "version_2"
    shutil.copytree(folder, older)
    shutil.copytree(folder, newer)
    for event in older.glob("events.*"):
        os.utime(event, (1, 1))  # make version_0 the older one
    evaluation.mkdir()  # a later `test` or `predict`: events, but no checkpoints of its own
    for event in folder.glob("events.*"):
        shutil.copy(event, evaluation)
    assert main(["report", str(logs)]) == newer / "report.png"


def test_vector_output_and_unknown_formats(tiny_run, tmp_path, capsys):
    folder, _ = tiny_run
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<?xml")):
        output = main(["report", str(folder), "--output", str(tmp_path / f"report{suffix}")])
        assert output.read_bytes().startswith(magic)
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(folder), "--output", str(tmp_path / "report.jpgg")])
    assert exit_.value.code == 1 and "must end in one of" in capsys.readouterr().err


def test_several_runs_share_one_plot(tiny_run, tmp_path):
    folder, _ = tiny_run
    other = tmp_path / "other_run"
    shutil.copytree(folder, other)
    output = tmp_path / "comparison.png"
    assert main(["report", str(folder), str(other), "--output", str(output)]) == output
    pixels = read_png(output)
    assert pixels.shape[:2] == (825, 1950)
    assert_not_blank(pixels)


def test_runs_are_compared_by_epoch_under_names_that_tell_them_apart(tiny_run, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(tiny_run[0], tmp_path / name / "version_0")
    runs = [Run(tmp_path / name / "version_0") for name in ("a", "b")]
    name_runs(runs)
    accuracy = comparison_figure(runs).axes[1]
    assert accuracy.get_legend_handles_labels()[1] == ["a/version_0", "b/version_0"]
    assert list(accuracy.lines[0].get_xdata()) == [1, 2, 3]  # tiny_run's three epochs
    assert accuracy.get_xlabel() == "epoch"
    assert all(float(tick).is_integer() for tick in accuracy.get_xticks())  # whole epochs


def test_validations_within_an_epoch_are_drawn_but_epochs_are_compared_at_their_ends(tmp_path):
    writer = SummaryWriter(tmp_path)  # two epochs of 10 steps, validated every 5 (and resumed)
    for step, accuracy in [(5, 0.8), (10, 0.9), (15, 0.92), (20, 0.95), (20, 0.95)]:
        writer.add_scalar("accuracy/val", accuracy, step)
    for step in (10, 20, 20):
        writer.add_scalar("loss/train", 0.1, step)
    writer.close()
    run = Run(tmp_path)
    assert list(run.at_epoch_ends("val/acc")) == pytest.approx([0.9, 0.95])
    assert "2 validated epochs (4 validations)" in run.headline()
    accuracy = comparison_figure([run]).axes[1]
    assert list(accuracy.lines[0].get_ydata()) == pytest.approx([0.9, 0.95])
    drawn = single_run_figure(run).axes[1].lines  # the run's own picture: every validation
    assert list(drawn[0].get_xdata()) == [5, 10, 15, 20, 20]


def test_runs_written_before_the_tensorboard_tags_were_renamed_still_report(tmp_path):
    writer = SummaryWriter(tmp_path)
    for epoch, accuracy in enumerate([0.9, 0.95]):
        writer.add_scalar("val/acc", accuracy, epoch)  # the module's name, as tags once were
    writer.close()
    assert list(Run(tmp_path).scalars("val/acc")[1]) == pytest.approx([0.9, 0.95])


def test_the_picture_of_one_run_shows_its_mistakes(tmp_path):
    writer = SummaryWriter(tmp_path)  # a run whose test set has mistakes to show
    pictures = {tag: np.random.default_rng(i).random((3, 8, 8)) for i, tag in enumerate(
        ("test/predictions", "test/worst_mistakes", "test/confusion_matrix"))}  # fmt: skip
    for tag, picture in pictures.items():
        writer.add_image(tag, picture, 0)
    writer.add_scalar("val/acc", 0.5, 0)
    writer.close()
    run = Run(tmp_path)
    shown = [image.get_array() for ax in single_run_figure(run).axes for image in ax.get_images()]
    assert [np.array_equal(s, run.image(t)) for s in shown for t in pictures] == [
        False, True, False,  # the mistakes, not the first digits of the test set
        False, False, True,
    ]  # fmt: skip


def test_damaged_files_and_output_folders(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    (run / "metrics.json").write_text('{"train_seconds": 1')  # cut short
    output = tmp_path / "new" / "folder" / "report.png"
    assert main(["report", str(run), "--output", str(output)]) == output  # folders created
    (tmp_path / "a_file").write_text("in the way\n")
    noise = tmp_path / "noise"
    noise.mkdir()
    (noise / "events.out.tfevents.1.host").write_bytes(bytes(range(256)) * 64)
    for args, said in (
        ([str(run), "--output", str(tmp_path / "a_file" / "r.png")], "a_file is a file"),
        ([str(noise)], "has no curves yet: nothing to draw"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["report", *args])
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and said in err
    assert not (noise / "report.png").exists()


def test_folder_without_events_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path)])
    assert exit_.value.code == 1
    assert "holds no TensorBoard event files" in capsys.readouterr().err

"""What a run leaves for TensorBoard and the report, read back with TensorBoard's own readers."""

import io
import re
import urllib.parse
import urllib.request
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_lit.__main__ import main
from mnist_lit.tracking.pictures import PredictionPictures
from tests.helpers import SEVERAL_RUNS, get_json, serving, tensorboard_command, tiny_args

SCALARS = [
    "loss/train_step", "accuracy/train_step", "loss/train", "accuracy/train", "lr",
    "loss/val", "accuracy/val", "accuracy/val_best", "test/loss", "test/accuracy",
]  # fmt: skip
PICTURES = ["val/predictions", "val/confusion_matrix", "test/predictions", "test/confusion_matrix"]


def test_scalars_exist_with_plausible_values(tiny_run):
    _, events = tiny_run
    assert set(SCALARS) <= set(events.Tags()["scalars"])
    assert "hp_metric" not in events.Tags()["scalars"]  # no placeholder
    losses = [e.value for e in events.Scalars("loss/train_step")]
    assert len(losses) >= 10
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])  # it learns
    for tag in ("accuracy/train_step", "accuracy/val", "accuracy/val_best", "test/accuracy"):
        assert all(0 <= e.value <= 1 for e in events.Scalars(tag)), tag
    best = [e.value for e in events.Scalars("accuracy/val_best")]
    assert best == sorted(best) and best[-1] == max(e.value for e in events.Scalars("accuracy/val"))
    # 256 images / batch 16 x 3 epochs = 48 steps, logged every 4th
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([1e-3] * 12)


def test_time_series_opens_on_accuracy_and_loss(tiny_run):
    # TensorBoard's Time Series groups cards by a tag's first part, in name order, and expands
    # the first two groups
    _, events = tiny_run
    tags = events.Tags()["scalars"] + events.Tags()["images"]
    groups = sorted({tag.split("/", 1)[0] for tag in tags})
    assert groups[:2] == ["accuracy", "loss"]
    for group in groups[:2]:
        cards = sorted(tag for tag in tags if tag.startswith(f"{group}/"))
        assert cards[:2] == [f"{group}/train", f"{group}/train_step"]  # curves, no lone test dot
        assert f"{group}/val" in cards


def test_curves_are_charted_training_beside_validation(tiny_run):
    _, events = tiny_run
    assert "epoch" not in events.Tags()["scalars"]  # Lightning's counter, charted first
    content = events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(content)
    charts = {chart.title: chart.multiline.tag for chart in layout.category[0].chart}
    assert charts["loss"] == [r"^loss/train$", r"^loss/val$"]
    assert charts["accuracy"] == [r"^accuracy/train$", r"^accuracy/val$"]
    scalars = events.Tags()["scalars"]
    assert all(any(re.match(tag, s) for s in scalars) for tags in charts.values() for tag in tags)


def test_pictures_are_logged_each_evaluation(tiny_run):
    _, events = tiny_run
    assert set(PICTURES) <= set(events.Tags()["images"])
    assert len(events.Images("val/predictions")) == 3  # one per epoch, none for the sanity check
    for tag in PICTURES:
        picture = events.Images(tag)[-1]
        assert picture.width >= 400 and picture.height >= 300, tag
        pixels = matplotlib.image.imread(io.BytesIO(picture.encoded_image_string), format="png")
        assert pixels.std() > 0.05, f"{tag} is blank"


def test_hparams_carry_the_run_settings_and_real_metrics(tiny_run):
    _, events = tiny_run
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"accuracy/val", "accuracy/val_best", "test/accuracy"} <= metrics
    assert metrics <= set(events.Tags()["scalars"])  # every metric has real values
    settings = {info.name for info in experiment.hparam_infos}
    expected = {"model/lr", "model/dropout", "data/batch_size", "optimizer/lr", "seed"}
    assert expected | {"trainer/precision"} <= settings
    # TensorBoard ticks the first five columns, of those marked as differing, by name
    shown = sorted(info.name for info in experiment.hparam_infos if info.differs)[:5]
    assert shown == ["data/batch_size", "model/dropout", "model/lr", "model/schedule", "seed"]
    assert not any("/_" in name for name in settings)  # no internal values such as _instantiator
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert values["data/batch_size"].number_value == 16
    assert values["seed"].number_value == 3


@SEVERAL_RUNS
def test_evaluations_write_into_their_run_not_as_runs_of_their_own(
    tiny_run, tiny_run_copy, workdir
):
    run = tiny_run_copy
    data = tiny_run[0].parents[1] / "data"
    for subcommand in ("validate", "test", "predict"):
        main([subcommand, *tiny_args(data), f"--ckpt_path={run / 'checkpoints' / 'best.ckpt'}"])
    main(["test", *tiny_args(data), "--untrained=true"])  # no run of its own to write into
    assert sorted(p.name for p in run.parent.iterdir()) == ["test", "version_0"]
    assert (run / "test" / "metrics.json").is_file()
    assert (run / "predict" / "predictions.csv").is_file()
    assert list((run.parent / "test").iterdir()) == [run.parent / "test" / "version_0"]
    # HParams lists the training run alone, and `report` still draws it
    event_folders = {path.parent for path in workdir.rglob("events.out.tfevents.*")}
    assert {run / "validate", run / "test", run.parent / "test" / "version_0"} <= event_folders
    sessions = [folder for folder in event_folders if is_hparams_session(folder)]
    assert sessions == [run]
    assert main(["report", str(run.parent)]) == run / "report.png"


def is_hparams_session(folder: Path) -> bool:
    events = EventAccumulator(str(folder))
    events.Reload()
    try:
        return "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    except KeyError:  # no hparams data at all
        return False


def test_graph_and_config_text(tiny_run):
    folder, events = tiny_run
    assert events.Tags()["graph"]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "max_epochs: 3" in text and "batch_size: 16" in text
    assert (folder / "config.yaml").is_file()


def test_worst_mistakes_are_the_highest_loss_errors():
    pictures = PredictionPictures(grid_size=2)
    pictures._reset()
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 28, 28)
    targets = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 10)
    logits[0, 0] = 5.0  # right
    logits[1, 5] = 1.0  # wrong, mildly
    logits[2, 7] = 9.0  # wrong, very confidently
    logits[3, 4] = 4.0  # wrong, confidently
    pictures._collect(logits[:2], (images[:2], targets[:2]))
    pictures._collect(logits[2:], (images[2:], targets[2:]))
    worst_images, preds, worst_targets, *_ = pictures.worst
    assert worst_targets.tolist() == [2, 3] and preds.tolist() == [7, 4]
    assert worst_images[:, 0, 0, 0].tolist() == [2.0, 3.0]
    assert pictures.confusion.compute().sum() == 4
    assert pictures.first[2].tolist() == [0, 1]


@pytest.mark.slow  # a real subprocess
def test_tensorboard_server_serves_the_scalars(tiny_run):
    folder, events = tiny_run
    with serving(tensorboard_command(folder)) as address:
        base = f"{address}/data"
        runs = get_json(f"{base}/runs")
        assert runs == ["."]
        query = urllib.parse.urlencode({"run": ".", "tag": "accuracy/val"})
        served = get_json(f"{base}/plugin/scalars/scalars?{query}")
        events_read = events.Scalars("accuracy/val")
        assert [step for _, step, _ in served] == [e.step for e in events_read]
        assert [value for *_, value in served] == pytest.approx([e.value for e in events_read])

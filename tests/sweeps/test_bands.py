"""Each setting's seeds as a mean curve with a min-max band in TensorBoard: SETTING/mean runs
whose values are the seeds' own (from their event files), rewritten as seeds finish, and the
Custom Scalars margin charts that draw them, served by a real TensorBoard."""

import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from mnist_lit.sweeps import command
from mnist_lit.sweeps.bands import write_bands
from tests.helpers import get_json, scalars, serving, tensorboard_command

SETTING = "fast,lr=0.001"


def write_seed(folder: Path, seed: int, accuracies: list[float], resumed_at: int = 0) -> None:
    """A seed's run with accuracy/val and loss/val after each epoch (100 steps each); a resumed
    run writes its last epoch again from `resumed_at`."""
    with SummaryWriter(str(folder / SETTING / f"seed_{seed}" / "version_0")) as writer:
        epochs = list(enumerate(accuracies, start=1))
        if resumed_at:
            epochs.insert(resumed_at, epochs[resumed_at - 1])  # the same step twice
        for epoch, accuracy in epochs:
            writer.add_scalar("accuracy/val", accuracy, 100 * epoch)
            writer.add_scalar("loss/val", 1 - accuracy, 100 * epoch)


def band(folder: Path, tag: str) -> list[float]:
    return scalars(folder / SETTING / "mean", tag)


def test_a_settings_band_is_its_seeds_mean_min_and_max(tmp_path):
    write_seed(tmp_path, 1, [0.90, 0.95, 0.97])
    write_seed(tmp_path, 2, [0.80, 0.93, 0.96], resumed_at=2)  # repeated epoch 2 counts once
    write_seed(tmp_path, 3, [0.85, 0.94])  # still running: the band covers 2 epochs
    assert write_bands(tmp_path) == [tmp_path / SETTING / "mean"]
    seeds = np.array([[0.90, 0.95], [0.80, 0.93], [0.85, 0.94]])
    assert band(tmp_path, "seeds/val_acc_mean") == pytest.approx(seeds.mean(0))
    assert band(tmp_path, "seeds/val_acc_min") == pytest.approx([0.80, 0.93])
    assert band(tmp_path, "seeds/val_acc_max") == pytest.approx([0.90, 0.95])
    assert band(tmp_path, "seeds/val_loss_mean") == pytest.approx(1 - seeds.mean(0))
    # seed 3 finishes: the band is written anew, not appended to
    write_seed(tmp_path, 3, [0.85, 0.94, 0.98])
    write_bands(tmp_path)
    assert band(tmp_path, "seeds/val_acc_max") == pytest.approx([0.90, 0.95, 0.98])
    assert len(list((tmp_path / SETTING / "mean").iterdir())) == 1


def test_nothing_is_written_outside_a_sweep(tmp_path):
    with SummaryWriter(str(tmp_path / "lightning_logs" / "version_0")) as writer:
        writer.add_scalar("accuracy/val", 0.9, 1)
    assert write_bands(tmp_path / "lightning_logs") == [] and write_bands(tmp_path) == []


@pytest.mark.slow  # a real TensorBoard server
def test_tensorboard_draws_each_settings_band(tmp_path):
    write_seed(tmp_path, 1, [0.90, 0.95])
    write_seed(tmp_path, 2, [0.80, 0.93])
    write_bands(tmp_path)
    with serving(tensorboard_command(tmp_path)) as address:
        base = f"{address}/data"
        assert f"{SETTING}/mean" in get_json(f"{base}/runs")
        layout = get_json(f"{base}/plugin/custom_scalars/layout")
        charts = {c["title"]: c for cat in layout["category"] for c in cat["chart"]}
        series = charts["validation acc"]["margin"]["series"][0]
        assert series == {
            "value": "seeds/val_acc_mean",
            "lower": "seeds/val_acc_min",
            "upper": "seeds/val_acc_max",
        }
        query = urllib.parse.urlencode({"run": f"{SETTING}/mean", "tag": "seeds/val_acc_mean"})
        served = get_json(f"{base}/plugin/scalars/scalars?{query}")
        assert [step for _, step, _ in served] == [1, 2]  # by epoch
        assert [value for *_, value in served] == pytest.approx([0.85, 0.94])


def test_a_folder_that_cannot_be_written_still_gets_its_summary(tmp_path, monkeypatch, capsys):
    def refused(folder):
        raise PermissionError(13, "Permission denied", str(folder / SETTING / "mean"))

    monkeypatch.setattr(command, "write_bands", refused)  # as a read-only share would
    command.print_tensorboard(tmp_path)
    assert capsys.readouterr().out == (
        f"TensorBoard: tensorboard --logdir {tmp_path} (no bands: [Errno 13] Permission denied: "
        f"'{tmp_path / SETTING / 'mean'}')\n"
    )

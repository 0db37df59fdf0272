"""metrics.json is written and read in one place, under the module's metric names, and the files
of earlier versions read the same way by every reader (report, export, sweeps)."""

import json

import pytest

from mnist_lit.inference.export import test_accuracy as exported_test_accuracy
from mnist_lit.sweeps.trial import read_result
from mnist_lit.tracking.metrics_file import read_metrics
from mnist_lit.tracking.report import Run
from tests.helpers import scalars


def test_fit_writes_the_best_validation_accuracy_under_its_metric_name(tiny_run):
    metrics = read_metrics(tiny_run[0])
    assert metrics["val/acc_best"] == pytest.approx(max(scalars(tiny_run[0], "accuracy/val")))
    assert "best_val/acc" not in json.loads((tiny_run[0] / "metrics.json").read_text())


def test_a_file_of_an_earlier_version_reads_under_todays_names(tiny_run_copy):
    best = tiny_run_copy / "checkpoints" / "best.ckpt"
    earlier = {  # as versions before one name per figure wrote it
        "val/acc": 0.75,
        "best_val/acc": 0.8125,
        "best_checkpoint": str(best.resolve()),
        "epochs": 3,
        "train_seconds": 12.5,
        "test/acc": 0.77,
        "test_checkpoint": str(best.resolve()),
    }
    (tiny_run_copy / "metrics.json").write_text(json.dumps(earlier))
    assert read_metrics(tiny_run_copy)["val/acc_best"] == 0.8125
    assert exported_test_accuracy(best) == 0.77
    assert Run(tiny_run_copy).train_seconds() == 12.5
    outcome = read_result(tiny_run_copy.parent)  # a sweep trial's runs folder
    assert outcome.error is None and outcome.result["val/acc_best"] == 0.8125
    assert outcome.result["test/acc"] == 0.77


@pytest.mark.parametrize("text", ['{"train_seconds": 1', "[1, 2]", ""])
def test_a_damaged_file_reads_as_no_figures(tmp_path, text):
    (tmp_path / "metrics.json").write_text(text)
    assert read_metrics(tmp_path) == {}

"""`report` on settings' folders: each setting compared with the first over their shared seeds
(the summary's paired test), and their curves with bands in one picture."""

import json
import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from mnist_lit.__main__ import main
from mnist_lit.sweeps.bands import sweep_runs
from mnist_lit.sweeps.report import bands_figure

T_2DF = 4.302653  # Student's t for a two-sided 95% interval with 2 degrees of freedom (a table)


def write_setting(sweep: Path, label: str, figures: dict[int, tuple[float, float]]) -> Path:
    """A setting's folder as a sweep leaves it: per seed, val/acc_best and test/acc."""
    for seed, (val, test) in figures.items():
        run = sweep / label / f"seed_{seed}" / "version_0"
        with SummaryWriter(str(run)) as writer:
            for epoch in (1, 2):
                writer.add_scalar("accuracy/val", val - 0.01 * (2 - epoch), 100 * epoch)
                writer.add_scalar("loss/val", 1 - val, 100 * epoch)
        (run / "metrics.json").write_text(json.dumps({"val/acc_best": val, "test/acc": test}))
    return sweep / label


def test_two_settings_are_compared_over_their_shared_seeds(tmp_path, capsys):
    first = write_setting(tmp_path, "a", {1: (0.990, 0.98), 2: (0.970, 0.97), 3: (0.980, 0.99)})
    # 0.4-0.6 points lower on the same seeds; seed 4 has no partner and is left out
    second = write_setting(
        tmp_path, "b", {1: (0.986, 0.98), 2: (0.965, 0.97), 3: (0.974, 0.99), 4: (0.5, 0.5)}
    )
    output = main(["report", str(first), str(second)])
    printed = capsys.readouterr().out
    half = 100 * T_2DF * 0.001 / math.sqrt(3)  # the differences' std is 0.001
    t = 5 * math.sqrt(3)
    p = 1 - t / math.sqrt(t**2 + 2)  # two-sided, 2 degrees of freedom: 0.013
    assert printed.startswith("b vs a:\n")
    assert (
        f"  val/acc_best: -0.50 points [95% CI {-0.5 - half:+.2f}, {-0.5 + half:+.2f}], "
        f"p = {p:.3f} (paired t over 3 shared seeds): a real difference"
    ) in printed
    assert "  test/acc: +0.00 points" in printed  # equal on every seed
    assert output == first / "compare.png" and output.stat().st_size > 10_000


def test_one_epoch_settings_are_drawn_on_whole_epochs(tmp_path):
    a = write_setting(tmp_path, "a", {1: (0.99, 0.99)})
    (a / "seed_1" / "version_0" / "metrics.json").unlink()  # only the curve matters here
    for event in (a / "seed_1" / "version_0").iterdir():  # one epoch, not two
        event.unlink()
    with SummaryWriter(str(a / "seed_1" / "version_0")) as writer:
        writer.add_scalar("accuracy/val", 0.99, 100)
        writer.add_scalar("loss/val", 0.01, 100)
    accuracy = bands_figure(sweep_runs(tmp_path), "one epoch").axes[0]
    accuracy.figure.canvas.draw()  # ticks are chosen when drawn
    assert list(accuracy.lines[0].get_xdata()) == [1]
    assert all(float(tick).is_integer() for tick in accuracy.get_xticks())  # not 0.96-1.04


def test_settings_without_a_seed_in_common_say_so(tmp_path, capsys):
    first = write_setting(tmp_path / "one", "fast", {1: (0.99, 0.99)})
    second = write_setting(tmp_path / "two", "fast", {2: (0.98, 0.98)})
    main(["report", str(first), str(second), "--output", str(tmp_path / "c.svg")])
    printed = capsys.readouterr().out
    assert printed.startswith("two/fast vs one/fast:\n")  # same names: the sweeps tell apart
    assert "  val/acc_best: no seed in common" in printed
    assert (tmp_path / "c.svg").read_text().startswith("<?xml")

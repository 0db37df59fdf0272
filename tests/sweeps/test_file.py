"""Sweep files and the sweep's flags: every mistake is one error before any training."""

import socket
from pathlib import Path

import pytest
import yaml

from mnist_lit.__main__ import main
from mnist_lit.sweeps.file import read_sweep_file, setting_label
from mnist_lit.sweeps.flags import check_flags, check_trial_flags
from mnist_lit.sweeps.storage import open_storage
from mnist_lit.sweeps.study import open_study
from tests.helpers import REPO

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
FAST = str(REPO / "configs" / "fast.yaml")


def write_sweep(folder: Path, content: dict | str) -> Path:
    path = folder / "sweep.yaml"
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text)
    return path


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweep_files_parse_and_every_value_is_a_valid_flag(sweep):
    parsed = read_sweep_file(sweep)
    assert parsed.seeds and all(path.is_file() for path in parsed.configs.values())
    check_trial_flags(parsed, [])  # raises on any key or value `fit` would refuse


def test_grid_settings_cover_the_product_with_config_as_an_axis(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  lr: 0.01\n")
    sweep = read_sweep_file(
        write_sweep(
            tmp_path,
            {
                "configs": [FAST, str(other)],
                "seeds": [1, 2, 3],
                "grid": {"model.lr": [1e-3, 3e-3], "model.channels": [[8, 16, 32]]},
            },
        )
    )
    settings = sweep.grid_settings()
    assert len(settings) == 2 * 2 * 1
    assert {s["config"] for s in settings} == {"fast", "other"}
    assert settings[0]["model.channels"] == "[8, 16, 32]"  # Optuna stores lists as JSON text
    assert setting_label(settings[0], sweep.configs) == "fast,lr=0.001,channels=[8,16,32]"


BAD_FILES = {
    "unknown key": ({"configs": [FAST], "grids": {}}, "unknown keys ['grids']"),
    "no configs": ({"seeds": [1]}, "configs must be a list"),
    "missing config": ({"configs": ["nope.yaml"]}, "config nope.yaml is not a file"),
    "empty grid": ({"configs": [FAST], "grid": {}}, "grid must map CLI keys"),
    "empty values": ({"configs": [FAST], "grid": {"model.lr": []}}, "model.lr must have a non"),
    "scalar values": ({"configs": [FAST], "grid": {"model.lr": 0.1}}, "model.lr must have a non"),
    "repeated value": ({"configs": [FAST], "grid": {"model.lr": [1, 1]}}, "repeats a value"),
    "seed reserved": ({"configs": [FAST], "grid": {"seed_everything": [1]}}, "set by the sweep"),
    "flag spelling": ({"configs": [FAST], "grid": {"--model.lr": [1]}}, "without --"),
    "seeds not ints": ({"configs": [FAST], "seeds": ["a"]}, "seeds must be integers"),
    "repeated seed": ({"configs": [FAST], "seeds": [1, 1]}, "repeat a seed"),
    "seed below 0": ({"configs": [FAST], "seeds": [1, -1]}, "seed -1: a seed is from 0 to"),
    "seed above 2**32": ({"configs": [FAST], "seeds": [2**32]}, "(numpy's range)"),
    "huge grid": (
        {
            "configs": [FAST],
            "seeds": [1, 2],
            "grid": {"model.lr": list(range(1, 501)), "model.hidden": [1, 2]},
        },  # fmt: skip
        "its grid is 2,000 trials (settings x seeds); a sweep stores at most 1,000",
    ),
    "grid and search": ({"configs": [FAST], "grid": {}, "search": {}}, "one or the other"),
    "no budget": ({"configs": [FAST], "search": {"space": {}}}, "search must have trials"),
    "zero trials": (
        {"configs": [FAST], "search": {"trials": 0, "space": {"model.lr": {"choices": [1]}}}},
        "positive integer",
    ),
    "low above high": (
        {"configs": [FAST], "search": {"trials": 2, "space": {"model.lr": {"low": 1, "high": 0}}}},
        "low 1 must be below high 0",
    ),
    "log of zero": (
        {
            "configs": [FAST],
            "search": {"trials": 2, "space": {"model.lr": {"low": 0.0, "high": 1.0, "log": True}}},
        },
        "log scale needs low > 0",
    ),
    "range typo": (
        {"configs": [FAST], "search": {"trials": 2, "space": {"model.lr": {"lo": 0, "hi": 1}}}},
        "must be {low, high}",
    ),
}


@pytest.mark.parametrize("content, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_sweep_file_is_one_error_line_before_any_training(content, message, workdir, capsys):
    path = write_sweep(workdir, content)
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith("error:") and "Traceback" not in error
    assert not (workdir / "lightning_logs").exists() and not (workdir / "sweeps").exists()


def test_yaml_aliases_are_refused_before_they_expand(workdir, capsys):
    levels = ["&a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    levels += [f"&a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    bomb = f"[{', '.join(levels)}]"  # its last value alone is 10**9 numbers once expanded
    text = f"configs: [{FAST}]\ngrid:\n  model.lr: {bomb}\n"
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(write_sweep(workdir, text))])
    assert exit_.value.code == 2
    assert "uses a YAML alias (*name); write each value out" in capsys.readouterr().err


def test_not_yaml_and_not_found(workdir, capsys):
    for path, message in ((write_sweep(workdir, "a: [b"), "not valid YAML"),
                          (workdir / "none.yaml", "does not exist")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["sweep", str(path)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "grid, flags, message",
    [
        ({"model.lr": ["fast"]}, [], "model.lr: fast with config fast"),
        ({"model.learning_rate": [0.1]}, [], "model.learning_rate"),
        ({"model.lr": [0.1]}, ["--trainer.max_epochz", "1"], "config fast with the flags"),
        ({"model.lr": [0.1]}, ["--seed_everything", "3"], "--seed_everything: a sweep sets it"),
        ({"model.lr": [0.1]}, ["--ckpt_path", "last"], "--ckpt_path: a sweep sets it"),
        ({"model.lr": [0.1]}, ["--checkpoint.dirpath=ckpts"], "--checkpoint.dirpath: a sweep"),
        ({"model.lr": [0.1]}, ["--model.lr=0.2"], "--model.lr: the sweep file sweeps it"),
    ],
    ids=["wrong type", "unknown key", "bad flag", "seed", "ckpt", "dirpath", "swept flag"],
)
def test_values_and_flags_are_checked_as_fit_would_before_any_training(
    grid, flags, message, workdir, capsys
):
    path = write_sweep(workdir, {"configs": [FAST], "grid": grid})
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(path), *flags])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (workdir / "sweeps").exists() and not (workdir / "lightning_logs").exists()


def test_a_config_after_the_sweep_file_applies_over_each_trials_own():
    sweep = read_sweep_file(REPO / "configs" / "sweeps" / "seeds.yaml")
    flags = ["--config", str(REPO / "configs" / "dry_run.yaml")]
    check_flags(sweep, flags)  # allowed: it does not replace the trial's config
    resolved = check_trial_flags(sweep, flags)
    assert set(resolved) == {"base", "fast", "best"}
    for config in resolved.values():
        trainer = config["trainer"]
        assert trainer["max_epochs"] == 1
        assert trainer["limit_val_batches"] == trainer["limit_test_batches"] == 5


def test_unwritable_root_and_unreachable_storage_are_one_line(workdir, capsys):
    path = write_sweep(workdir, {"configs": [FAST], "grid": {"model.lr": [0.1]}})
    (workdir / "afile").write_text("")
    with socket.socket() as probe:  # a local port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cases = [
        (["--root", "afile/sweeps"], "afile is a file"),
        (["--storage", "sqlite:////no/such/folder/x.db"], "cannot open it"),
        (["--storage", "/no/such/folder/x.journal"], "no folder /no/such/folder"),
        (["--storage", str(workdir)], "cannot open it (Is a directory)"),  # a journal file's path
        # the docs' form, with the driver the `postgres` extra installs: the server is not there
        (["--storage", f"postgresql://me:secret@127.0.0.1:{port}/db"], "Connection refused"),
        (["--storage", f"postgresql://me@127.0.0.1:{port}/db?password=secret"], "password=***"),
    ]
    for flags, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["sweep", str(path), *flags])
        error = capsys.readouterr().err
        assert exit_.value.code in (1, 2) and message in error, error
        assert "secret" not in error and "Traceback" not in error and error.count("\n") == 1


def test_a_read_only_study_is_one_line(workdir, capsys):
    path = write_sweep(workdir, {"configs": [FAST], "grid": {"model.lr": [0.1]}})
    database = workdir / "optuna.db"
    open_study(open_storage(f"sqlite:///{database}"), "sweep", read_sweep_file(path), [])
    read_only = f"sqlite:///file:{database}?mode=ro&uri=true"  # as a file others own would be
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(path), "--storage", read_only])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "attempt to write a readonly database" in error, error
    assert error.startswith("error: --storage sqlite:///file:") and error.count("\n") == 1

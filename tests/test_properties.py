"""Property tests: whatever bytes the idx files hold, whatever values a config holds and whatever
names the images have, the behaviour stays the documented one."""

import csv
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_lit.callbacks import csv_rows, write_atomically
from mnist_lit.cli import make_cli
from mnist_lit.data import MNISTDataError, MNISTDataModule
from tests.conftest import write_mnist

FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


@st.composite
def idx_like(draw, count: int, ndim: int) -> bytes:
    """Bytes shaped like an idx file (magic, dims, payload). Half are consistent enough to parse
    (ubyte, `count` items of the right rank, exactly the payload the dims say) with free sizes
    and values; the rest have every part free to be wrong."""
    if draw(st.booleans()):
        dtype, dims = (
            0x08,
            [count] + draw(st.lists(st.integers(0, 40), min_size=ndim - 1, max_size=ndim - 1)),
        )
    else:
        dtype = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0D, 0x00, 0xFF]))
        dims = draw(st.lists(st.integers(0, 40), min_size=0, max_size=4))
    header = bytes([0, 0, dtype, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    size = 1
    for dim in dims:
        size *= dim
    exact = st.binary(min_size=size, max_size=size) if size <= 40_000 else st.binary(max_size=9)
    return header + draw(st.one_of(exact, st.binary(max_size=2000)))


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("clean") / "data", train_count=40, test_count=20)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(file=st.sampled_from(FILES), data=st.data())
def test_any_idx_bytes_read_or_raise_the_documented_error(clean_data, file, data):
    count = 40 if file.startswith("train") else 20
    ndim = 1 if "labels" in file else 3
    content = data.draw(st.one_of(st.binary(max_size=300), idx_like(count, ndim)))
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"
        shutil.copytree(clean_data, data_dir)
        (data_dir / "MNIST" / "raw" / file).write_bytes(content)
        mnist = MNISTDataModule(str(data_dir), val_size=5, verify_checksums=False, download=False)
        try:
            mnist.setup("fit" if file.startswith("train") else "test")
        except MNISTDataError as error:
            assert "ubyte" in str(error)  # it names the files
            return
    dataset = mnist.train_set if file.startswith("train") else mnist.test_set
    assert dataset.images.dtype == torch.uint8 and dataset.images.shape[1:] == (28, 28)
    assert dataset.labels.min() >= 0 and dataset.labels.max() <= 9


@pytest.fixture(scope="module")
def parser(tmp_path_factory):
    return make_cli(["--data.data_dir", str(tmp_path_factory.mktemp("unused"))], run=False).parser


folder_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), min_size=1
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    model=st.fixed_dictionaries(
        {
            "channels": st.lists(st.integers(1, 256), min_size=3, max_size=3),
            "hidden": st.integers(1, 4096),
            "dropout": st.floats(0.0, 0.99),
            "lr": st.floats(1e-8, 10.0),
            "schedule": st.sampled_from(["constant", "one_cycle"]),
            "channels_last": st.booleans(),
        }
    ),
    data=st.fixed_dictionaries(
        {
            "data_dir": folder_names,
            "batch_size": st.integers(1, 65536),
            "augment_degrees": st.floats(0.0, 180.0),
            "predict_path": st.one_of(st.none(), folder_names, st.lists(folder_names, max_size=3)),
        }
    ),
    max_epochs=st.integers(1, 10_000),
)
def test_configs_survive_dump_and_parse(parser, model, data, max_epochs):
    config = parser.parse_object(
        {"model": model, "data": data, "trainer": {"max_epochs": max_epochs}}
    )
    again = parser.parse_string(parser.dump(config))
    assert again.model == config.model
    assert again.data == config.data
    assert again.trainer.max_epochs == max_epochs


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

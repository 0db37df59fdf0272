import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.datasets import MNIST

from mnist_lit import data, mnist_files
from mnist_lit.data import MNISTDataError, MNISTDataModule, keep_batch, normalize
from mnist_lit.mnist import MEAN, STD
from tests.helpers import write_mnist


def tiny_module(data_dir: Path, **kwargs) -> MNISTDataModule:
    kwargs = {"val_size": 64, "verify_checksums": False, "download": False, **kwargs}
    return MNISTDataModule(data_dir=str(data_dir), **kwargs)


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_split_sizes_dtypes_and_disjointness(tiny_mnist):
    dm = tiny_module(tiny_mnist)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (256, 64, 100)
    assert dm.train_set.images.dtype == torch.uint8 and dm.train_set.images.shape[1:] == (28, 28)
    assert dm.train_set.labels.dtype == torch.int64
    # train + val is exactly the training file, each image once
    pooled = torch.cat([dm.train_set.images, dm.val_set.images]).flatten(1)
    original = MNIST(str(tiny_mnist), train=True).data.flatten(1)
    assert sorted(map(bytes, pooled.numpy())) == sorted(map(bytes, original.numpy()))


def test_split_depends_on_split_seed_only(tiny_mnist):
    def val_images(split_seed: int) -> torch.Tensor:
        dm = tiny_module(tiny_mnist, split_seed=split_seed)
        dm.setup("fit")
        return dm.val_set.images

    torch.manual_seed(123)  # the training seed must not move the split
    first = val_images(7)
    torch.manual_seed(456)
    assert torch.equal(first, val_images(7))
    assert not torch.equal(first, val_images(8))


def test_loaders_serve_every_image_once_without_drop_last(tiny_mnist):
    dm = tiny_module(tiny_mnist, batch_size=32)
    dm.setup("fit")
    dm.setup("test")
    train_batches = list(dm.train_dataloader())
    assert train_batches[0][0].shape == (32, 28, 28) and train_batches[0][0].dtype == torch.uint8
    assert sum(len(labels) for _, labels in train_batches) == 256
    test_sizes = [len(labels) for _, labels in dm.test_dataloader()]
    assert test_sizes == [32, 32, 32, 4]
    served = torch.cat([images for images, _ in dm.test_dataloader()])
    assert torch.equal(served, dm.test_set.images)  # in order, none dropped


def test_batches_are_normalised_after_transfer(tiny_mnist):
    dm = tiny_module(tiny_mnist)
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8).expand(1, 28, 2)
    scaled, labels = dm.on_after_batch_transfer((images, torch.tensor([3])), 0)
    assert scaled.shape == (1, 1, 28, 2) and scaled.dtype == torch.float32
    expected = torch.tensor([-MEAN / STD, (1 - MEAN) / STD])
    torch.testing.assert_close(scaled[0, 0, 0], expected)
    assert labels.tolist() == [3]
    assert torch.equal(normalize(images), scaled)


def test_val_size_out_of_range_is_a_clear_error(tiny_mnist):
    with pytest.raises(MNISTDataError, match="--data.val_size 320 must be between 1 and 319"):
        tiny_module(tiny_mnist, val_size=320).setup("fit")


def test_checksum_catches_a_corrupted_file(tiny_mnist, monkeypatch):
    raw = tiny_mnist / "MNIST" / "raw"
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in raw.iterdir()}
    monkeypatch.setattr(mnist_files, "MNIST_MD5", sums)
    tiny_module(tiny_mnist, verify_checksums=True).prepare_data()  # intact: passes

    corrupt = raw / "t10k-images-idx3-ubyte"
    payload = bytearray(corrupt.read_bytes())
    payload[500] ^= 0xFF
    corrupt.write_bytes(bytes(payload))
    with pytest.raises(MNISTDataError, match="t10k-images-idx3-ubyte is corrupt"):
        tiny_module(tiny_mnist, verify_checksums=True).prepare_data()


def test_published_checksums_reject_other_files(tiny_mnist):
    with pytest.raises(MNISTDataError, match="train-images-idx3-ubyte is corrupt.*--data.data_dir"):
        tiny_module(tiny_mnist, verify_checksums=True).prepare_data()


def test_missing_files_without_download_name_files_and_fix(tmp_path):
    with pytest.raises(MNISTDataError) as error:
        tiny_module(tmp_path / "nowhere").prepare_data()
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "--data.data_dir" in message


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    # a closed local port: the real torchvision download path, refused at once and offline
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(MNISTDataError, match="could not be downloaded.*--data.data_dir") as error:
        tiny_module(tmp_path / "empty", download=True).prepare_data()
    assert "(no network? urlopen error" in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []  # no empty empty/MNIST/raw left for the next try


def test_data_dir_that_is_a_file(tmp_path):
    not_a_folder = tmp_path / "mnist.zip"
    not_a_folder.write_bytes(b"zip")
    with pytest.raises(MNISTDataError, match="is a file"):
        tiny_module(not_a_folder).prepare_data()


def test_data_folder_is_only_read(tiny_mnist):
    before = snapshot(tiny_mnist)
    dm = tiny_module(tiny_mnist)
    dm.prepare_data()
    for stage in ("fit", "test"):
        dm.setup(stage)
    assert snapshot(tiny_mnist) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_data_folder_works(tiny_mnist):
    for path in [*tiny_mnist.rglob("*"), tiny_mnist]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    dm = tiny_module(tiny_mnist)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 256


def test_epoch_shuffle_depends_on_seed_and_epoch_only(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    sampler = data.EpochShuffle(50)
    first = list(sampler)
    torch.manual_seed(999)  # the global generator does not matter
    assert list(sampler) == first and sorted(first) == list(range(50))
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


@pytest.mark.parametrize("damage", ["truncated", "wrong magic", "label count"])
def test_damaged_idx_files_are_one_clear_error(tiny_mnist, damage):
    raw = tiny_mnist / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    payload = images.read_bytes()
    if damage == "truncated":
        images.write_bytes(payload[: len(payload) // 2])
    elif damage == "wrong magic":
        images.write_bytes(b"\x00\x00\x09\x03" + payload[4:])
    else:  # labels of another file
        (raw / "train-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(MNISTDataError, match="train-\\*-ubyte"):
        tiny_module(tiny_mnist).setup("fit")


def test_training_batches_shard_the_split_across_processes(tiny_mnist):
    dm = MNISTDataModule(str(tiny_mnist), val_size=64, verify_checksums=False, download=False)
    dm.setup("fit")
    dataset = dm.train_set
    dataset.images = torch.arange(len(dataset)).view(-1, 1, 1)  # tag each image with its index
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(dataset, batch_size=32, sampler=sampler, collate_fn=keep_batch)
        seen.append(torch.cat([images.flatten() for images, _ in loader]))
    assert len(seen[0]) == len(seen[1]) == 128
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == list(range(256))


# Whatever bytes the idx files hold, reading them succeeds or raises the documented error.
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

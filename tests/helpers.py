"""Helpers the tests import: tiny MNIST-format files written by the tests themselves, and the
flags of a quick, quiet run on them."""

import socket
import struct
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data"


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian int32 dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit k is a bright 6x6 square at a position of its own over faint noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 40, size=(count, 28, 28))
    for image, label in zip(images, labels):
        row, col = 3 + 9 * (label // 4), 3 + 7 * (label % 4)
        image[row : row + 6, col : col + 6] = 255
    return images, labels


def write_mnist(root: Path, train_count: int = 320, test_count: int = 100) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", train_count, 0), ("t10k", test_count, 1)):
        images, labels = fake_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def tiny_args(data_dir: Path) -> list[str]:
    """CLI flags for a quick, quiet run on the fake digits."""
    return [
        f"--data.data_dir={data_dir}",
        "--data.val_size=64",
        "--data.verify_checksums=false",
        "--data.download=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=4",
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

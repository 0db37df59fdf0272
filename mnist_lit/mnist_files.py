"""MNIST's four files on disk: where they go, their published checksums, and fetching them."""

from contextlib import suppress
from pathlib import Path

from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_md5

from mnist_lit.errors import UserError

# Published md5 sums of the extracted files, in torchvision's <data_dir>/MNIST/raw layout.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class MNISTDataError(UserError, RuntimeError):
    """The MNIST files are missing, corrupt or unusable; the message says how to fix it."""


def raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def missing_files(data_dir: str | Path) -> list[str]:
    return [name for name in MNIST_MD5 if not (raw_dir(data_dir) / name).is_file()]


def verify_checksums(data_dir: str | Path) -> None:
    """Raise MNISTDataError naming the first file whose md5 is not the published one."""
    for name, md5 in MNIST_MD5.items():
        path = raw_dir(data_dir) / name
        if not check_md5(str(path), md5):
            raise MNISTDataError(
                f"{path} is corrupt: its md5 is not the published {md5}. Delete it and run again "
                "to download a fresh copy, or point --data.data_dir at an intact copy of MNIST."
            )


def download(data_dir: str | Path) -> None:
    """Fetch MNIST with torchvision, or fail with one message saying what to put where."""
    missing, raw = missing_files(data_dir), raw_dir(data_dir)
    new = [folder for folder in (raw, raw.parent, Path(data_dir)) if not folder.exists()]
    try:
        MNIST(str(data_dir), train=True, download=True)
    except Exception as error:  # torchvision raises bare RuntimeError/URLError/OSError here
        for folder in new:  # deepest first: a failed download leaves no empty folders behind
            with suppress(OSError):
                folder.rmdir()
        raise MNISTDataError(
            f"MNIST files {', '.join(missing)} are missing from {raw} and could not be "
            f"downloaded (no network? {download_failure(error)}). Put the extracted files there, "
            "or point --data.data_dir at a folder that holds MNIST/raw/*-ubyte."
        ) from error


def download_failure(error: Exception) -> str:
    """torchvision's reason in one line: it lists each mirror with its `<urlopen error ...>`."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line.strip("<>") for line in lines if line.startswith("<")]
    return (reasons or lines or [type(error).__name__])[-1]

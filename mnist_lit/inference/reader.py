"""Reading digits with a trained model, from Python: no CLI, no Trainer.

    reader = DigitReader("best")  # the newest run's best.ckpt; or a run folder, a checkpoint
    reading = reader.read("my_digit.png")  # or a PIL image, or a numpy array
    print(reading.label, reading.probs)

The checkpoint is read as `predict` reads it (tensors only, checked to be this model's), and each
image gets `predict`'s preprocessing (images.py, data.normalize), so a file gives the same
probabilities here as in `predict`'s CSV row.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from mnist_lit.data import normalize
from mnist_lit.images import MAX_PIXELS, ImageError, as_mnist_digit, load_digit, to_gray
from mnist_lit.mnist import IMAGE_SIDE
from mnist_lit.tracking.runs import RUNS, VERSION, checkpoint_path, newest_checkpoint
from mnist_lit.training.checkpoint_io import CheckpointError, load_classifier

ImageInput = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class Reading:
    """What the network made of one image.

    Attributes:
        label: The digit it reads, 0-9.
        probs: The ten probabilities, float (10,), summing to 1.
        digit: uint8 (28, 28): the image as the network received it, in MNIST's layout.
    """

    label: int
    probs: np.ndarray
    digit: np.ndarray

    @property
    def confidence(self) -> float:
        return float(self.probs[self.label])


class DigitReader:
    """A trained checkpoint, loaded once, that reads digits from images.

    Args:
        checkpoint: A checkpoint of `fit`; a run folder (its checkpoints/best.ckpt); or `best`
            or `last`: that checkpoint of the newest run below `runs`.
        device: Where the network runs.
        runs: The folder of the run folders, for `best` and `last`.
    """

    def __init__(
        self, checkpoint: str | Path, device: str = "cpu", runs: str | Path = RUNS
    ) -> None:
        self.checkpoint = checkpoint_file(checkpoint, Path(runs))
        self.model = load_classifier(self.checkpoint).to(device)

    def read(self, image: ImageInput) -> Reading:
        """One image: raises images.ImageError, naming the problem, if it holds no digit."""
        return self.read_digits(as_digit(image)[None])[0]

    def read_digits(self, digits: np.ndarray) -> list[Reading]:
        """uint8 (N, 28, 28) digits in MNIST's layout, read in one batch; raises
        images.ImageError for anything else (other images go through `read`)."""
        check_digits(digits)
        images = normalize(torch.from_numpy(digits)).to(self.model.device)
        with torch.inference_mode():
            probs = self.model(images).softmax(dim=1).float().cpu().numpy()
        return [Reading(int(p.argmax()), p, d) for p, d in zip(probs, digits, strict=True)]


def check_digits(digits: object) -> None:
    """Only MNIST's own layout: float images in [0, 1] would all read as one digit, and NaN or
    bool arrays as nonsense, without a word."""
    shape = getattr(digits, "shape", None)
    side = (IMAGE_SIDE, IMAGE_SIDE)
    if (
        not isinstance(digits, np.ndarray)
        or digits.dtype != np.uint8
        or digits.ndim != 3
        or digits.shape[1:] != side
        or len(digits) == 0
    ):
        what = (
            f"{digits.dtype} {shape}" if isinstance(digits, np.ndarray) else type(digits).__name__
        )
        raise ImageError(
            f"read_digits takes uint8 (N, {IMAGE_SIDE}, {IMAGE_SIDE}) digits in MNIST's layout, "
            f"not {what}; read() takes any other image"
        )


def as_digit(image: ImageInput) -> np.ndarray:
    """A file, PIL image or array -> uint8 (28, 28) in MNIST's layout, as `predict` makes it.
    Arrays: (H, W) grayscale, uint8 0-255 or float 0-1, or (H, W, 3|4) uint8 RGB(A)."""
    if isinstance(image, str | Path):
        return load_digit(image)
    if isinstance(image, np.ndarray):
        image = array_image(image)
    if not isinstance(image, Image.Image):
        raise ImageError(f"not an image: a {type(image).__name__}")
    if image.width * image.height > MAX_PIXELS:
        raise ImageError(f"{image.width}x{image.height} pixels is over the {MAX_PIXELS:,} limit")
    return as_mnist_digit(to_gray(ImageOps.exif_transpose(image)))


def array_image(array: np.ndarray) -> Image.Image:
    if array.ndim >= 2 and array.shape[0] * array.shape[1] > MAX_PIXELS:
        height, width = array.shape[:2]
        raise ImageError(f"{width}x{height} pixels is over the {MAX_PIXELS:,} limit")
    if array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError("a float array must hold values in [0, 1]")
        return Image.fromarray(array.astype(np.float32), mode="F")
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    if array.dtype != np.uint8 or not shape_ok or 0 in array.shape:
        raise ImageError(
            f"an array of {array.dtype} {array.shape}: expected (H, W) uint8 or float in [0, 1], "
            "or (H, W, 3 or 4) uint8"
        )
    return Image.fromarray(array)


# what --ckpt_path takes wherever a trained model is used (demo, export)
CHECKPOINT_HELP = (
    f"a checkpoint of `fit`, a run folder (its best.ckpt), or `best`/`last` (the newest run's "
    f"under {RUNS})"
)


def checkpoint_file(checkpoint: str | Path, runs: Path) -> Path:
    """`best`/`last` -> the newest run's; a run folder -> its best.ckpt; a file as it is."""
    if str(checkpoint) in ("best", "last"):
        found = newest_checkpoint(runs, str(checkpoint))
        if found is None:
            pattern = checkpoint_path(runs / f"{VERSION}*", str(checkpoint))
            raise CheckpointError(f"{checkpoint}: no {pattern} was found; pass a checkpoint file")
        return found
    path = Path(checkpoint)
    in_run = checkpoint_path(path, "best")
    return in_run if path.is_dir() and in_run.is_file() else path

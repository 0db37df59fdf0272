"""A user's image file -> a 28x28 uint8 digit laid out the way MNIST's digits are.

MNIST's digits are white on black, scaled to fit a 20x20 box keeping their aspect ratio, and
placed in a 28x28 field with their centre of mass at the centre. Photos, scans and drawings are
brought to that layout; a 28x28 image is taken to be in MNIST's layout already.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from mnist_lit.errors import UserError
from mnist_lit.mnist import DIGIT_BOX, IMAGE_SIDE

MAX_PIXELS = 50_000_000  # refuse larger images from their header, before decoding them
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class ImageError(ValueError):
    """One input file cannot be read as a digit; the message says why."""


def read_gray(path: str | Path) -> np.ndarray:
    """Any PIL-readable file -> float32 grayscale in [0, 1], upright (EXIF orientation applied),
    transparency composited on white."""
    if not Path(path).exists():
        raise ImageError("no such file")
    if not Path(path).is_file():  # opening a FIFO would wait forever
        raise ImageError("not a regular file (a FIFO, device or folder)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{width}x{height} pixels is over the {MAX_PIXELS:,} limit")
            image.load()
            # phones store photos sideways with an orientation tag rather than rotating them
            return to_gray(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except UnidentifiedImageError:  # Pillow's message repeats the path, which the row has
        raise ImageError("not a readable image: no image format recognises it") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"not a readable image ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt payloads
        raise ImageError(f"corrupt or truncated image ({error})") from None


def to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale in [0, 1]. Wide modes are scaled by the range their values use: floats in
    [0, 1], or 0-255 when any value is above 1; 16- and 32-bit integers 0-65535, or 0-255 when
    none is above 255 (8-bit values stored in a wide file)."""
    if image.mode == "F" or image.mode.startswith("I"):
        pixels = np.asarray(image, dtype=np.float32)
        if not np.isfinite(pixels).all():
            raise ImageError("NaN or infinite pixel values")
        top = pixels.max()
        if image.mode == "F":
            scale = 255.0 if top > 1 else 1.0
        else:
            scale = 65535.0 if top > 255 else 255.0
        return np.clip(pixels / scale, 0, 1)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def as_mnist_digit(gray: np.ndarray) -> np.ndarray:
    """Grayscale [0, 1] -> uint8 (28, 28): bright digit on black, boxed and centred like MNIST."""
    ink = 1 - gray if np.median(border(gray)) > 0.5 else gray  # light paper: the ink is dark
    paper = np.median(border(ink))
    if ink.max() - paper <= 0.05:
        raise ImageError("no digit found: the image is blank")
    if ink.shape == (IMAGE_SIDE, IMAGE_SIDE):  # already MNIST's layout: keep every pixel
        return np.round(ink * 255).astype(np.uint8)
    ink = np.clip(ink - paper, 0, None)  # paper that is not quite black
    digit = centre_by_mass(fit_in_box(crop_to_ink(ink / ink.max())))
    return np.round(digit * 255).astype(np.uint8)


def crop_to_ink(ink: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    rows, cols = np.nonzero(ink > threshold)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def fit_in_box(ink: np.ndarray) -> np.ndarray:
    """Scale so the longer side is 20 pixels, keeping the aspect ratio (antialiased)."""
    height, width = ink.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.LANCZOS)
    return np.clip(np.asarray(resized), 0, 1)


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste into a 28x28 field so that the centre of mass lands on the centre."""
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    rows, cols = np.indices(digit.shape)
    mass = digit.sum()
    centre = np.array([(rows * digit).sum(), (cols * digit).sum()]) / mass
    top, left = np.round(IMAGE_SIDE / 2 - centre).astype(int)
    top = int(np.clip(top, 0, IMAGE_SIDE - digit.shape[0]))
    left = int(np.clip(left, 0, IMAGE_SIDE - digit.shape[1]))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return field


def load_digit(path: str | Path) -> np.ndarray:
    """An image file -> uint8 (28, 28) MNIST-style digit, or ImageError naming the problem."""
    return as_mnist_digit(read_gray(path))


@dataclass
class PredictInputs:
    """What `predict` runs on: every input by name, in order, and the digits read from them.

    Attributes:
        names: Every input, in the order its rows are written.
        digits: uint8 (N, 28, 28) digits of the inputs that could be read.
        positions: For each digit, the position of its input in `names`.
        errors: Why each other input could not be read, by position in `names`.
    """

    names: list[str]
    digits: torch.Tensor
    positions: torch.Tensor
    errors: dict[int, str]


def read_digits(files: list[Path]) -> PredictInputs:
    """Each file as an MNIST-style digit, or the reason it cannot be one."""
    digits, positions, errors = [], [], {}
    for position, path in enumerate(tqdm(files, desc="Reading images", disable=len(files) < 200)):
        try:
            digits.append(load_digit(path))
            positions.append(position)
        except ImageError as error:
            errors[position] = str(error)
    stacked = np.stack(digits) if digits else np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
    names = [printable(f) for f in files]
    return PredictInputs(names, torch.from_numpy(stacked), torch.tensor(positions), errors)


def printable(path: Path) -> str:
    """The path as text that can be written as UTF-8: bytes of a name that are not UTF-8 are
    written as backslash escapes (b'\\xff'), as Python's `backslashreplace` does."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


class PredictPathError(UserError, FileNotFoundError):
    """--data.predict_path names nothing that exists, or no images."""


def find_images(paths: list[str | Path]) -> list[Path]:
    """Files as given, and image files below folders (recursively), in a stable sorted order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise PredictPathError(f"--data.predict_path '{path}' does not exist")
    if not found:
        raise PredictPathError(
            f"no image files under --data.predict_path {[str(p) for p in paths]}"
        )
    return list(dict.fromkeys(found))  # each input exactly once, first mention first

"""Users' image files -> MNIST-style digits, and every way a file can be bad."""

import os
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_lit.images import MAX_PIXELS, ImageError, find_images, load_digit, read_digits
from tests.helpers import fake_digits


def mnist_like_digit() -> np.ndarray:
    """A stroke-shaped digit, bright on black, boxed and centred roughly like MNIST's."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[5:23, 12:16] = 255  # a "1" with a foot
    digit[20:23, 9:19] = 200
    return digit


def centre_of_mass(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(digit.shape)
    weight = digit.astype(float)
    return np.array([(rows * weight).sum(), (cols * weight).sum()]) / weight.sum()


def test_28x28_digits_keep_every_pixel(tmp_path):
    digit = fake_digits(1, seed=4)[0][0].astype(np.uint8)
    Image.fromarray(digit).save(tmp_path / "plain.png")
    Image.fromarray(255 - digit).save(tmp_path / "inverted.png")
    assert np.array_equal(load_digit(tmp_path / "plain.png"), digit)
    assert np.array_equal(load_digit(tmp_path / "inverted.png"), digit)


def test_large_dark_on_light_digit_is_boxed_and_centred(tmp_path):
    # black ink on white paper, 5x larger and off-centre on a wide page
    page = np.full((300, 500), 255, dtype=np.uint8)
    big = np.kron(255 - mnist_like_digit(), np.ones((5, 5), dtype=np.uint8))
    page[20:160, 300:440] = big
    Image.fromarray(page).save(tmp_path / "scan.png")
    digit = load_digit(tmp_path / "scan.png")
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.nonzero(digit > 50)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)  # the longer side fits the 20 box
    assert np.abs(centre_of_mass(digit) - 14).max() <= 0.75  # where MNIST puts it
    assert digit.max() == 255 and np.median(digit) == 0  # bright digit on black


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "CMYK", "I;16", "1"])
def test_every_common_image_mode_gives_the_same_digit(tmp_path, mode):
    ink = np.kron(mnist_like_digit() > 0, np.ones((3, 3), dtype=bool))  # 84x84 digit
    gray = np.where(ink, 0, 255).astype(np.uint8)  # black on white
    reference = Image.fromarray(gray)
    reference.save(tmp_path / "L.png")
    if mode in ("RGBA", "LA"):  # black ink on a transparent background
        alpha = np.where(ink, 255, 0).astype(np.uint8)
        image = Image.merge("LA", [Image.fromarray(np.zeros_like(gray)), Image.fromarray(alpha)])
        image = image.convert(mode)
    elif mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit grayscale
    else:
        image = reference.convert(mode)
    path = tmp_path / f"digit.{'tif' if mode == 'CMYK' else 'png'}"
    image.save(path)
    difference = load_digit(path).astype(int) - load_digit(tmp_path / "L.png").astype(int)
    assert np.abs(difference).max() <= 2, mode


def black_on_white() -> Image.Image:
    ink = np.kron(mnist_like_digit() > 0, np.ones((3, 3), dtype=bool))  # 84x84 digit
    return Image.fromarray(np.where(ink, 0, 255).astype(np.uint8))


def test_photos_are_read_upright_by_their_exif_orientation(tmp_path):
    upright = black_on_white()
    upright.save(tmp_path / "upright.jpg", quality=100)
    # a phone's photo: the pixels stored turned a quarter left, with the tag that says "turn
    # right to view" (orientation 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.rotate(90, expand=True).save(tmp_path / "phone.jpg", quality=100, exif=exif)
    upright.rotate(90, expand=True).save(tmp_path / "sideways.jpg", quality=100)
    reference = load_digit(tmp_path / "upright.jpg").astype(int)
    assert np.abs(load_digit(tmp_path / "phone.jpg").astype(int) - reference).max() <= 8
    assert np.abs(load_digit(tmp_path / "sideways.jpg").astype(int) - reference).max() > 200


@pytest.mark.parametrize("kind", ["16-bit PNG holding 0-255", "float TIFF holding 0-255"])
def test_wide_files_holding_8_bit_values_are_read_as_such(tmp_path, kind):
    gray = np.where(np.asarray(black_on_white()) > 0, 230, 40).astype(np.uint8)  # grey ink
    Image.fromarray(gray).save(tmp_path / "reference.png")
    wide = gray.astype(np.uint16 if "PNG" in kind else np.float32)
    path = tmp_path / ("wide.png" if "PNG" in kind else "wide.tif")
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode in ("I;16", "I", "F")  # really a wide mode
    assert np.array_equal(load_digit(path), load_digit(tmp_path / "reference.png"))


def test_nan_pixels_and_files_that_are_not_regular_are_one_image_error(tmp_path):
    pixels = np.asarray(black_on_white(), dtype=np.float32) / 255
    pixels[3, 3] = np.nan
    Image.fromarray(pixels).save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_digit(tmp_path / "nan.tif")
    os.mkfifo(tmp_path / "pipe.png")  # opening it to read would wait for a writer forever
    assert tmp_path / "pipe.png" in find_images([tmp_path])
    with pytest.raises(ImageError, match="not a regular file"):
        load_digit(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match="^no such file$"):
        load_digit(tmp_path / "missing.png")


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims another size (checksums fixed)."""
    import io

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_bad_files_raise_image_error_naming_the_problem(tmp_path):
    Image.fromarray(mnist_like_digit()).resize((200, 200)).save(tmp_path / "good.png")
    complete = (tmp_path / "good.png").read_bytes()
    cases = {
        "truncated.png": (complete[: len(complete) // 2], "corrupt or truncated"),
        "random.png": (np.random.default_rng(0).bytes(5000), "not a readable image"),
        "notes.txt": (b"this is not an image\n", "not a readable image"),
        "blank.png": (None, "blank"),
        "bomb.png": (png_with_size(100_000, 100_000), "limit"),
    }
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    for name, (payload, reason) in cases.items():
        if payload is not None:
            (tmp_path / name).write_bytes(payload)
        started = time.perf_counter()
        with pytest.raises(ImageError, match=reason):
            load_digit(tmp_path / name)
        assert time.perf_counter() - started < 1.0, f"{name} was decoded"
    assert MAX_PIXELS < 100_000 * 100_000


def test_find_images_walks_folders_once_in_sorted_order(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ("b/deep/z.png", "b/a.JPG", "c.png", "b/notes.md"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([tmp_path / "b", tmp_path / "c.png", tmp_path / "b" / "a.JPG"])
    assert found == [tmp_path / "b/a.JPG", tmp_path / "b/deep/z.png", tmp_path / "c.png"]


def test_missing_path_and_empty_folder_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        find_images([tmp_path / "empty"])


MODES = ["L", "RGB", "RGBA", "LA", "P", "1", "CMYK", "I;16", "I", "F"]
FORMATS = {"png": ["L", "RGB", "RGBA", "LA", "P", "1", "I;16"], "jpeg": ["L", "RGB", "CMYK"],
           "tiff": MODES, "bmp": ["L", "RGB", "P", "1"]}  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image_format=st.sampled_from(sorted(FORMATS)),
    mode_index=st.integers(0, len(MODES) - 1),
    size=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    value_range=st.sampled_from([1.0, 255.0, 65535.0, float("nan")]),
    orientation=st.integers(0, 8),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    seed=st.integers(0, 2**16),
)
def test_any_image_file_gives_one_digit_or_one_reason(
    tmp_path_factory, image_format, mode_index, size, value_range, orientation, cut, seed
):
    """Whatever the file (mode, size, range of values, EXIF orientation, cut short), reading it
    gives exactly one row's worth: a digit, or the reason there is none; never an exception."""
    folder = tmp_path_factory.mktemp("any")
    modes = FORMATS[image_format]
    mode = modes[mode_index % len(modes)]
    values = np.random.default_rng(seed).random(size[::-1]) * value_range
    if mode == "F":
        image = Image.fromarray(values.astype(np.float32))
    else:
        image = Image.fromarray(np.nan_to_num(values).clip(0, 255).astype(np.uint8)).convert(mode)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    path = folder / f"image.{image_format}"
    image.save(path, exif=exif) if image_format in ("png", "jpeg", "tiff") else image.save(path)
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])
    inputs = read_digits([path])
    assert len(inputs.digits) + len(inputs.errors) == 1
    assert inputs.digits.shape[1:] == (28, 28) and inputs.digits.dtype == torch.uint8
    if mode == "F" and np.isnan(values).any() and cut is None:
        assert list(inputs.errors.values()) == ["NaN or infinite pixel values"]  # no made-up digit

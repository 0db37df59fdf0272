"""The Python API (reader.py) and `mnist-lit demo`: digits drawn with real pointer strokes in
headless Chromium are read, uploads get the API's answer or a message, and the page asks nothing
of the internet. The browser tests need Debian's `chromium` (`.ci/run` installs it), Playwright
and Gradio (`pip install -e ".[dev]"`), and MNIST in ../shared/data for a model that reads."""

import json
import re
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lit.__main__ import main
from mnist_lit.images import MAX_PIXELS, ImageError
from mnist_lit.inference.reader import DigitReader
from mnist_lit.training.checkpoint_io import CheckpointError
from tests.helpers import REAL_DATA, find_chromium


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_run) -> Path:
    return tiny_run[0] / "checkpoints" / "best.ckpt"


def test_files_images_and_arrays_are_read_alike(tiny_checkpoint, tmp_path):
    reader = DigitReader(tiny_checkpoint)
    rng = np.random.default_rng(0)
    digit = np.zeros((28, 28), np.uint8)
    digit[5:23, 12:16] = 255  # a bar, in MNIST's layout already
    digit = np.clip(digit + rng.integers(0, 30, digit.shape), 0, 255).astype(np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    readings = [
        reader.read(tmp_path / "digit.png"),
        reader.read(str(tmp_path / "digit.png")),
        reader.read(Image.fromarray(digit)),
        reader.read(digit),
        reader.read(digit.astype(np.float32) / 255),
        reader.read(np.stack([digit] * 3, axis=-1)),
    ]
    for reading in readings:
        np.testing.assert_array_equal(reading.digit, digit)  # what the network received
        np.testing.assert_allclose(reading.probs, readings[0].probs, atol=1e-6)
        assert reading.label == int(np.argmax(reading.probs))
        assert reading.probs.shape == (10,) and reading.probs.sum() == pytest.approx(1, abs=1e-5)
    batch = reader.read_digits(np.stack([digit, 255 - digit]))
    np.testing.assert_allclose(batch[0].probs, readings[0].probs, atol=1e-6)
    assert not np.allclose(batch[1].probs, readings[0].probs)  # each image its own reading


@pytest.mark.parametrize(
    ("image", "said"),
    [
        (np.zeros((28, 28), np.int64), "expected (H, W) uint8"),
        (np.zeros((28, 28, 2), np.uint8), "expected (H, W) uint8"),
        (np.full((28, 28), 2.0, np.float32), "values in [0, 1]"),
        (np.zeros((0, 28), np.uint8), "expected (H, W) uint8"),
        (np.full((40, 40), 255, np.uint8), "blank"),
        ([[0, 255]], "not an image: a list"),
    ],
    ids=["int64", "two channels", "float over 1", "empty", "blank", "a list"],
)
def test_what_cannot_be_read_is_an_image_error_saying_why(tiny_checkpoint, image, said):
    with pytest.raises(ImageError, match=re.escape(said)):
        DigitReader(tiny_checkpoint).read(image)


@pytest.mark.parametrize(
    "digits",
    [
        np.full((2, 28, 28), 0.5, np.float32),  # images in [0, 1]: all read as one digit before
        np.full((1, 28, 28), np.nan),
        np.ones((1, 28, 28), bool),
        np.zeros((28, 28), np.uint8),  # one digit without its batch axis
        np.zeros((1, 32, 32), np.uint8),
        np.zeros((0, 28, 28), np.uint8),
        [[[0] * 28] * 28],
    ],
    ids=["float", "nan", "bool", "no batch axis", "32x32", "none", "a list"],
)
def test_read_digits_takes_mnists_layout_alone(tiny_checkpoint, digits):
    with pytest.raises(ImageError, match=re.escape("read_digits takes uint8 (N, 28, 28) digits")):
        DigitReader(tiny_checkpoint).read_digits(digits)


def test_images_over_the_pixel_limit_are_refused_before_reading(tiny_checkpoint):
    reader = DigitReader(tiny_checkpoint)
    wide = np.broadcast_to(np.zeros(1, np.uint8), (10, MAX_PIXELS // 10 + 1))  # no memory used
    with pytest.raises(ImageError, match="over the 50,000,000 limit"):
        reader.read(wide)
    with pytest.raises(ImageError, match="over the 50,000,000 limit"):
        reader.read(Image.new("L", (10_000, 5_001)))


def test_checkpoints_by_name_by_run_folder_or_file(tiny_run_copy, tmp_path):
    best = tiny_run_copy / "checkpoints" / "best.ckpt"
    runs = tiny_run_copy.parent
    assert DigitReader(tiny_run_copy).checkpoint == best
    assert DigitReader("best", runs=runs).checkpoint == best
    assert DigitReader("last", runs=runs).checkpoint == best.with_name("last.ckpt")
    with pytest.raises(CheckpointError, match="no .*best.ckpt was found"):
        DigitReader("best", runs=tmp_path)
    with pytest.raises(CheckpointError, match="is a folder"):
        DigitReader(tmp_path)  # a folder that is no run


def test_a_bad_checkpoint_is_one_line_before_any_server(workdir, capsys):
    (workdir / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(2000))
    for checkpoint in ("missing.ckpt", "random.ckpt", "last"):
        with pytest.raises(SystemExit) as exit_:
            main(["demo", f"--ckpt_path={checkpoint}", "--port=1"])  # port 1: never reached
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("device", ["banana", "cuda:7"])
def test_a_device_that_is_not_here_is_one_line(tiny_checkpoint, device, capsys):
    pytest.importorskip("gradio")
    with pytest.raises(SystemExit) as exit_:
        main(["demo", f"--ckpt_path={tiny_checkpoint}", f"--device={device}", "--port=1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --device {device}: ") and len(err.splitlines()) == 1, err


def test_without_gradio_the_demo_says_how_to_install_it(tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if it were not installed
    with pytest.raises(SystemExit) as exit_:
        main(["demo", f"--ckpt_path={tiny_checkpoint}"])
    assert exit_.value.code == 1
    assert 'pip install -e ".[demo]"' in capsys.readouterr().err


def test_a_port_in_use_is_one_line(tiny_checkpoint, capsys):
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(["demo", f"--ckpt_path={tiny_checkpoint}", f"--port={port}"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port}") and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_with_130_and_no_files_left(tiny_checkpoint, tmp_path):
    pytest.importorskip("gradio")
    from tests.inference.browser import serving_demo

    temp = tmp_path / "tmp"  # the demo's temporary folders, and Gradio's, go here
    temp.mkdir()
    with serving_demo(tiny_checkpoint, tmp_path, env={"TMPDIR": str(temp)}) as (url, server):
        stored = upload_over_http(url, b"\x89PNG not really")  # Gradio keeps it as a file
        assert any(path.name == stored.name for path in temp.rglob("*"))
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 130
    log = next(tmp_path.glob("demo-*.log")).read_text()
    assert f"Demo of {tiny_checkpoint}: {url}" in log and "Stopped by Ctrl-C" in log
    assert list(temp.iterdir()) == []


def upload_over_http(url: str, content: bytes) -> Path:
    """Gradio's upload route, as the page uses it; the path it stored the file under."""
    boundary = "mnist-lit-test"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="digit.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        (stored,) = json.loads(answer.read())
    return Path(stored)


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reading_model(real_run) -> Path:
    """A model that reads: fast.yaml's epoch on the real MNIST, about 99% right."""
    return real_run[1] / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def demo_page(reading_model):
    pytest.importorskip("gradio")
    pytest.importorskip("playwright")
    from tests.inference import browser

    if find_chromium() is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    with (
        browser.serving_demo(reading_model, reading_model.parents[3]) as (url, _),
        browser.chromium_page(url) as page,
    ):
        yield page, url


@pytest.mark.slow
def test_a_drawn_one_and_seven_are_read(demo_page):
    from tests.inference.browser import clear, read_drawn

    page, _ = demo_page
    for digit in (1, 7):
        assert read_drawn(page, digit).startswith(f"Read as {digit} (")
        # the ten probabilities as bars, and the 28x28 image the network received
        bars = page.locator("#probs").inner_text()
        assert all(str(k) in bars for k in range(10)) and "%" in bars
        assert page.locator("#network_input img").count() == 1
        clear(page)
        assert page.locator("#network_input img").count() == 0


@pytest.mark.slow
def test_an_upload_is_read_as_the_python_api_reads_it(demo_page, reading_model, tmp_path):
    from torchvision.datasets import MNIST

    from tests.inference.browser import upload

    page, _ = demo_page
    reader = DigitReader(reading_model)
    test_set = MNIST(str(REAL_DATA), train=False)
    for index in (0, 1, 2):  # as scans: dark ink on light paper, larger, off centre
        digit = 255 - test_set.data[index].numpy()
        scan = Image.new("L", (160, 130), 255)
        scan.paste(Image.fromarray(digit).resize((84, 84)), (20, 30))
        path = tmp_path / f"scan_{index}.png"
        scan.save(path)
        expected = reader.read(path)
        assert upload(page, path) == f"Read as {expected.label} ({expected.confidence:.1%})"


@pytest.mark.slow
def test_bad_uploads_get_a_message_and_the_page_serves_on(demo_page, tmp_path):
    from tests.inference.browser import upload

    page, _ = demo_page
    Image.new("L", (200, 200), 255).save(tmp_path / "blank.png")
    Image.new("L", (8000, 8000), 0).save(tmp_path / "huge.png")  # 64 MP in 62 KB
    (tmp_path / "notes.txt").write_text("not an image\n")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:2000])
    said = {
        "blank.png": "no digit found: the image is blank",
        "huge.png": "8000x8000 pixels is over the 50,000,000 limit",
        "notes.txt": "not a readable image",
        "cut.png": "corrupt or truncated image",
    }
    for name, reason in said.items():
        message = upload(page, tmp_path / name)
        assert message.startswith(f"{name} cannot be read: ") and reason in message, message
    Image.new("L", (100, 100), 255).save(tmp_path / "bar.png")
    bar = Image.open(tmp_path / "bar.png")
    bar.paste(0, (45, 10, 55, 90))
    bar.save(tmp_path / "bar.png")
    assert upload(page, tmp_path / "bar.png").startswith("Read as ")  # still serving


@pytest.mark.slow
def test_the_page_asks_nothing_of_the_internet(demo_page):
    page, url = demo_page
    page.reload()
    page.wait_for_selector("#sketchpad canvas", timeout=60_000)
    hosts = {request.split("/")[2] for request in page.requested if "://" in request}
    assert hosts == {url.removeprefix("http://")}, hosts

"""The demo driven as a user drives it: the page served by `mnist-lit demo` in a subprocess,
headless Chromium (Debian's `chromium`, through Playwright), digits drawn with pointer strokes.
Used by tests/test_demo.py and benchmarks/demo_digits.py."""

import re
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from mnist_lit.inference.demo import PROMPT
from tests.helpers import free_port, headless_page, module_command, module_env


def arc(cx, cy, rx, ry, start, end, points=16) -> list[tuple[float, float]]:
    """Points along an ellipse, angles in turns (0 = right, 0.25 = down: y grows downwards)."""
    turns = np.linspace(start, end, points) * 2 * np.pi
    return [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in turns]


# Each digit as pointer strokes in a unit square (x right, y down), written as people write them
DIGIT_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [arc(0.5, 0.5, 0.22, 0.34, -0.25, 0.77, 28)],
    1: [[(0.56, 0.15), (0.47, 0.86)]],
    2: [arc(0.5, 0.33, 0.21, 0.18, -0.45, 0.1, 12) + [(0.29, 0.84), (0.76, 0.84)]],
    3: [arc(0.48, 0.32, 0.2, 0.16, -0.42, 0.25, 12) + arc(0.48, 0.66, 0.23, 0.18, -0.25, 0.42, 14)],
    4: [[(0.33, 0.14), (0.28, 0.58), (0.76, 0.58)], [(0.64, 0.16), (0.64, 0.88)]],
    5: [[(0.72, 0.15), (0.36, 0.15), (0.33, 0.46)] + arc(0.5, 0.64, 0.22, 0.2, -0.4, 0.4, 14)],
    6: [[(0.64, 0.14), (0.42, 0.36)] + arc(0.5, 0.66, 0.2, 0.2, 0.5, 1.5, 24)],
    7: [[(0.27, 0.17), (0.73, 0.17), (0.45, 0.86)]],
    8: [[(0.5 - 0.2 * np.sin(2 * t), 0.5 - 0.34 * np.cos(t)) for t in np.linspace(0, 6.3, 40)]],
    9: [arc(0.5, 0.33, 0.19, 0.18, 0.0, 1.0, 24) + [(0.67, 0.4), (0.62, 0.87)]],
}


@contextmanager
def serving_demo(checkpoint: Path, cwd: Path, timeout: float = 120.0, env: dict | None = None):
    """`python -m mnist_lit demo` on a free local port; yields its address and process once it
    answers and has printed its address (Gradio answers from its own thread a moment before
    `launch` returns). The process takes Ctrl-C (SIGINT) as from a terminal, even where this one
    ignores it (started in the background by a shell)."""
    port = free_port()
    command = module_command("demo", f"--ckpt_path={checkpoint}", f"--port={port}")
    log = cwd / f"demo-{port}.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            command,
            cwd=cwd,
            env={**module_env(), **(env or {})},
            stdout=output,
            stderr=output,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200 and "(Ctrl-C stops it)" in log.read_text():
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def chromium_page(url: str):
    """The demo's page in headless Chromium (helpers.headless_page), once its sketchpad is
    ready, with the brush chosen."""
    with headless_page(url) as page:
        page.wait_for_selector("#sketchpad canvas", timeout=60_000)
        brush_chosen(page)
        yield page


# what the page says once it has read an image: its reading, or why it could not
ANSWER = r"^(Read as \d \([0-9.]+%\)|.+ cannot be read: .+)$"
ASKING = f"^{re.escape(PROMPT)}$"


def settled(page, pattern: str, timeout: float = 30_000) -> str:
    """The page's reading once all of it matches `pattern` (a regex, JavaScript's and Python's
    alike), taken in the same instant: Gradio's progress text ("processing | 0.1s") comes and
    goes above it while the server works."""
    found = page.wait_for_function(
        """pattern => {
            const text = document.querySelector('#reading').innerText.trim();
            return new RegExp(pattern, 's').test(text) ? text : false;
        }""",
        arg=pattern,
        timeout=timeout,
    )
    return found.json_value()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draws the strokes on the sketchpad with the mouse. The canvas's drawing area is a square
    in the middle of the canvas element: the strokes go in its middle 80%."""
    box = page.locator("#sketchpad canvas").first.bounding_box()
    side = 0.8 * min(box["width"], box["height"])
    left = box["x"] + (box["width"] - side) / 2
    top = box["y"] + (box["height"] - side) / 2
    for stroke in strokes:
        (x, y), *rest = stroke
        page.mouse.move(left + x * side, top + y * side)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(left + x * side, top + y * side, steps=2)
        page.mouse.up()


def read_drawn(page, digit: int, timeout: float = 30_000) -> str:
    """Draws `digit` and returns what the page reads: `Read as {digit} (...)` as soon as it says
    so, or else its answer once `timeout` ms have passed. (The page reads after each stroke, so
    a digit of two strokes is read twice; the answer to wait for is the last one.)"""
    page.get_by_role("tab", name="Draw").click()
    draw(page, DIGIT_STROKES[digit])
    with suppress(PlaywrightTimeout):
        return settled(page, rf"^Read as {digit} \([0-9.]+%\)$", timeout)
    return settled(page, ANSWER)


def brush_chosen(page) -> None:
    """Waits until the page has chosen the brush (demo.CHOOSE_BRUSH)."""
    page.wait_for_selector('#sketchpad button[aria-label="Brush"].highlight', timeout=30_000)


def clear(page) -> None:
    """Empties the canvas with its own Clear button; the page asks for a digit again."""
    page.get_by_role("button", name="Clear canvas").click()
    settled(page, ASKING)
    brush_chosen(page)


def upload(page, path: Path) -> str:
    """Uploads the file in the Upload tab (after clearing the one before) and returns the
    page's answer."""
    page.get_by_role("tab", name="Upload").click()
    earlier = page.locator('#upload button[aria-label="Clear"]')
    if earlier.count():
        earlier.click()
    settled(page, ASKING)  # so that the answer below is this file's (a drawing: clear it first)
    page.locator("#upload input[type=file]").set_input_files(str(path))
    return settled(page, ANSWER)

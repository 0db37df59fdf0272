"""How many hand-drawn digits a checkpoint reads in `mnist-lit demo`: the digits 0-9 drawn on the
page with the browser tests' pointer strokes (tests/browser.py) in headless Chromium, one at a
time, each read as the page shows it; optionally a screenshot of the page after one of them.

    python benchmarks/demo_digits.py --ckpt_path CKPT [--screenshot docs/demo.png --shown 5]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the strokes and the browser driving are the tests' own

from tests.inference.browser import DIGIT_STROKES, chromium_page, clear, read_drawn, serving_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path, help="a PNG of the page after --shown")
    parser.add_argument("--shown", type=int, default=5, help="the digit in the screenshot")
    parser.add_argument("--output", type=Path, help="a JSON of the readings")
    options = parser.parse_args()
    readings = {}
    with (
        tempfile.TemporaryDirectory() as server_folder,  # the server's log
        serving_demo(options.ckpt_path.resolve(), Path(server_folder)) as (url, _),
        chromium_page(url) as page,
    ):
        for digit in DIGIT_STROKES:
            start = time.monotonic()
            readings[digit] = read_drawn(page, digit)
            seconds = time.monotonic() - start
            print(f"{digit}: {readings[digit]}  ({seconds:.1f} s)", flush=True)
            if options.screenshot and digit == options.shown:
                page.screenshot(path=str(options.screenshot), full_page=True)
            clear(page)
    right = sum(readings[d].startswith(f"Read as {d} ") for d in readings)
    print(f"{right} of {len(readings)} read right")
    if options.output:
        result = {"checkpoint": str(options.ckpt_path), "right": right, "readings": readings}
        options.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The signal tests (SIGTERM and Ctrl-C during `fit`, then resume) run again and again while
busy processes keep every core loaded, counting passes per signal: a timing race shows up here.

    python benchmarks/signal_stress.py --repeats 20 --hogs 4
"""

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = "tests/test_resume.py::test_signal_saves_last_checkpoint_and_resume_continues"


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--hogs", type=int, default=2 * (os.cpu_count() or 1))
    options = parser.parse_args()
    hogs = [multiprocessing.Process(target=spin, daemon=True) for _ in range(options.hogs)]
    for hog in hogs:
        hog.start()
    passed, failed, started = Counter(), Counter(), time.monotonic()
    try:
        for repeat in range(1, options.repeats + 1):
            command = [sys.executable, "-m", "pytest", TESTS, "-rA", "-q", "-p", "no:cacheprovider"]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            for outcome, case in re.findall(r"^(PASSED|FAILED) \S+\[(\S+)\]", done.stdout, re.M):
                (passed if outcome == "PASSED" else failed)[case] += 1
            if done.returncode:
                print(done.stdout[-3000:], flush=True)
            print(f"{repeat}: passed {dict(passed)} failed {dict(failed)}", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
    results = {
        "repeats": options.repeats,
        "busy_processes": options.hogs,
        "cores": os.cpu_count(),
        "passed": dict(passed),
        "failed": dict(failed),
        "seconds": round(time.monotonic() - started),
        "command": " ".join(sys.argv),
    }
    out = REPO / "benchmarks" / "results" / "signal_stress.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

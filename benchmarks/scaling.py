"""How the cost of `fit` grows with the batch size and with the epochs, each run a fresh process:

    python benchmarks/scaling.py --config configs/fast.yaml --data_dir ../shared/data

- by batch size (32 ... 512): `fit` with the config at that batch size over BATCH_IMAGES training
  images, validation and test off; training images/s from the run's metrics.json;
- by epochs (1, 2, 4): `fit` with the config for that many epochs (the one-cycle schedule
  stretches over them), validated and tested as a user runs it; training seconds and test
  accuracy from metrics.json.

Every run's peak resident memory is its process's own (ru_maxrss). Writes
benchmarks/results/scaling.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from train_speed import machine

BATCH_SIZES = (32, 64, 128, 256, 512)
EPOCHS = (1, 2, 4)
BATCH_IMAGES = 25_600  # enough steps at every batch size for a steady rate (50 at batch 512)

# The child: `mnist-lit fit` in-process, then its own peak memory on stdout's last line
CHILD = """
import json, resource, sys
from mnist_lit.__main__ import main
main(sys.argv[1:])
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1)}))
"""


def fit(flags: list[str]) -> dict:
    """One `fit` in a process of its own: its metrics.json and peak memory."""
    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-c", CHILD, "fit", *flags, f"--trainer.default_root_dir={root}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads(
            next(Path(root).glob("lightning_logs/version_0/metrics.json")).read_text()
        )
        return {**metrics, **json.loads(done.stdout.strip().splitlines()[-1])}


def run(config: str, data_dir: str) -> dict:
    base = [
        f"--config={config}",
        f"--data.data_dir={data_dir}",
        "--trainer.enable_progress_bar=false",
    ]
    by_batch = {}
    for batch_size in BATCH_SIZES:
        steps = BATCH_IMAGES // batch_size
        flags = [f"--data.batch_size={batch_size}", f"--trainer.limit_train_batches={steps}"]
        flags += [
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=0",
            "--test_after_fit=false",
        ]
        result = fit(base + flags)
        by_batch[batch_size] = {
            "train_images_per_second": result["train_images_per_second"],
            "steps": steps,
            "peak_rss_mib": result["peak_rss_mib"],
        }
        print(f"batch {batch_size}: {by_batch[batch_size]}", flush=True)
    by_epochs = {}
    for epochs in EPOCHS:
        result = fit(base + [f"--trainer.max_epochs={epochs}"])
        by_epochs[epochs] = {
            key: result[key]
            for key in ("train_seconds", "train_images_per_second", "test/acc", "peak_rss_mib")
        }
        print(f"{epochs} epochs: {by_epochs[epochs]}", flush=True)
    return {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(torch.device("cpu")),
        "config": config,
        "by_batch_size": by_batch,
        "by_epochs": by_epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/fast.yaml")
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    args = parser.parse_args()
    results = run(args.config, args.data_dir)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""A run's fingerprint, for changes that must not change what training computes (a regroup of
the code, a refactor): every logged per-step training loss, the validation accuracy and the
final weights, each as a SHA-256 of its exact bytes. Two runs with equal fingerprints computed
bitwise the same thing.

    python benchmarks/fingerprint.py RUN_FOLDER       # a finished run
    python benchmarks/fingerprint.py --train          # one deterministic epoch of base.yaml first

`--train` runs `fit --config configs/base.yaml --trainer.max_epochs 1 --trainer.deterministic
true --trainer.log_every_n_steps 1 --test_after_fit false` on ../shared/data in a temporary
folder, so that every step's loss is logged.
"""

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def scalar(events: EventAccumulator, *tags: str) -> np.ndarray:
    tag = next(t for t in tags if t in events.Tags()["scalars"])
    return np.array([e.value for e in events.Scalars(tag)], dtype=np.float32)


def fingerprint(run: Path) -> dict[str, str]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    losses = scalar(events, "loss/train_step", "train/loss_step")
    val_acc = scalar(events, "accuracy/val", "val/acc")
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    flat = torch.cat([w.flatten().float() for _, w in sorted(weights.items())]).numpy()
    return {
        "train_loss_steps": str(len(losses)),
        "train_loss_sha": digest(losses),
        "val_acc": " ".join(f"{v:.6f}" for v in val_acc),
        "weights_sha": digest(flat),
    }


def train(folder: Path, data_dir: Path) -> Path:
    command = [
        sys.executable, "-m", "mnist_lit", "fit", "--config", str(REPO / "configs/base.yaml"),
        "--data.data_dir", str(data_dir), "--trainer.max_epochs", "1",
        "--trainer.deterministic", "true", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
    ]  # fmt: skip
    subprocess.run(command, cwd=folder, check=True)
    return folder / "lightning_logs" / "version_0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a finished run folder")
    parser.add_argument("--train", action="store_true", help="train one epoch of base.yaml first")
    parser.add_argument("--data_dir", type=Path, default=REPO.parent / "shared" / "data")
    options = parser.parse_args()
    if options.train:
        with tempfile.TemporaryDirectory() as folder:
            printed = fingerprint(train(Path(folder), options.data_dir.resolve()))
    elif options.run:
        printed = fingerprint(options.run)
    else:
        parser.error("pass a run folder or --train")
    for key, value in printed.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()

"""What the training augmentations cost per step, beside the step they are part of:

    python benchmarks/augment_cost.py --data_dir ../shared/data

Times, in turn over ROUNDS rounds, the batch preparation of MNISTDataModule (uint8 to
normalised floats) with no augmentation, with best.yaml's shifts, rotations and scalings, and
with best_elastic.yaml's elastic field on top, at best.yaml's batch of 128 on real MNIST
images; and one bf16 training step of the network at that batch, for scale. Milliseconds per
batch, medians over the rounds. Writes benchmarks/results/augment_cost.json.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from train_speed import autocast_for, machine, plain_step

from mnist_lit.data import MNISTDataModule
from mnist_lit.model import CNN

AFFINE = {"augment_shift": 2.0, "augment_degrees": 10.0, "augment_scale": 0.1}
ELASTIC = {**AFFINE, "augment_elastic_alpha": 34.0, "augment_elastic_sigma": 4.0}


def preparation_ms(data: MNISTDataModule, batches: list[torch.Tensor]) -> float:
    class Training:  # on_after_batch_transfer augments only while the trainer trains
        training = True

    data.trainer = Training()
    labels = torch.zeros(len(batches[0]), dtype=torch.long)
    started = time.perf_counter()
    for images in batches:
        data.on_after_batch_transfer((images, labels), 0)
    return 1000 * (time.perf_counter() - started) / len(batches)


def step_ms(batches: list[torch.Tensor]) -> float:
    net = CNN(channels=(32, 64, 128), hidden=625, dropout=0.25).to(
        memory_format=torch.channels_last
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    autocast = autocast_for("bf16-mixed", torch.device("cpu"))
    labels = torch.zeros(len(batches[0]), dtype=torch.long)
    images = [
        b.float().div(255).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        for b in batches
    ]
    plain_step(net, optimizer, images[0], labels, autocast)  # warm-up
    started = time.perf_counter()
    for batch in images:
        plain_step(net, optimizer, batch, labels, autocast)
    return 1000 * (time.perf_counter() - started) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/augment_cost.json")
    args = parser.parse_args()
    digits = MNIST(args.data_dir, train=True, download=False).data
    batches = list(digits[: args.batch_size * args.batches].split(args.batch_size))
    contenders = {
        "none": lambda: preparation_ms(MNISTDataModule(), batches),
        "shifts, rotations, scalings": lambda: preparation_ms(MNISTDataModule(**AFFINE), batches),
        "+ elastic field": lambda: preparation_ms(MNISTDataModule(**ELASTIC), batches),
        "training step (bf16)": lambda: step_ms(batches[:10]),
    }
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, measure in contenders.items():
            torch.manual_seed(0)
            times[name].append(measure())
    results = {
        "machine": machine(torch.device("cpu")),
        "batch_size": args.batch_size,
        "ms_per_batch_median": {name: round(statistics.median(t), 3) for name, t in times.items()},
        "ms_per_batch_all": {name: [round(v, 3) for v in t] for name, t in times.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(results["machine"], f"batch {args.batch_size}")
    for name, median in results["ms_per_batch_median"].items():
        low, high = min(times[name]), max(times[name])
        print(f"{name:30} {median:8.3f} ms  ({low:.3f}-{high:.3f})")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

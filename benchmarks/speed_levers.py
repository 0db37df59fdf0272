"""What each speed lever is worth against fast.yaml's training step, one change at a time:

    python benchmarks/speed_levers.py --data_dir ../shared/data

The base is fast.yaml's plain training step (batch 64, bf16 autocast, channels_last, fused
Adam, no dropout, max-pool before ReLU, each batch scaled from uint8 as the datamodule does).
Every lever changes one thing. Each contender is built once (a compiled one compiles once,
outside the clock) and the contenders take turns, ROUNDS times, timing STEPS steps each turn;
a lever's gain is its images/s over the base's in the same round (paired: the machine's slow
and fast spells hit both), given as a mean with its 95% t-interval. Images/s are also given as a
share of what this machine's bf16 square matmuls would train (as lightning_overhead.py).
Writes benchmarks/results/speed_levers.json.
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from lightning_overhead import TRAINING_FLOP_PER_IMAGE, matmul_flops, named, write
from torch import nn
from torchvision.datasets import MNIST
from train_speed import autocast_for, machine

from mnist_lit.data import normalize
from mnist_lit.model import CNN
from mnist_lit.sweeps.significance import interval

BASE = dict(
    batch_size=64, bf16=True, channels_last=True, optimizer="fused", relu_first=False,
    prenormalised=False, compiled=False,
)  # fmt: skip
# name -> the one setting it changes
LEVERS = {
    "fast.yaml's step": {},
    "ReLU before max-pool (the article's order)": {"relu_first": True},
    "NCHW instead of channels_last": {"channels_last": False},
    "fp32 instead of bf16 autocast": {"bf16": False},
    "foreach Adam instead of fused": {"optimizer": "foreach"},
    "per-tensor Adam instead of fused": {"optimizer": "per-tensor"},
    "images scaled once into float channels_last": {"prenormalised": True},
    "torch.compile of network and loss": {"compiled": True},
    "batch 128": {"batch_size": 128},
    "batch 256": {"batch_size": 256},
    "batch 256 + torch.compile": {"batch_size": 256, "compiled": True},
}
WARMUP = 10


def relu_before_pool(block: nn.Sequential) -> nn.Sequential:
    """conv -> pool -> ReLU -> dropout reordered as the article has it: conv -> ReLU -> pool."""
    convolution, pool, relu, dropout = block
    return nn.Sequential(convolution, relu, pool, dropout)


class Contender:
    """One training setup over real MNIST, stepping on demand; `run(steps)` returns seconds."""

    def __init__(self, images, labels, settings: dict) -> None:
        torch.manual_seed(0)
        self.settings = settings
        self.memory_format = torch.channels_last if settings["channels_last"] else None
        net = CNN(channels=(32, 64, 128), hidden=625, dropout=0.0)
        if settings["relu_first"]:
            for name in ("layer1", "layer2", "layer3"):
                setattr(net, name, relu_before_pool(getattr(net, name)))
        if self.memory_format:
            net.to(memory_format=self.memory_format)
        kind = settings["optimizer"]
        self.optimizer = torch.optim.Adam(
            net.parameters(), lr=1e-3, fused=kind == "fused", foreach=kind == "foreach"
        )
        self.net, self.autocast = (
            net,
            autocast_for("bf16-mixed" if settings["bf16"] else "32-true", torch.device("cpu")),
        )
        self.loss = torch.compile(self._loss) if settings["compiled"] else self._loss
        if settings["prenormalised"]:
            images = self._layout(normalize(images))
        self.images, self.labels = images, labels
        self.order, self.position = torch.randperm(len(labels)), 0
        self.run(WARMUP)  # a compiled contender compiles here, off the clock

    def _layout(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.contiguous(memory_format=self.memory_format) if self.memory_format else batch

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return F.cross_entropy(self.net(images), labels)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.settings["batch_size"]
        if self.position + size > len(self.labels):
            self.order, self.position = torch.randperm(len(self.labels)), 0
        index = self.order[self.position : self.position + size]
        self.position += size
        images = self.images[index]
        if not self.settings["prenormalised"]:
            images = self._layout(normalize(images))
        return images, self.labels[index]

    def run(self, steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            loss = self.loss(*self._batch())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - started


def lever_rows(speeds: dict[str, list[float]], ceiling: float) -> dict:
    """Each lever's images/s, its share of the ceiling, and its gain over the base per round."""
    base, rows = speeds["fast.yaml's step"], {}
    for name, values in speeds.items():
        gain = [100 * (v / b - 1) for v, b in zip(values, base)]  # per round: paired
        low_high = interval(gain) if name != "fast.yaml's step" else None
        rows[name] = {
            "changes": LEVERS[name],
            "images_per_second_median": round(statistics.median(values), 1),
            "images_per_second_all": [round(v, 1) for v in values],
            "share_of_bf16_matmul": round(statistics.median(values) / ceiling, 3),
            "gain_percent_median": None if low_high is None else round(statistics.median(gain), 1),
            "gain_percent_mean": None if low_high is None else round(statistics.fmean(gain), 1),
            "gain_percent_95": None if low_high is None else [round(v, 1) for v in low_high],
        }
    return rows


def measure(data_dir: str, images_per_turn: int, rounds: int, only: list[str]) -> dict:
    train = MNIST(data_dir, train=True)
    contenders = {}
    for name in only:
        contenders[name] = Contender(train.data, train.targets, {**BASE, **LEVERS[name]})
        print(f"built {name}", flush=True)
    speeds: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(rounds):
        for name, contender in contenders.items():
            size = contender.settings["batch_size"]
            steps = max(1, images_per_turn // size)
            speeds[name].append(steps * size / contender.run(steps))
        print(f"round {round_number + 1}: " + ", ".join(f"{v[-1]:.0f}" for v in speeds.values()))
    ceiling = matmul_flops(torch.bfloat16) / TRAINING_FLOP_PER_IMAGE
    rows = lever_rows(speeds, ceiling)
    return {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(torch.device("cpu")),
        "bf16_matmul_images_per_second": round(ceiling, 1),
        "base": BASE,
        "images_per_turn": images_per_turn,
        "rounds": rounds,
        "levers": rows,
    }


def report(results: dict) -> str:
    lines = [
        f"{results['machine']}",
        f"bf16 matmul ceiling: {results['bf16_matmul_images_per_second']}",
    ]
    lines.append(f"{'':52} {'images/s':>9} {'share':>6} {'gain %, median':>14} {'mean [95%]':>22}")
    for name, row in results["levers"].items():
        bounds = row["gain_percent_95"]
        gain = "" if row["gain_percent_mean"] is None else f"{row['gain_percent_mean']:+}"
        gain += f" [{bounds[0]:+}, {bounds[1]:+}]" if bounds else ""
        median = "" if row["gain_percent_median"] is None else f"{row['gain_percent_median']:+}"
        lines.append(
            f"{name:52} {row['images_per_second_median']:>9} "
            f"{row['share_of_bf16_matmul']:>6} {median:>14} {gain:>22}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--images", type=int, default=16384, help="images a contender's turn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(LEVERS), help="levers, by name")
    parser.add_argument("--out", default="benchmarks/results/speed_levers.json")
    args = parser.parse_args()
    only = named(parser, args.only, list(LEVERS))
    results = measure(args.data_dir, args.images, args.rounds, only)
    write(results, args.out, report(results))


if __name__ == "__main__":
    main()

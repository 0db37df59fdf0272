"""What each speed choice is worth, one at a time, on a plain training step over real MNIST:

    python benchmarks/ingredients.py --data_dir ../shared/data

A ladder of training settings, each adding one choice to the row above (images/s over 6 s after
10 warm-up steps), then inference images/s by batch size, precision and torch.compile. Writes
benchmarks/results/ingredients.json.
"""

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from train_speed import autocast_for, inference_speed, machine, plain_step

from mnist_lit.data import normalize
from mnist_lit.model import CNN
from mnist_lit.module import MNISTClassifier

# (name, batch size, fused Adam, channels_last, bf16, dropout): each row adds one change
LADDER = [
    ("article: batch 32, fp32, NCHW, per-tensor Adam", 32, False, False, False, 0.3),
    ("+ fused Adam", 32, True, False, False, 0.3),
    ("+ channels_last", 32, True, True, False, 0.3),
    ("+ batch 128", 128, True, True, False, 0.3),
    ("+ bf16 autocast", 128, True, True, True, 0.3),
    ("+ no dropout", 128, True, True, True, 0.0),
    ("batch 64 (fast.yaml's settings)", 64, True, True, True, 0.0),
]


def training_speed(images, labels, batch_size, fused, channels_last, bf16, dropout) -> float:
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = CNN(channels=(32, 64, 128), hidden=625, dropout=dropout).to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)
    autocast = autocast_for("bf16-mixed" if bf16 else "32-true", torch.device("cpu"))
    order = torch.randperm(len(labels))
    step, done, started = 0, 0, None
    while started is None or time.perf_counter() - started < 6.0:
        index = order[(step * batch_size) % (len(labels) - batch_size) :][:batch_size]
        batch = normalize(images[index]).contiguous(memory_format=memory_format)
        plain_step(net, optimizer, batch, labels[index], autocast)
        step += 1
        if step == 10:
            started = time.perf_counter()
        elif step > 10:
            done += batch_size
    return round(done / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--out", default="benchmarks/results/ingredients.json")
    args = parser.parse_args()
    train, test = MNIST(args.data_dir, train=True), MNIST(args.data_dir, train=False)
    results = {"machine": machine(torch.device("cpu")), "training_images_per_second": {}}
    for name, *settings in LADDER:
        speed = training_speed(train.data, train.targets, *settings)
        results["training_images_per_second"][name] = speed
        print(f"{speed:>9} images/s  {name}", flush=True)
    net = CNN(channels=(32, 64, 128), hidden=625, dropout=0.3).eval()
    net = net.to(memory_format=torch.channels_last)
    inference = {}
    for batch_size in (64, 256, 1024):
        inference[f"fp32 batch {batch_size}"] = inference_speed(
            net, test.data, nullcontext, batch_size
        )
    inference["fp32 batch 4096"] = inference_speed(net, test.data, nullcontext, 4096)
    # the module evaluates in chunks of CPU_EVAL_CHUNK images, as test, validate and predict do
    module = MNISTClassifier().eval()
    for batch_size in (1024, 4096):
        inference[f"fp32 batch {batch_size}, MNISTClassifier in chunks"] = inference_speed(
            module, test.data, nullcontext, batch_size
        )
    inference["bf16 batch 1024"] = inference_speed(
        net, test.data, autocast_for("bf16-mixed", torch.device("cpu"))
    )
    inference["fp32 batch 1024, torch.compile"] = inference_speed(
        torch.compile(net), test.data, nullcontext
    )
    for name, speed in inference.items():
        print(f"{speed:>9} images/s  inference {name}", flush=True)
    results["inference_images_per_second"] = inference
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

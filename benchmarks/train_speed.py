"""Training speed side by side, in one process, on the real MNIST files:

- `article`: the article's loop (torchvision MNIST + ToTensor, DataLoader(batch_size=32,
  shuffle=True), Adam 1e-3, fp32), the reference;
- `plain`: a plain PyTorch loop with the config's settings (batch size, epochs, precision, layout,
  schedule, dropout) fed from tensors in memory, the limit;
- `fit`: `mnist-lit fit` with the config, as a user runs it (logger, checkpoints, progress bar).

    python benchmarks/train_speed.py --config configs/fast.yaml --data_dir ../shared/data
    python benchmarks/train_speed.py --config configs/base.yaml --data_dir ../shared/data \
        --article_epochs 1 --trainer.max_epochs 1

Arguments it does not know go to `mnist-lit fit` (and set the plain loop's settings too). It
prints, and writes as JSON (--out), each contender's steady training images/s (the first 20
steps left out), training seconds, test accuracy after every epoch (full test set, clock paused),
seconds of training to 99.0% test accuracy, final accuracy and peak memory; the ratios; and the
trained model's inference images/s at batch 1024.
"""

import argparse
import json
import platform
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from mnist_lit.cli import make_cli
from mnist_lit.data import normalize
from mnist_lit.model import CNN
from mnist_lit.module import one_cycle

TARGET_ACCURACY = 0.99
WARMUP_STEPS = 20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingClock:
    """Seconds and images of training steps; evaluation is paused out and the first
    WARMUP_STEPS are left out of the steady rate."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.steps, self.seconds = device, 0, 0.0
        self.steady_images, self.steady_seconds = 0, 0.0
        self.checks: list[dict] = []
        self._last = time.perf_counter()

    def step(self, images: int) -> None:
        self.steps += 1
        if self.steps == WARMUP_STEPS:
            synchronize(self.device)
        elapsed = time.perf_counter() - self._last
        self._last += elapsed
        self.seconds += elapsed
        if self.steps > WARMUP_STEPS:
            self.steady_images += images
            self.steady_seconds += elapsed

    def pause(self) -> None:
        synchronize(self.device)  # queued GPU work belongs to the steps before

    def resume(self) -> None:
        self._last = time.perf_counter()

    def check(self, epoch: int, accuracy: float) -> None:
        self.checks.append(
            {"epoch": epoch, "train_seconds": round(self.seconds, 2), "test_acc": accuracy}
        )

    def summary(self) -> dict:
        reached = [c["train_seconds"] for c in self.checks if c["test_acc"] >= TARGET_ACCURACY]
        return {
            "steady_images_per_second": round(self.steady_images / self.steady_seconds, 1),
            "train_seconds": round(self.seconds, 2),
            "seconds_to_99": reached[0] if reached else None,
            "final_test_acc": self.checks[-1]["test_acc"] if self.checks else None,
            "test_acc_per_epoch": self.checks,
        }


class PeakMemory:
    """Peak memory while a contender runs: the GPU's allocator peak, or the process's resident
    memory sampled every 10 ms on CPU (it includes the process's baseline)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._running = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        page = 4096
        while self._running:
            resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
            self.peak = max(self.peak, resident_pages * page)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._running = False
            self._sampler.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


@torch.inference_mode()
def test_accuracy(net, images, labels, preprocess, autocast, batch_size: int = 1000) -> float:
    """Fraction of the uint8 test images `net` labels right, in eval mode."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        with autocast():
            logits = net(preprocess(images[start : start + batch_size].to(device)))
        correct += (logits.argmax(1) == labels[start : start + batch_size].to(device)).sum()
    net.train(was_training)
    return round(correct.item() / len(labels), 4)


@torch.inference_mode()
def inference_speed(net, images, autocast, batch_size: int = 1024, seconds: float = 3.0) -> float:
    """Images/s of `net`'s forward pass on preprocessed batches already on the device."""
    net.eval()
    device = next(net.parameters()).device
    batches = [normalize(images[i : i + batch_size].to(device)) for i in range(0, 8192, batch_size)]
    with autocast():
        net(batches[0])  # warm-up: oneDNN/cuDNN pick their kernels
        synchronize(device)
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            for batch in batches:
                net(batch)
            synchronize(device)
            done += batch_size * len(batches)
    return round(done / (time.perf_counter() - started), 1)


def autocast_for(precision: str, device: torch.device):
    if precision.startswith("bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if precision in ("32", "32-true"):
        return nullcontext
    raise SystemExit(f"the plain loop supports precision 32-true and bf16-mixed, not {precision}")


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) in [0, 1]: what ToTensor gives the article."""
    return images.unsqueeze(1).float() / 255


def article_loop(data_dir: str, test: tuple, device: torch.device, max_epochs: int) -> dict:
    """The article's training, stopped once it reaches the target accuracy."""
    clock = TrainingClock(device)
    net = CNN(channels=(32, 64, 128), hidden=625, dropout=0.3).to(device)  # the article's
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(
        MNIST(data_dir, train=True, transform=ToTensor()), batch_size=32, shuffle=True
    )
    for epoch in range(1, max_epochs + 1):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(net(images), labels)
            loss.backward()
            optimizer.step()
            clock.step(len(labels))
        clock.pause()
        clock.check(epoch, test_accuracy(net, *test, to_unit_range, nullcontext))
        clock.resume()
        if clock.checks[-1]["test_acc"] >= TARGET_ACCURACY:
            break
    return clock.summary()


def plain_step(net, optimizer, images: torch.Tensor, labels: torch.Tensor, autocast) -> None:
    """One training step of the plain loop on a preprocessed batch."""
    with autocast():
        loss = F.cross_entropy(net(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def plain_loop(settings, test: tuple, device: torch.device) -> dict:
    """The config's training written as a bare loop over in-memory tensors."""
    hparams, trainer, data = settings.model.hparams, settings.trainer, settings.datamodule
    data.prepare_data()
    data.setup("fit")
    train_images, train_labels = data.train_set.images.to(device), data.train_set.labels.to(device)
    clock = TrainingClock(device)
    net = CNN(channels=hparams.channels, hidden=hparams.hidden, dropout=hparams.dropout).to(device)
    memory_format = torch.channels_last if hparams.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(
        net.parameters(), lr=hparams.lr, fused=device.type in ("cpu", "cuda")
    )
    batch_size, count = data.hparams.batch_size, len(train_labels)
    steps = trainer.max_epochs * -(-count // batch_size)
    scheduler = one_cycle(optimizer, hparams.lr, steps) if hparams.schedule == "one_cycle" else None
    autocast = autocast_for(str(trainer.precision), device)

    def preprocess(images: torch.Tensor, training: bool = False) -> torch.Tensor:
        transform = data.augment if training and data.augments else None  # as fit does
        return normalize(images, transform).contiguous(memory_format=memory_format)

    for epoch in range(1, trainer.max_epochs + 1):
        order = torch.randperm(count, device=device)
        for start in range(0, count, batch_size):
            index = order[start : start + batch_size]
            images, labels = preprocess(train_images[index], training=True), train_labels[index]
            plain_step(net, optimizer, images, labels, autocast)
            if scheduler:
                scheduler.step()
            clock.step(len(labels))
        clock.pause()
        clock.check(epoch, test_accuracy(net, *test, preprocess, autocast))
        clock.resume()
    return clock.summary()


class FitProbe(L.Callback):
    """Times `fit`'s training steps and tests the model after every epoch, clock paused."""

    def __init__(self, test: tuple) -> None:
        self.test = test

    def on_train_start(self, trainer, pl_module) -> None:
        self.clock = TrainingClock(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.step(len(batch[1]))

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training:
            self.clock.pause()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.training:
            self.clock.resume()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.clock.pause()
        autocast = trainer.precision_plugin.forward_context
        self.clock.check(
            trainer.current_epoch + 1, test_accuracy(pl_module, *self.test, normalize, autocast)
        )
        self.clock.resume()


def machine(device: torch.device) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "lightning": L.__version__,
    }


def run(config: str, data_dir: str, article_epochs: int, fit_args: list[str]) -> dict:
    cli_args = ["--config", config, "--data.data_dir", data_dir, *fit_args]
    settings = make_cli(cli_args, run=False)  # the config parsed, nothing trained
    device = settings.trainer.strategy.root_device
    test_set = MNIST(data_dir, train=False)
    test = (test_set.data, test_set.targets)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(device),
        "config": config,
        "fit_args": fit_args,
    }
    contenders = {}
    with PeakMemory(device) as memory:
        contenders["article"] = article_loop(data_dir, test, device, article_epochs)
    contenders["article"]["peak_memory_mib"] = memory.mib
    L.seed_everything(settings.config.get("seed_everything"), verbose=False)
    with PeakMemory(device) as memory:
        contenders["plain"] = plain_loop(settings, test, device)
    contenders["plain"]["peak_memory_mib"] = memory.mib
    probe = FitProbe(test)
    with PeakMemory(device) as memory:
        fitted = make_cli(["fit", *cli_args, "--test_after_fit", "false"], callbacks=[probe])
    contenders["fit"] = {**probe.clock.summary(), "peak_memory_mib": memory.mib}
    contenders["fit"]["run_folder"] = fitted.trainer.log_dir
    results["contenders"] = contenders
    rate = {name: c["steady_images_per_second"] for name, c in contenders.items()}
    results["ratios"] = {
        "fit/plain": round(rate["fit"] / rate["plain"], 3),
        "fit/article": round(rate["fit"] / rate["article"], 3),
        "plain/article": round(rate["plain"] / rate["article"], 3),
    }
    model = fitted.model
    results["inference_images_per_second_batch_1024"] = {
        "fp32": inference_speed(model, test[0], nullcontext),
        "bf16": inference_speed(model, test[0], autocast_for("bf16-mixed", device)),
        # Inductor fuses the element-wise passes that eager mode runs over the activations
        "fp32_compiled": inference_speed(torch.compile(model), test[0], nullcontext),
    }
    return results


def report(results: dict) -> str:
    lines = [f"{results['machine']}", f"config {results['config']} {' '.join(results['fit_args'])}"]
    lines.append(
        f"{'':8} {'images/s':>9} {'train s':>8} {'s to 99%':>9} {'final acc':>9} {'peak MiB':>9}"
    )
    for name, c in results["contenders"].items():
        to_target = c["seconds_to_99"] if c["seconds_to_99"] is not None else "not reached"
        lines.append(
            f"{name:8} {c['steady_images_per_second']:>9} {c['train_seconds']:>8} "
            f"{to_target:>9} {c['final_test_acc']:>9} {c['peak_memory_mib']:>9}"
        )
    lines.append("ratios " + ", ".join(f"{k} {v}" for k, v in results["ratios"].items()))
    lines.append(
        f"inference at batch 1024, images/s: {results['inference_images_per_second_batch_1024']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/fast.yaml")
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--article_epochs", type=int, default=3, help="at most; stops at 99%%")
    parser.add_argument(
        "--out", default=None, help="JSON file (default: benchmarks/results/CONFIG.json)"
    )
    args, fit_args = parser.parse_known_args()
    results = run(args.config, args.data_dir, args.article_epochs, fit_args)
    out = Path(args.out or f"benchmarks/results/{Path(args.config).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()

"""What Lightning costs per training step, part by part, against a plain loop (one process):

    python benchmarks/lightning_overhead.py --config configs/fast.yaml --data_dir ../shared/data

Every contender trains the same network with the config's settings for WARMUP + STEPS steps and
is timed over the last STEPS (wall clock from the start of step WARMUP to the end of the last):

- `plain`: the bare loop over tensors in memory (as benchmarks/train_speed.py's plain loop);
- `barebones`: `Trainer(barebones=True)` on MNISTClassifier and MNISTDataModule: Lightning's
  irreducible loop, plus the module's own step (metric updates) and the DataLoader;
- `trainer`: a default Trainer with the logger, checkpointing, progress bar and summary off;
- `+ logger`, `+ checkpoint`, `+ progress bar`, `+ run callbacks`: each added to the row above
  (the project's logger; its best/last checkpoint; Lightning's progress bar as `fit` shows it;
  the callbacks every `mnist-lit` run gets);
- `fit`: `mnist-lit fit` built by its CLI, as a user runs it.

Validation is off (it is not a training step). The contenders run in turn, ROUNDS times, and each
one's median is reported with the spread, as ms per step and as images/s relative to `plain`.
Each round's contenders run back to back, so each contender's cost over `plain` is taken per
round (paired: the machine's slow and fast spells hit both) and given as a mean with its 95%
t-interval over the rounds. The images/s are also given as a share of what this machine's bf16
square matmuls would train (`share_of_bf16_matmul`). `--only plain,fit` times just those.
Writes benchmarks/results/lightning_overhead.json.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from train_speed import autocast_for, machine, plain_step

from mnist_lit.cli import make_cli
from mnist_lit.data import normalize
from mnist_lit.model import CNN
from mnist_lit.module import one_cycle
from mnist_lit.sweeps.significance import interval
from mnist_lit.tracking.runs import RunLogger
from mnist_lit.training.checkpointing import BestAndLastCheckpoint
from mnist_lit.training.trainer import trainer_defaults

WARMUP = 30
# The network's FLOPs per 28x28 image, forward (Lightning's model summary: 17.5 M, two per
# multiply-add); a training step costs about three forward passes (forward, two backward products).
TRAINING_FLOP_PER_IMAGE = 3 * 17.5e6


class StepTimer(L.Callback):
    """Wall clock from the start of step WARMUP to the end of the last step."""

    def __init__(self, last_step: int) -> None:
        self.last_step, self.seconds = last_step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == WARMUP:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.last_step:
            self.seconds = time.perf_counter() - self.started


def plain(settings, steps: int) -> float:
    hparams, data = settings.model.hparams, settings.datamodule
    data.prepare_data()
    data.setup("fit")
    images, labels = data.train_set.images, data.train_set.labels
    net = CNN(channels=hparams.channels, hidden=hparams.hidden, dropout=hparams.dropout)
    memory_format = torch.channels_last if hparams.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=hparams.lr, fused=True)
    scheduler = one_cycle(optimizer, hparams.lr, WARMUP + steps)
    autocast = autocast_for(str(settings.trainer.precision), torch.device("cpu"))
    batch_size = data.hparams.batch_size
    order = torch.randperm(len(labels))
    for step in range(WARMUP + steps):
        if step == WARMUP:
            started = time.perf_counter()
        index = order[step * batch_size : (step + 1) * batch_size]
        batch = normalize(images[index]).contiguous(memory_format=memory_format)
        plain_step(net, optimizer, batch, labels[index], autocast)
        scheduler.step()
    return time.perf_counter() - started


def lightning_run(settings, steps: int, parts: list[str], root: str) -> float:
    """A Trainer with the named parts switched on (everything else off)."""
    timer = StepTimer(WARMUP + steps)
    callbacks: list[L.Callback] = [timer]
    if "checkpoint" in parts:
        callbacks.append(BestAndLastCheckpoint())
    if "progress bar" in parts:
        callbacks.append(RichProgressBar())
    if "run callbacks" in parts:
        callbacks += trainer_defaults()["callbacks"]
    options = dict(
        max_steps=WARMUP + steps,
        precision=settings.trainer.precision,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=callbacks,
    )
    if "barebones" in parts:
        trainer = L.Trainer(barebones=True, **options)
    else:
        logger = RunLogger(root, default_hp_metric=False) if "logger" in parts else False
        trainer = L.Trainer(
            logger=logger,
            enable_checkpointing="checkpoint" in parts,
            enable_progress_bar="progress bar" in parts,
            **options,
        )
    trainer.fit(settings.model, datamodule=settings.datamodule)
    return timer.seconds


def cli_fit(cli_args: list[str], steps: int, root: str) -> float:
    timer = StepTimer(WARMUP + steps)
    flags = [f"--trainer.max_steps={WARMUP + steps}", "--trainer.limit_val_batches=0"]
    flags += [f"--trainer.default_root_dir={root}", "--test_after_fit=false"]
    make_cli(["fit", *cli_args, *flags], callbacks=[timer])
    return timer.seconds


CONTENDERS = {
    "plain": None,
    "barebones": ["barebones"],
    "trainer": [],
    "+ logger": ["logger"],
    "+ checkpoint": ["logger", "checkpoint"],
    "+ progress bar": ["logger", "checkpoint", "progress bar"],
    "+ run callbacks": ["logger", "checkpoint", "progress bar", "run callbacks"],
    "fit": None,
}


def matmul_flops(dtype: torch.dtype, size: int = 2048, seconds: float = 3.0) -> float:
    """What this machine's matrix units sustain: FLOP/s of square matmuls in `dtype`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        a @ b
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - started)


def run(
    config: str, data_dir: str, steps: int, rounds: int, only: list[str], flags: list[str]
) -> dict:
    cli_args = ["--config", config, "--data.data_dir", data_dir, *flags]
    contenders = {name: parts for name, parts in CONTENDERS.items() if name in only}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    batch_size = None
    for _ in range(rounds):
        for name, parts in contenders.items():
            settings = make_cli(cli_args, run=False)  # fresh weights for each contender
            batch_size = settings.datamodule.hparams.batch_size
            L.seed_everything(0, verbose=False)
            with tempfile.TemporaryDirectory() as root:
                if name == "plain":
                    seconds[name].append(plain(settings, steps))
                elif name == "fit":
                    seconds[name].append(cli_fit(cli_args, steps, root))
                else:
                    seconds[name].append(lightning_run(settings, steps, parts, root))
            print(f"{name:16} {1000 * seconds[name][-1] / steps:7.2f} ms/step", flush=True)
    ceiling = {
        name: round(matmul_flops(dtype) / TRAINING_FLOP_PER_IMAGE, 1)
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
    }
    plain_ms = [1000 * t / steps for t in seconds["plain"]]
    rows, previous = {}, None
    for name, times in seconds.items():
        ms = [1000 * t / steps for t in times]
        median = statistics.median(ms)
        over = [m - p for m, p in zip(ms, plain_ms)]  # per round: paired
        low_high = interval(over)
        rows[name] = {
            "ms_per_step_median": round(median, 2),
            "ms_per_step_all": [round(m, 2) for m in ms],
            "images_per_second": round(batch_size * 1000 / median, 1),
            "share_of_bf16_matmul": round(batch_size * 1000 / median / ceiling["bf16"], 3),
            "vs_plain": round(statistics.median(plain_ms) / median, 3),
            "ms_over_plain_mean": round(statistics.fmean(over), 2),
            "ms_over_plain_95": None if low_high is None else [round(v, 2) for v in low_high],
            "ms_over_row_above": None if previous is None else round(median - previous, 2),
        }
        previous = median
    return {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(torch.device("cpu")),
        # images/s if every training FLOP ran at square-matmul speed
        "ceiling_images_per_second": ceiling,
        "config": config,
        "batch_size": batch_size,
        "steps_timed": steps,
        "rounds": rounds,
        "contenders": rows,
    }


def report(results: dict) -> str:
    lines = [f"{results['machine']}", f"{results['config']}, batch {results['batch_size']}"]
    lines.append(f"ceiling images/s at matmul speed: {results['ceiling_images_per_second']}")
    lines.append(
        f"{'':16} {'ms/step':>8} {'range':>13} {'images/s':>9} {'bf16 share':>10} "
        f"{'vs plain':>9} {'ms over plain [95%]':>20} {'added':>6}"
    )
    for name, row in results["contenders"].items():
        low, high = min(row["ms_per_step_all"]), max(row["ms_per_step_all"])
        added, bounds = row["ms_over_row_above"], row["ms_over_plain_95"]
        over = f"{row['ms_over_plain_mean']}" + (f" [{bounds[0]}, {bounds[1]}]" if bounds else "")
        lines.append(
            f"{name:16} {row['ms_per_step_median']:>8} {f'{low}-{high}':>13} "
            f"{row['images_per_second']:>9} {row['share_of_bf16_matmul']:>10} "
            f"{row['vs_plain']:>9} {over:>20} {'' if added is None else added:>6}"
        )
    return "\n".join(lines)


def named(parser: argparse.ArgumentParser, only: str, names: list[str]) -> list[str]:
    """The contenders `--only` names (comma-separated), the first of `names`, the reference,
    always first; an unknown name is a usage error."""
    chosen = [names[0]] + [name for name in only.split(",") if name != names[0]]
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"--only: no contender {', '.join(sorted(unknown))}; from {names}")
    return chosen


def write(results: dict, out: str, text: str) -> None:
    """The results as JSON at `out`, and their table printed."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/fast.yaml")
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per contender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONTENDERS), help="contenders, by name")
    parser.add_argument("--out", default="benchmarks/results/lightning_overhead.json")
    args, flags = parser.parse_known_args()  # the rest: fit's flags, e.g. --data.batch_size 128
    only = named(parser, args.only, list(CONTENDERS))
    results = run(args.config, args.data_dir, args.steps, args.rounds, only, flags)
    write(results, args.out, report(results))


if __name__ == "__main__":
    main()

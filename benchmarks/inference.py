"""Inference of a trained checkpoint five ways, at batch 1, 64 and 1024, on the real MNIST test
images: eager fp32 as `test`/`predict` run it (MNISTClassifier, in chunks of 256 on a CPU), the
bare network on the whole batch, bf16 autocast, `torch.compile`, and onnxruntime on the file that
`mnist-lit export` writes. Images/s for each, and the parity of each one's outputs with eager fp32
over all 10,000 test images (largest logit difference, labels that differ).

    python benchmarks/inference.py --ckpt_path CKPT --data_dir ../shared/data
"""

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch
from torchvision.datasets import MNIST
from train_speed import machine

from mnist_lit.data import normalize
from mnist_lit.inference.export import export
from mnist_lit.training.checkpoint_io import load_classifier

BATCH_SIZES = (1, 64, 1024)
Runner = Callable[[torch.Tensor], torch.Tensor]


def images_per_second(run: Runner, images: torch.Tensor, batch_size: int, seconds: float) -> float:
    """Steady images/s of `run` on preprocessed batches, after one warm-up batch."""
    batches = list(images[:4096].split(batch_size))
    run(batches[0])
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        for batch in batches:
            run(batch)
            done += len(batch)
            if time.perf_counter() - started > seconds:
                break
    return round(done / (time.perf_counter() - started), 1)


def runners(ckpt_path: Path, onnx_file: Path) -> dict[str, Runner]:
    module = load_classifier(ckpt_path)  # eval mode
    network = module.model

    def autocast(run: Runner) -> Runner:
        def in_bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return run(x).float()

        return in_bf16

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return {
        "eager fp32 (test/predict: MNISTClassifier)": module,
        "eager fp32, whole batch (the bare CNN)": network,
        "bf16 autocast (MNISTClassifier)": autocast(module),
        "torch.compile fp32 (the bare CNN)": torch.compile(network, dynamic=True),
        "onnxruntime fp32 (export's model.onnx)": lambda x: torch.from_numpy(
            session.run(None, {"images": x.numpy()})[0]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--data_dir", default="../shared/data")
    parser.add_argument("--seconds", type=float, default=3.0, help="per speed measurement")
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    args = parser.parse_args()
    test = MNIST(args.data_dir, train=False)
    images = normalize(test.data)
    results = {"machine": machine(torch.device("cpu")), "checkpoint": str(args.ckpt_path)}
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        onnx_file = export(args.ckpt_path, "onnx", Path(folder) / "model.onnx")
        contenders = runners(args.ckpt_path, onnx_file)
        reference = torch.cat([contenders[next(iter(contenders))](b) for b in images.split(256)])
        for name, run in contenders.items():
            logits = torch.cat([run(batch) for batch in images.split(256)]).float()
            speeds = {b: images_per_second(run, images, b, args.seconds) for b in BATCH_SIZES}
            parity = {
                "max_abs_logit_difference": float((logits - reference).abs().max()),
                "labels_differing": int((logits.argmax(1) != reference.argmax(1)).sum()),
                "test_acc": float((logits.argmax(1) == test.targets).float().mean()),
            }
            results[name] = {"images_per_second": speeds, **parity}
            print(
                f"{name:45} "
                + "  ".join(f"b{b}: {s:>9,.0f}" for b, s in speeds.items())
                + f"  max |dlogit| {parity['max_abs_logit_difference']:.2e}"
                + f"  labels differing {parity['labels_differing']}"
                + f"  test acc {parity['test_acc']:.2%}",
                flush=True,
            )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

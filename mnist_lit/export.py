"""`mnist-lit export --ckpt_path CKPT --format onnx|torch --output FILE`: the trained network for
other programs, taking preprocessed (N, 1, 28, 28) float images with any batch size, plus a JSON
beside it with the preprocessing constants and the checkpoint's test accuracy."""

import argparse
import json
from pathlib import Path

import torch

from mnist_lit.checkpoints import CheckpointError, load_classifier
from mnist_lit.data import MNIST_MEAN, MNIST_STD
from mnist_lit.model import IMAGE_SIZE


def test_accuracy(ckpt_path: Path) -> float | None:
    """The test/acc that the checkpoint's own run measured for it, if that run recorded one."""
    summary = ckpt_path.resolve().parents[1] / "metrics.json"
    if not summary.is_file():
        return None
    metrics = json.loads(summary.read_text())
    tested = metrics.get("test_checkpoint")
    return metrics.get("test/acc") if tested and Path(tested) == ckpt_path.resolve() else None


def export(ckpt_path: Path, format: str, output: Path) -> Path:
    network = load_classifier(ckpt_path).model
    example = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=1 << 20)}}
    if format == "onnx":
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=dynamic,
            dynamo=True,
        )
        program.save(str(output))
    else:
        torch.export.save(torch.export.export(network, (example,), dynamic_shapes=dynamic), output)
    sidecar = {
        "format": format,
        "input": {
            "name": "images",
            "shape": ["batch", 1, IMAGE_SIZE, IMAGE_SIZE],
            "dtype": "float32",
        },
        "output": {"name": "logits", "shape": ["batch", 10], "classes": list(range(10))},
        "preprocessing": {
            "layout": "white digit on black, fitted to a 20x20 box, centre of mass at the centre "
            "of 28x28 (mnist_lit/images.py)",
            "pixels": "x = (uint8 / 255 - mean) / std",
            "mean": MNIST_MEAN,
            "std": MNIST_STD,
        },
        "checkpoint": str(ckpt_path.resolve()),
        "test_acc": test_accuracy(ckpt_path),
    }
    output.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return output


def main(args: list[str]) -> Path:
    parser = argparse.ArgumentParser(prog="mnist-lit export", description=__doc__)
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint of `fit`")
    parser.add_argument("--format", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--output", type=Path, help="default: model.onnx or model.pt2")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    options = parser.parse_args(args)
    output = options.output or Path("model.onnx" if options.format == "onnx" else "model.pt2")
    if output.exists() and not options.overwrite:
        parser.exit(1, f"error: {output} exists; pass --overwrite or another --output\n")
    try:
        export(options.ckpt_path, options.format, output)
    except CheckpointError as error:
        parser.exit(1, f"error: {error}\n")
    print(f"Wrote {output} and {output.with_suffix('.json')}")
    return output

"""`mnist-lit export --ckpt_path CKPT|RUN|best|last --format onnx|torch --output FILE`: the
trained network for other programs, taking preprocessed (N, 1, 28, 28) float images with any
batch size, plus a JSON beside it with the preprocessing constants and the checkpoint's test
accuracy."""

import json
from pathlib import Path

import torch
from jsonargparse import ArgumentParser, Namespace

from mnist_lit.errors import UserError
from mnist_lit.inference.reader import CHECKPOINT_HELP, checkpoint_file
from mnist_lit.mnist import IMAGE_SIDE, MEAN, NUM_CLASSES, STD
from mnist_lit.tracking.folders import check_writable
from mnist_lit.tracking.metrics_file import read_metrics
from mnist_lit.tracking.runs import RUNS, run_of
from mnist_lit.training.checkpoint_io import load_classifier

# What `predict` does to an image before the network sees it (mnist_lit/images.py), for programs
# that run the exported network without this package (the README has it in numpy)
LAYOUT_STEPS = [
    "grayscale in [0, 1], transparency composited on white",
    "if the median of the border pixels is above 0.5, invert (dark ink on light paper)",
    "a 28x28 image stops here: it is in MNIST's layout already",
    "subtract the border's median (the paper) and clip at 0; divide by the maximum",
    "crop to the pixels above 0.2",
    "resize with Lanczos so that the longer side is 20 pixels, keeping the aspect ratio",
    "paste into a black 28x28 field with the centre of mass at (14, 14), rounded, kept inside",
    "round to 8 bits: uint8 = round(value * 255)",
]


class ExportOutputError(UserError, FileExistsError):
    """The output file exists and --overwrite was not given."""


def test_accuracy(ckpt_path: Path) -> float | None:
    """The test/acc that the checkpoint's own run measured for it, if that run recorded one."""
    run = run_of(ckpt_path)
    metrics = read_metrics(run) if run else {}
    tested = metrics.get("test_checkpoint")
    return metrics.get("test/acc") if tested and Path(tested) == ckpt_path.resolve() else None


def export(ckpt_path: Path, format: str, output: Path) -> Path:
    network = load_classifier(ckpt_path).model
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=1 << 20)}}
    if format == "onnx":
        program = torch.onnx.export(
            network,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=dynamic,
            dynamo=True,
            verbose=False,  # its eight progress lines; errors still raise
        )
        program.save(str(output))
    else:
        torch.export.save(torch.export.export(network, (example,), dynamic_shapes=dynamic), output)
    sidecar = {
        "format": format,
        "input": {
            "name": "images",
            "shape": ["batch", 1, IMAGE_SIDE, IMAGE_SIDE],
            "dtype": "float32",
        },
        "output": {
            "name": "logits",
            "shape": ["batch", NUM_CLASSES],
            "classes": list(range(NUM_CLASSES)),
        },
        "preprocessing": {
            "layout": LAYOUT_STEPS,
            "pixels": "x = (uint8 / 255 - mean) / std",
            "mean": MEAN,
            "std": STD,
        },
        "checkpoint": str(ckpt_path.resolve()),
        "test_acc": test_accuracy(ckpt_path),
    }
    output.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return output


def parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mnist-lit export", description=__doc__)
    parser.add_argument(
        "--ckpt_path",
        type=str,
        required=True,
        help=CHECKPOINT_HELP,
    )
    parser.add_argument("--format", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--output", type=Path | None, help="default: model.onnx or model.pt2")
    # a value, as every flag of the CLI takes one (`predict --overwrite true`)
    parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing output")
    return parser


def run(options: Namespace) -> Path:
    output = options.output or Path("model.onnx" if options.format == "onnx" else "model.pt2")
    sidecar = output.with_suffix(".json")
    if sidecar == output:
        raise ExportOutputError(
            f"--output {output}: the preprocessing JSON goes beside the model under that very "
            "name; choose a name that does not end in .json"
        )
    for path in (output, sidecar):
        if path.exists() and not options.overwrite:
            raise ExportOutputError(f"{path} exists; pass --overwrite true or another --output")
    check_writable(output.parent, "--output")  # before the work, not after it
    output.parent.mkdir(parents=True, exist_ok=True)
    export(checkpoint_file(options.ckpt_path, Path(RUNS)), options.format, output)
    print(f"Wrote {output} and {output.with_suffix('.json')}")
    return output

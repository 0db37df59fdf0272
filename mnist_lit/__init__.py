"""The classic MNIST CNN, trained, tracked and used with PyTorch Lightning."""

import importlib
from types import ModuleType

# Modules whose classes config.yaml files of earlier versions name by their old place
# (`class_path: mnist_lit.runs.RunLogger`): jsonargparse finds them here, so old runs still resume
MOVED = {"runs": "mnist_lit.tracking.runs", "averaging": "mnist_lit.training.averaging"}


def __getattr__(name: str) -> ModuleType:
    if name in MOVED:
        return importlib.import_module(MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

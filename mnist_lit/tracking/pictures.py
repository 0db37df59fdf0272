"""Matplotlib pictures of digits and their predictions; no pyplot state, so safe in any process."""

import torch
from matplotlib.figure import Figure

from mnist_lit.mnist import MEAN, NUM_CLASSES, STD

RIGHT, WRONG = "#1a7f37", "#cf222e"


def digit_grid(
    images: torch.Tensor,
    preds: torch.Tensor,
    targets: torch.Tensor,
    title: str,
    columns: int = 8,
    confidences: torch.Tensor | None = None,
) -> Figure:
    """Normalised (N, 1, 28, 28) digits titled "pred (true)", green when right, red when wrong."""
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(columns * 1.1, rows * 1.3 + 0.4), layout="constrained")
    # large type: TensorBoard shows these as cards a third of their size
    figure.suptitle(title, fontsize=18)
    axes = figure.subplots(rows, columns, squeeze=False).flat
    pixels = (images[:, 0].float() * STD + MEAN).clamp(0, 1).cpu().numpy()
    for index, ax in enumerate(axes):
        ax.set_axis_off()
        if index >= len(images):
            continue
        pred, target = int(preds[index]), int(targets[index])
        ax.imshow(pixels[index], cmap="gray_r", vmin=0, vmax=1)
        label = f"{pred} ({target})"
        if confidences is not None:
            label += f" {confidences[index]:.0%}"
        ax.set_title(label, fontsize=13, color=RIGHT if pred == target else WRONG)
    return figure


def confusion_figure(counts: torch.Tensor, title: str) -> Figure:
    """Row-normalised confusion matrix: the diagonal is each digit's accuracy (recall)."""
    counts = counts.float().cpu()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, label="fraction of the true digit")
    for true, pred in torch.nonzero(counts).tolist():
        rate = rates[true, pred].item()
        text = f"{rate:.1%}" if true == pred else str(int(counts[true, pred]))
        color = "white" if rate > 0.5 else "black"
        ax.text(pred, true, text, ha="center", va="center", fontsize=8, color=color)
    ax.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES))
    ax.tick_params(labelsize=12)
    ax.set_xlabel("predicted", fontsize=13)
    ax.set_ylabel("true", fontsize=13)
    ax.set_title(title, fontsize=16)
    return figure

"""The article's three-block CNN for 28x28 MNIST digits: a plain nn.Module returning logits."""

import torch
from torch import nn

from mnist_lit.mnist import IMAGE_SIDE, NUM_CLASSES


def conv_block(
    in_channels: int,
    out_channels: int,
    dropout: float,
    pool_padding: int = 0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """3x3 same-size convolution -> 2x2 max-pool (halves the side) -> ReLU -> dropout; with
    `batch_norm`, the convolution (without its bias, which the norm's shift replaces) is
    followed by batch normalisation.

    The article applies ReLU before pooling. Both are monotone, so pooling first gives the same
    outputs and gradients while the ReLU touches a quarter of the values: about a third faster
    inference on CPU, where these element-wise passes over large activations cost as much as the
    convolutions.
    """
    convolution = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=not batch_norm)
    normalised = [convolution, nn.BatchNorm2d(out_channels)] if batch_norm else [convolution]
    return nn.Sequential(
        *normalised,
        nn.MaxPool2d(kernel_size=2, stride=2, padding=pool_padding),
        nn.ReLU(inplace=True),  # on the pooled copy, which nothing else reads
        nn.Dropout(dropout),
    )


class CNN(nn.Module):
    """Conv 32/64/128 -> FC 2048 -> 625 -> 10 in the article, whose values are MNISTClassifier's
    defaults (the one place they are declared).

    Args:
        channels: Output channels of the three convolution blocks.
        hidden: Width of the fully connected hidden layer (fc1).
        dropout: Dropout probability after every block and after fc1.
        batch_norm: Batch normalisation after each convolution (not in the article).
    """

    def __init__(
        self,
        *,
        channels: tuple[int, int, int],
        hidden: int,
        dropout: float,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.layer1 = conv_block(1, c1, dropout, batch_norm=batch_norm)
        self.layer2 = conv_block(c1, c2, dropout, batch_norm=batch_norm)
        # padding=1 keeps the odd 7x7 map's last row and column: 7x7 -> 4x4
        self.layer3 = conv_block(c2, c3, dropout, pool_padding=1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(self._flat_features(), hidden)
        # The article registers fc1 on its own and inside layer4; forward uses layer4.
        self.layer4 = nn.Sequential(self.fc1, nn.ReLU(), nn.Dropout(dropout))
        self.fc2 = nn.Linear(hidden, NUM_CLASSES)
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.xavier_uniform_(self.fc2.weight)

    @torch.no_grad()
    def _flat_features(self) -> int:
        """Size of the flattened conv output (128 * 4 * 4 = 2048 with the defaults)."""
        probe = torch.zeros(1, 1, IMAGE_SIDE, IMAGE_SIDE)
        features = self.layer3(self.layer2(self.layer1(probe))).numel()
        for module in self.modules():  # the probe is not a batch of data to remember
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.layer1(images)  # (B, 32, 14, 14)
        x = self.layer2(x)  # (B, 64, 7, 7)
        x = self.layer3(x)  # (B, 128, 4, 4)
        x = x.flatten(1)  # (B, 2048)
        x = self.layer4(x)  # (B, 625)
        return self.fc2(x)  # (B, 10) logits

"""Random shifts, rotations and scalings of whole batches, on the device that holds them."""

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor, max_shift: float, max_degrees: float, max_scale: float
) -> torch.Tensor:
    """Moves each image by its own uniformly drawn shift (pixels, per axis), rotation (degrees)
    and scaling (fraction), resampled bilinearly. Uncovered pixels become 0, so the images must
    still be in [0, 1] with a black background, not yet normalised.

    Args:
        images: (B, C, H, W) floats.
        max_shift: Largest shift along each axis, in pixels.
        max_degrees: Largest rotation either way, in degrees.
        max_scale: Largest enlargement or shrinkage, as a fraction of the size.
    """
    count, device = images.shape[0], images.device

    def uniform(bound: float, *shape: int) -> torch.Tensor:
        return (torch.rand(count, *shape, device=device) * 2 - 1) * bound

    angle = uniform(math.radians(max_degrees))
    zoom = 1 + uniform(max_scale)
    # affine_grid maps output to input coordinates in [-1, 1]: one pixel is 2 / side
    shift = uniform(1.0, 2) * max_shift * 2 / torch.tensor(images.shape[-1:-3:-1], device=device)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

"""Random shifts, rotations, scalings and elastic distortions of whole batches, on the device
that holds them: one sampling grid per batch, no loop over images."""

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    max_shift: float,
    max_degrees: float,
    max_scale: float,
    displacement: torch.Tensor | None = None,
) -> torch.Tensor:
    """Moves each image by its own uniformly drawn shift (pixels, per axis), rotation (degrees)
    and scaling (fraction), resampled bilinearly. Uncovered pixels become 0, so the images must
    still be in [0, 1] with a black background, not yet normalised.

    Args:
        images: (B, C, H, W) floats.
        max_shift: Largest shift along each axis, in pixels.
        max_degrees: Largest rotation either way, in degrees.
        max_scale: Largest enlargement or shrinkage, as a fraction of the size.
        displacement: (B, H, W, 2) offsets added to the sampling grid, in grid units (e.g. an
            elastic_field), so both distortions cost one resampling.
    """
    count, device = images.shape[0], images.device

    def uniform(bound: float, *shape: int) -> torch.Tensor:
        return (torch.rand(count, *shape, device=device) * 2 - 1) * bound

    angle = uniform(math.radians(max_degrees))
    zoom = 1 + uniform(max_scale)
    shift = uniform(1.0, 2) * max_shift * 2 / sides(images)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if displacement is not None:
        grid = grid + displacement
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sides(images: torch.Tensor) -> torch.Tensor:
    """(width, height): affine_grid maps the output to input coordinates in [-1, 1], so one
    pixel is 2 / side grid units along each axis."""
    return torch.tensor(images.shape[-1:-3:-1], device=images.device)


def elastic_field(images: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Simard, Steinkraus and Platt's (2003) elastic distortion as grid offsets: each pixel draws
    a displacement uniformly in [-1, 1] per axis, the field is smoothed by a Gaussian of `sigma`
    pixels and scaled by `alpha` pixels. A small sigma gives random jitter, a large one an almost
    uniform shift; the paper's values for MNIST are about alpha 34, sigma 4 (a displacement of
    one or two pixels that bends strokes).

    Returns:
        (B, H, W, 2) offsets in grid units, for random_affine's `displacement`.
    """
    count, _, height, width = images.shape
    noise = torch.rand(count, 2, height, width, device=images.device) * 2 - 1
    # the Gaussian convolution (zero padding) as two small matrix products: on a CPU about 20
    # times faster than conv2d's 25-tap kernels on 28x28 maps, and the same numbers
    smooth = gaussian_blur_matrix(height, sigma, noise) @ noise
    smooth = smooth @ gaussian_blur_matrix(width, sigma, noise).T
    return smooth.permute(0, 2, 3, 1) * alpha * 2 / sides(images)


def gaussian_blur_matrix(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(size, size): row i holds a normalised Gaussian kernel (radius 3 sigma) centred on i, cut
    at the edges as a zero-padded convolution would."""
    radius = max(1, math.ceil(3 * sigma))
    positions = torch.arange(size, device=like.device, dtype=like.dtype)
    offsets = positions[:, None] - positions[None, :]
    taps = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    total = torch.exp(-(taps**2) / (2 * sigma**2)).sum()
    weights = torch.exp(-(offsets**2) / (2 * sigma**2)) * (offsets.abs() <= radius)
    return weights / total


def shift_by_pixels(images: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """(B, C, H, W) images moved by whole pixels, the edge pixels repeated into the uncovered
    rows and columns (MNIST's background, already normalised or not)."""
    pad = max(abs(down), abs(right))
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    top, left = pad - down, pad - right
    return padded[..., top : top + height, left : left + width]

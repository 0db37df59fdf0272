import math
from types import SimpleNamespace

import pytest
import torch

from mnist_lit.augment import elastic_field, gaussian_blur_matrix, random_affine, shift_by_pixels
from mnist_lit.data import MNISTDataModule, normalize
from mnist_lit.errors import ConfigError


def square_digits(count: int) -> torch.Tensor:
    """(count, 1, 28, 28) black images with a white 8x8 square in the middle."""
    images = torch.zeros(count, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1.0
    return images


def test_zero_ranges_leave_images_unchanged():
    images = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(random_affine(images, 0.0, 0.0, 0.0), images)


def test_every_image_draws_its_own_transform():
    torch.manual_seed(0)
    moved = random_affine(square_digits(8), max_shift=3.0, max_degrees=15.0, max_scale=0.1)
    assert len({tuple(image.flatten().tolist()) for image in moved}) == 8


def test_shifts_stay_within_the_bound():
    torch.manual_seed(0)
    moved = random_affine(square_digits(64), max_shift=2.0, max_degrees=0.0, max_scale=0.0)
    rows = moved[:, 0].sum(dim=2)  # (64, 28): ink per row
    columns = moved[:, 0].sum(dim=1)
    for ink in (rows, columns):
        centre = (ink * torch.arange(28)).sum(dim=1) / ink.sum(dim=1)
        assert ((centre - 13.5).abs() <= 2.0 + 1e-4).all()  # square centre at 13.5 +- 2 px
        assert (centre - 13.5).abs().max() > 1.0  # and the shifts do move it
    # a shift moves the square without losing ink (it stays inside the frame)
    torch.testing.assert_close(moved.sum(dim=(1, 2, 3)), torch.full((64,), 64.0))


def test_rotation_keeps_the_centre_and_the_ink():
    torch.manual_seed(0)
    moved = random_affine(square_digits(16), max_shift=0.0, max_degrees=30.0, max_scale=0.0)
    torch.testing.assert_close(moved.sum(dim=(1, 2, 3)), torch.full((16,), 64.0), rtol=0.02, atol=0)
    assert not torch.equal(moved, square_digits(16))


def augmenting_data(training: bool) -> MNISTDataModule:
    data = MNISTDataModule(augment_shift=2.0, augment_degrees=10.0)
    data.trainer = SimpleNamespace(training=training)
    return data


def test_only_training_batches_are_augmented():
    images = (square_digits(4)[:, 0] * 255).to(torch.uint8)
    labels = torch.arange(4)
    torch.manual_seed(0)
    evaluated, same_labels = augmenting_data(False).on_after_batch_transfer((images, labels), 0)
    assert torch.equal(evaluated, normalize(images)) and torch.equal(same_labels, labels)
    trained, same_labels = augmenting_data(True).on_after_batch_transfer((images, labels), 0)
    assert not torch.equal(trained, normalize(images)) and torch.equal(same_labels, labels)
    # the background stays MNIST's black after normalisation
    assert torch.isclose(trained.min(), normalize(images).min())


def test_augmentation_is_off_by_default():
    assert not MNISTDataModule().augments


def test_elastic_fields_are_smooth_bounded_and_drawn_per_image():
    images = torch.zeros(16, 1, 28, 28)
    torch.manual_seed(0)
    field = elastic_field(images, alpha=34.0, sigma=4.0) * 28 / 2  # in pixels
    assert field.shape == (16, 28, 28, 2)
    # smoothed uniform noise in [-1, 1] times alpha stays within alpha pixels, and a Gaussian of
    # 4 pixels leaves displacements of about a pixel or two, as the paper's figure shows
    assert field.abs().max() <= 34.0
    assert 0.5 < field.abs().mean() < 3.0
    # neighbours move alike (the field bends strokes, it does not scatter pixels)
    step = (field[:, 1:] - field[:, :-1]).abs().mean()
    assert step < field.abs().mean() / 3
    assert len({tuple(f.flatten().tolist()) for f in field}) == 16


def test_elastic_field_scales_with_alpha_and_is_off_at_zero():
    images = torch.zeros(2, 1, 28, 28)
    torch.manual_seed(1)
    once = elastic_field(images, alpha=1.0, sigma=3.0)
    torch.manual_seed(1)
    torch.testing.assert_close(elastic_field(images, alpha=5.0, sigma=3.0), 5 * once)
    square = square_digits(2)
    no_bend = random_affine(square, 0.0, 0.0, 0.0, elastic_field(square, alpha=0.0, sigma=4.0))
    torch.testing.assert_close(no_bend, square)


def test_elastic_distortion_bends_the_digit_in_place():
    torch.manual_seed(0)
    square = square_digits(256)
    bent = random_affine(square, 0.0, 0.0, 0.0, elastic_field(square, alpha=34.0, sigma=4.0))
    assert not torch.equal(bent, square)
    # a field stretches some strokes and squeezes others: the ink balances over many images
    assert abs(bent.sum(dim=(1, 2, 3)).mean() - 64.0) < 64 * 0.05
    # and the digit stays where it was, give or take its few pixels of displacement
    rows = bent[:, 0].sum(dim=2)
    centre = (rows * torch.arange(28)).sum(dim=1) / rows.sum(dim=1)
    assert (centre - 13.5).abs().max() < 5.0


def test_elastic_distortion_alone_turns_augmentation_on():
    data = MNISTDataModule(augment_elastic_alpha=34.0)
    assert data.augments
    data.trainer = SimpleNamespace(training=True)
    images = (square_digits(4)[:, 0] * 255).to(torch.uint8)
    torch.manual_seed(0)
    bent, _ = data.on_after_batch_transfer((images, torch.arange(4)), 0)
    assert not torch.equal(bent, normalize(images))


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan")])
def test_an_elastic_field_without_width_is_refused(sigma):
    with pytest.raises(ConfigError, match="data.augment_elastic_sigma"):
        MNISTDataModule(augment_elastic_sigma=sigma)


def test_shifts_by_whole_pixels_repeat_the_edges():
    images = torch.arange(2 * 5 * 5, dtype=torch.float).reshape(2, 1, 5, 5)
    assert torch.equal(shift_by_pixels(images, 0, 0), images)
    down = shift_by_pixels(images, 1, 0)
    assert torch.equal(down[..., 1:, :], images[..., :-1, :])
    assert torch.equal(down[..., 0, :], images[..., 0, :])  # the top row repeated
    left = shift_by_pixels(images, 0, -2)
    assert torch.equal(left[..., :3], images[..., 2:])
    assert torch.equal(left[..., 3:], images[..., 4:].expand(-1, -1, -1, 2))


@pytest.mark.parametrize("sigma", [1.0, 4.0, 6.0])
def test_the_blur_matrix_is_a_zero_padded_gaussian_convolution(sigma):
    torch.manual_seed(0)
    noise = torch.rand(3, 2, 28, 28) * 2 - 1
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    flat = noise.reshape(-1, 1, 28, 28)
    rows = torch.nn.functional.conv2d(flat, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    both = torch.nn.functional.conv2d(rows, kernel.view(1, 1, 1, -1), padding=(0, radius))
    blur = gaussian_blur_matrix(28, sigma, noise)
    torch.testing.assert_close(blur @ noise @ blur.T, both.reshape(noise.shape))

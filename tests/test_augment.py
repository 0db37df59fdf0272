from types import SimpleNamespace

import torch

from mnist_lit.augment import random_affine
from mnist_lit.data import MNISTDataModule, normalize


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

"""MNIST files -> uint8 tensors in memory -> whole batches, scaled and normalised after transfer."""

import math
import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets import MNIST

from mnist_lit.augment import elastic_field, random_affine
from mnist_lit.errors import require
from mnist_lit.images import PredictInputs, find_images, read_digits
from mnist_lit.mnist import IMAGE_SIDE, MEAN, NUM_CLASSES, STD
from mnist_lit.mnist_files import (
    MNISTDataError,
    download,
    missing_files,
    raw_dir,
    verify_checksums,
)

# the training augmentations' magnitudes, each 0 when off (MNISTDataModule's arguments)
AUGMENTATIONS = ("augment_shift", "augment_degrees", "augment_scale", "augment_elastic_alpha")


class TensorImages(Dataset):
    """Images and labels held as whole tensors; the DataLoader fetches a batch in one indexing."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def global_seed() -> int | None:
    """The run's seed, as Lightning's seed_everything records it (None when unseeded)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else None


class EpochShuffle(Sampler[int]):
    """A fresh permutation per epoch drawn from (seed, epoch) alone, like DistributedSampler:
    a resumed run shuffles its next epoch exactly as an unbroken run would. Lightning calls
    `set_epoch` at the start of every epoch."""

    def __init__(self, size: int) -> None:
        self.size, self.seed, self.epoch = size, global_seed() or 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate function: `__getitems__` has already built the batch."""
    return batch


def normalize(
    images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28): scaled to [0, 1], transformed there if given
    (augmentation fills uncovered pixels with black, 0), then standardised."""
    images = images.unsqueeze(1).float() / 255
    if transform is not None:
        images = transform(images)
    return (images - MEAN) / STD


class MNISTDataModule(L.LightningDataModule):
    """MNIST's official splits: 60,000 training images split into train/val, 10,000 for test.

    Args:
        data_dir: Folder holding MNIST/raw/*-ubyte (torchvision's layout); only read unless
            files are missing and `download` is on. Commands on a run's checkpoint read the
            run's own data_dir, val_size and split_seed unless given.
        batch_size: Images per batch (per process under DDP).
        val_size: Training images held out for validation and model selection.
        num_workers: DataLoader worker processes; the data is in memory, so 0 is usually fastest.
        split_seed: Seed of the train/val split, kept apart from the training seed so that every
            run validates on the same images.
        download: Download MNIST into `data_dir` when files are missing.
        verify_checksums: Check the files against MNIST's published md5 sums; turn off only for
            your own data written in MNIST's file format.
        predict_path: Image files or folders (searched recursively) for `predict`; by default
            `predict` runs on the official test set.
        augment_shift: Training images are shifted by up to this many pixels along each axis
            (0: off). Every image draws its own shift, rotation and scaling, batch-wise on the
            device; validation and test images are left as they are.
        augment_degrees: ... rotated by up to this many degrees either way (0: off).
        augment_scale: ... enlarged or shrunk by up to this fraction (0: off).
        augment_elastic_alpha: ... and bent by an elastic distortion (Simard et al. 2003): a
            random displacement field smoothed over `augment_elastic_sigma` pixels, scaled by
            this many pixels (0: off; about 34 in the paper).
        augment_elastic_sigma: The elastic field's smoothness, in pixels (about 4 in the paper).
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 32,
        val_size: int = 5000,
        num_workers: int = 0,
        split_seed: int = 42,
        download: bool = True,
        verify_checksums: bool = True,
        predict_path: str | list[str] | None = None,
        augment_shift: float = 0.0,
        augment_degrees: float = 0.0,
        augment_scale: float = 0.0,
        augment_elastic_alpha: float = 0.0,
        augment_elastic_sigma: float = 4.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        require(batch_size >= 1, "data.batch_size", batch_size, "at least 1")
        require(val_size >= 1, "data.val_size", val_size, "at least 1")
        require(num_workers >= 0, "data.num_workers", num_workers, "0 or more")
        for name in AUGMENTATIONS:
            value = self.hparams[name]
            require(math.isfinite(value) and value >= 0, f"data.{name}", value, "0 (off) or more")
        sigma = augment_elastic_sigma
        require(math.isfinite(sigma) and sigma > 0, "data.augment_elastic_sigma", sigma, "> 0")

    def _predicting_images(self) -> bool:
        predicting = self.trainer is not None and self.trainer.state.fn == TrainerFn.PREDICTING
        return predicting and self.hparams.predict_path is not None

    def prepare_data(self) -> None:
        if self._predicting_images():
            self._predict_files()  # a wrong path fails here, before any work
            return
        data_dir = self.hparams.data_dir
        if Path(data_dir).exists() and not Path(data_dir).is_dir():
            raise MNISTDataError(
                f"data_dir '{data_dir}' is a file; pass a folder to --data.data_dir"
            )
        missing = missing_files(data_dir)
        if missing and not self.hparams.download:
            raise MNISTDataError(
                f"MNIST files {', '.join(missing)} are missing from {raw_dir(data_dir)}. Put the "
                "extracted files there, point --data.data_dir at a copy, or pass "
                "--data.download true."
            )
        if missing:
            download(data_dir)
        if self.hparams.verify_checksums:
            verify_checksums(data_dir)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate"):
            self.train_set, self.val_set = self._split(*self._read(train=True))
        if stage == "test" or (stage == "predict" and not self._predicting_images()):
            self.test_set = TensorImages(*self._read(train=False))
        if stage == "predict":
            self._setup_predict()

    def _predict_files(self) -> list[Path]:
        path = self.hparams.predict_path
        return find_images([path] if isinstance(path, str) else path)

    def _setup_predict(self) -> None:
        """`predict_inputs` names every input in order; `predict_set` holds the readable ones."""
        if self._predicting_images():
            self.predict_inputs = read_digits(self._predict_files())
            unknown = torch.full((len(self.predict_inputs.digits),), -1)  # users' digits
            self.predict_set = TensorImages(self.predict_inputs.digits, unknown)
            return
        count = len(self.test_set)
        names = [f"t10k-images-idx3-ubyte[{i}]" for i in range(count)]
        self.predict_inputs = PredictInputs(names, self.test_set.images, torch.arange(count), {})
        self.predict_set = self.test_set

    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        files = f"{raw_dir(self.hparams.data_dir)}/{'train' if train else 't10k'}-*-ubyte"
        try:
            mnist = MNIST(self.hparams.data_dir, train=train, download=False)
        except (RuntimeError, TypeError, ValueError, AssertionError) as error:
            # torchvision's own words here are shape and dtype complaints from deep in its parser
            raise MNISTDataError(
                f"{files} could not be read as MNIST's idx format: truncated or damaged "
                f"({type(error).__name__}: {error}). Replace them; with --data.verify_checksums "
                "true the md5 check names the damaged file."
            ) from None
        images, labels = mnist.data, mnist.targets
        if len(images) != len(labels):
            raise MNISTDataError(
                f"{files} hold {len(images)} images but {len(labels)} labels: "
                "the files do not belong together"
            )
        if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            size = "x".join(map(str, images.shape[1:]))
            raise MNISTDataError(f"{files} hold {size} images; MNIST's are 28x28")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < NUM_CLASSES:
            raise MNISTDataError(f"{files} hold labels outside 0-9")
        return images, labels

    def _split(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[TensorImages, TensorImages]:
        val_size = self.hparams.val_size
        if not 0 < val_size < len(labels):
            raise MNISTDataError(
                f"--data.val_size {val_size} must be between 1 and {len(labels) - 1} "
                f"(the training file holds {len(labels)} images)"
            )
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(len(labels), generator=generator)
        val, train = order[:val_size], order[val_size:]
        return TensorImages(images[train], labels[train]), TensorImages(images[val], labels[val])

    def _loader(self, dataset: TensorImages, shuffle: bool = False) -> DataLoader:
        distributed = self.trainer is not None and self.trainer.world_size > 1
        if shuffle:  # under DDP Lightning swaps in its DistributedSampler, also seeded by epoch
            sampler = None if distributed else EpochShuffle(len(dataset))
        else:
            sampler = self._evaluation_sampler(dataset) if distributed else None
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            collate_fn=keep_batch,
            persistent_workers=self.hparams.num_workers > 0,
            # Each iterator draws a worker seed from this generator: with the default (None) it
            # would come from the global one and shift the dropout of everything after it.
            generator=torch.Generator().manual_seed(global_seed() or 0),
        )

    def _evaluation_sampler(self, dataset: TensorImages) -> UnrepeatedDistributedSampler:
        """Under DDP, give each image to exactly one process. Lightning's default sampler pads
        every process to the same length with repeated images, which would count them twice."""
        return UnrepeatedDistributedSampler(
            dataset,
            num_replicas=self.trainer.world_size,
            rank=self.trainer.global_rank,
            shuffle=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Scaling after the transfer moves uint8 (4x fewer bytes) and runs on the accelerator.
        if isinstance(batch, torch.Tensor):  # the model's example input, already float
            return batch
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return normalize(images, self.augment if training and self.augments else None), labels

    @property
    def augments(self) -> bool:
        return any(self.hparams[name] > 0 for name in AUGMENTATIONS)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Random shift/rotation/scaling/elastic distortion of (B, 1, 28, 28) images in [0, 1]."""
        h = self.hparams
        field = None
        if h.augment_elastic_alpha > 0:
            field = elastic_field(images, h.augment_elastic_alpha, h.augment_elastic_sigma)
        return random_affine(images, h.augment_shift, h.augment_degrees, h.augment_scale, field)

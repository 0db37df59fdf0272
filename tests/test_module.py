import lightning as L
import torch

from mnist_lit.data import MNISTDataModule
from mnist_lit.module import CPU_EVAL_CHUNK, TTA_SHIFTS, MNISTClassifier, one_cycle


def quiet_trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_parameters_move_and_loss_falls(tiny_mnist, tmp_path):
    L.seed_everything(0)
    model = MNISTClassifier()
    dm = MNISTDataModule(str(tiny_mnist), val_size=64, verify_checksums=False, download=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    for name, parameter in model.named_parameters():
        assert not torch.equal(before[name], parameter), f"{name} did not move"
    # 3 epochs on the learnable fake digits: far below chance-level loss (ln 10 = 2.3)
    assert trainer.callback_metrics["train/loss_epoch"] < 1.0


def test_predict_step_returns_labels_and_probabilities():
    model = MNISTClassifier().eval()
    out = model.predict_step((torch.randn(6, 1, 28, 28), torch.zeros(6)), 0)
    assert out["preds"].shape == (6,) and out["probs"].shape == (6, 10)
    torch.testing.assert_close(out["probs"].sum(dim=1), torch.ones(6))
    assert torch.equal(out["preds"], out["probs"].argmax(dim=1))


def test_evaluation_in_chunks_gives_each_image_its_own_logits():
    model = MNISTClassifier().eval()
    images = torch.randn(2 * CPU_EVAL_CHUNK + 7, 1, 28, 28)  # two chunks and a part
    with torch.inference_mode():
        chunked = model(images)
        one_by_one = torch.cat([model(image[None]) for image in images[:: CPU_EVAL_CHUNK // 2]])
        whole = model.model(images.contiguous(memory_format=torch.channels_last))
    assert chunked.shape == (len(images), 10)
    torch.testing.assert_close(chunked[:: CPU_EVAL_CHUNK // 2], one_by_one, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5)


def test_checkpoint_alone_rebuilds_the_model(tmp_path):
    model = MNISTClassifier(channels=(8, 16, 32), hidden=64, dropout=0.1, lr=3e-4)
    trainer = quiet_trainer(tmp_path)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = MNISTClassifier.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert restored.hparams == model.hparams
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


def test_stages_have_their_own_metric_objects():
    model = MNISTClassifier()
    metrics = [model.train_acc, model.val_acc, model.test_acc]
    assert len({id(m) for m in metrics}) == 3


def test_accuracy_is_the_fraction_of_images_right():
    model = MNISTClassifier()
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 0]), 10).float()
    model.val_acc.update(logits, torch.tensor([0, 0, 0, 1]))
    # 3 of 4 right; a per-class mean (macro) would say 0.5
    assert model.val_acc.compute().item() == 0.75


def test_losses_are_means_over_images_not_over_batches():
    model = MNISTClassifier()
    images, labels = torch.randn(37, 1, 28, 28), torch.randint(0, 10, (37,))
    model.eval()
    with torch.no_grad():
        for start in (0, 32):  # batches of 32 and 5 images
            model.test_step((images[start : start + 32], labels[start : start + 32]), 0)
        expected = torch.nn.functional.cross_entropy(model(images), labels)
    torch.testing.assert_close(model.test_loss.compute(), expected)


def test_one_cycle_runs_for_any_number_of_steps():
    for total in range(1, 12):  # a quarter of 4 steps is one: torch divided by zero there
        weights = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([weights], lr=1e-3)
        scheduler = one_cycle(optimizer, peak_lr=1e-2, total_steps=total)
        rates = [optimizer.param_groups[0]["lr"]]
        for _ in range(total - 1):
            optimizer.step()
            scheduler.step()
            rates.append(optimizer.param_groups[0]["lr"])
        assert all(0 < rate <= 1e-2 + 1e-12 for rate in rates)


def test_test_time_augmentation_averages_the_shifted_images_probabilities():
    torch.manual_seed(0)
    model = MNISTClassifier().eval()
    images = torch.full((6, 1, 28, 28), -0.4)  # a constant background ...
    images[:, :, 8:20, 10:16] = torch.rand(6, 1, 12, 6) * 3  # ... and ink away from the edges
    labels = torch.arange(6)
    with torch.inference_mode():
        log_probs, loss = model._averaged_over_shifts((images, labels))
        # on a constant border, a shift by a pixel is a roll by a pixel
        rolled = [torch.roll(images, shifts=shift, dims=(2, 3)) for shift in TTA_SHIFTS]
        expected = torch.stack([model(r).softmax(dim=1) for r in rolled]).mean(dim=0)
    assert len(set(TTA_SHIFTS)) == 5 and (0, 0) in TTA_SHIFTS
    torch.testing.assert_close(log_probs.exp(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss, -expected[labels, labels].log().mean(), rtol=1e-4, atol=1e-6)
    assert not MNISTClassifier().test_time_augmentation  # fit's test and `test` leave it off

import pytest
import torch

from mnist_lit.model import CNN, conv_block
from mnist_lit.module import MNISTClassifier

ARTICLE = {"channels": (32, 64, 128), "hidden": 625, "dropout": 0.3}


def test_logits_shape_and_finite():
    logits = CNN(**ARTICLE)(torch.randn(5, 1, 28, 28))
    assert logits.shape == (5, 10)
    assert torch.isfinite(logits).all()


def test_parameter_count_matches_the_article():
    assert MNISTClassifier().hparams == {
        **ARTICLE,
        "lr": 1e-3,
        "schedule": "constant",
        "channels_last": True,
        "batch_norm": False,
    }
    # fc1 is shared by `fc1` and `layer4`, so it is counted once
    assert sum(p.numel() for p in CNN(**ARTICLE).parameters()) == 1_379_557


def test_printout_shows_the_articles_layers():
    printed = str(CNN(**ARTICLE))
    for name in ("(layer1)", "(layer2)", "(layer3)", "(fc1)", "(layer4)", "(fc2)"):
        assert name in printed
    assert "in_features=2048, out_features=625" in printed
    assert "MaxPool2d(kernel_size=2, stride=2, padding=1" in printed


def test_every_parameter_gets_a_gradient():
    model = CNN(**ARTICLE)
    model(torch.randn(4, 1, 28, 28)).logsumexp(dim=1).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_layer4_relu_and_dropout_are_applied():
    model = CNN(**ARTICLE).eval()
    images = torch.randn(8, 1, 28, 28)
    hidden = model.layer4(model.layer3(model.layer2(model.layer1(images))).flatten(1))
    assert (hidden >= 0).all()  # ReLU after fc1
    torch.testing.assert_close(model(images), model.fc2(hidden))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(images), model(images))  # dropout active in training


@pytest.mark.parametrize(("channels", "hidden"), [((8, 16, 32), 64), ((32, 64, 128), 625)])
def test_widths_are_arguments(channels, hidden):
    model = CNN(channels=channels, hidden=hidden, dropout=0.0)
    assert model.fc1.in_features == channels[2] * 4 * 4
    assert model.fc1.out_features == hidden
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_fc_weights_are_xavier_uniform():
    model = CNN(**ARTICLE)
    bound = (6 / (2048 + 625)) ** 0.5
    assert model.fc1.weight.abs().max() <= bound
    assert model.fc1.weight.abs().max() > 0.9 * bound  # default init would be far narrower


@pytest.mark.parametrize("pool_padding", [0, 1])
def test_pooling_before_relu_matches_the_articles_order(pool_padding):
    block = conv_block(3, 8, dropout=0.0, pool_padding=pool_padding)
    conv, pool = block[0], block[1]
    articles = torch.nn.Sequential(conv, torch.nn.ReLU(), pool)  # same convolution weights
    images = torch.randn(4, 3, 7, 7)
    ours = block(images)
    ours.square().sum().backward()
    ours_grad, conv.weight.grad = conv.weight.grad, None
    theirs = articles(images)
    theirs.square().sum().backward()
    assert torch.equal(ours, theirs)
    torch.testing.assert_close(ours_grad, conv.weight.grad)


def test_batch_norm_follows_each_convolution_in_place_of_its_bias():
    plain, normed = CNN(**ARTICLE), CNN(**ARTICLE, batch_norm=True)
    for layer in ("layer1", "layer2", "layer3"):
        block = getattr(normed, layer)
        assert isinstance(block[1], torch.nn.BatchNorm2d) and block[0].bias is None
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in getattr(plain, layer))
    # each norm's scale and shift replace a bias: 2 x (32 + 64 + 128) - (32 + 64 + 128) more
    count = sum(p.numel() for p in normed.parameters())
    assert count == 1_379_557 + 32 + 64 + 128
    # the article's network keeps its parameter names, so its checkpoints still load
    assert set(plain.state_dict()) == set(CNN(**ARTICLE).state_dict())


def test_batch_norm_normalises_training_batches():
    model = CNN(**ARTICLE, batch_norm=True).train()
    images = torch.randn(16, 1, 28, 28) * 5 + 3
    normalised = model.layer1[1](model.layer1[0](images))
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), torch.zeros(32), atol=1e-5, rtol=0)
    assert model(images).shape == (16, 10)
    assert model.layer1[1].num_batches_tracked == 2  # these two batches only, not the probe
